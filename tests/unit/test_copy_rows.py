"""Counting rows in pg_dump's plain output as it streams: exact whatever the chunking, strict about the format."""

from __future__ import annotations

import random

import pytest

from backup_ops.core.copy_rows import CopyBlock, CopyRowCounter, CopyStreamError

DUMP = (
    b"--\n-- PostgreSQL database dump\n--\n\nSET client_encoding = 'UTF8';\n"
    b"CREATE FUNCTION f() RETURNS void AS $$ BEGIN\n  PERFORM 1; -- COPY public.x FROM stdin; in a body\nEND $$;\n"
    b"COPY public.invoices (id, number, notes) FROM stdin;\n"
    b"1\tINV-1\t\\N\n"
    b"2\tINV-2\tline one\\nline two \\\\. not the end\n"  # an escaped newline and backslash stay one row
    b"3\tINV-3\t\\.x\n"
    b"\\.\n\n"
    b'COPY "Odd Schema"."Mixed ""Case" ("Made At", "a,b)") FROM stdin;\n'
    b"2026-01-01\tx\n"
    b"\\.\n\n"
    b"COPY public.empty (id) FROM stdin;\n\\.\n\n"
    b"COPY public.no_columns  FROM stdin;\n\n\n\\.\n\n"
    b"COPY audit.events (id) FROM stdin;\n7\n\\.\n"
    b"COPY audit.events (id) FROM stdin;\n8\n9\n\\.\n"
    b"--\n-- PostgreSQL database dump complete\n--\n"
)
EXPECTED = [
    CopyBlock("public", "invoices", ("id", "number", "notes"), 3),
    CopyBlock("Odd Schema", 'Mixed "Case', ("Made At", "a,b)"), 1),
    CopyBlock("public", "empty", ("id",), 0),
    CopyBlock("public", "no_columns", (), 2),
    CopyBlock("audit", "events", ("id",), 1),
    CopyBlock("audit", "events", ("id",), 2),
]


def count(chunks: list[bytes]) -> list[CopyBlock]:
    counter = CopyRowCounter()
    for chunk in chunks:
        counter.feed(chunk)
    return counter.finish()


def test_whole_stream() -> None:
    assert count([DUMP]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    assert count([DUMP[i:i + 1] for i in range(len(DUMP))]) == EXPECTED


@pytest.mark.parametrize("seed", range(40))
def test_split_anywhere(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(DUMP)), rng.randint(1, 25)))
    chunks = [DUMP[a:b] for a, b in zip([0, *cuts], [*cuts, len(DUMP)], strict=True)]
    assert count(chunks) == EXPECTED, cuts


def test_every_split_inside_the_end_marker_and_the_header() -> None:
    for where in (b"\n\\.\n", b"COPY public.empty"):
        start = DUMP.index(where)
        for cut in range(start, start + len(where) + 1):
            assert count([DUMP[:cut], DUMP[cut:]]) == EXPECTED, cut


def test_a_stream_that_stops_inside_a_block_is_refused() -> None:
    cut = DUMP.index(b"3\tINV-3")
    counter = CopyRowCounter()
    counter.feed(DUMP[:cut])
    with pytest.raises(CopyStreamError, match=r"ends inside the data of table public.invoices \(after 2 rows\)"):
        counter.finish()


def test_a_header_that_is_not_pg_dumps_is_refused() -> None:
    with pytest.raises(CopyStreamError, match="a COPY line that is not pg_dump's"):
        count([b"COPY public.t (a) FROM '/etc/passwd';\n"])


def test_many_rows_in_large_chunks() -> None:
    row = b"12345\tsome text\t2026-01-01 00:00:00+00\t\\N\n"
    body = b"COPY public.big (a, b, c, d) FROM stdin;\n" + row * 200_000 + b"\\.\n"
    chunks = [body[i:i + 65_536] for i in range(0, len(body), 65_536)]
    assert count(chunks) == [CopyBlock("public", "big", ("a", "b", "c", "d"), 200_000)]
