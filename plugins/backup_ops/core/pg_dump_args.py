"""pg_dump's command line as pg_dump reads it, and the options backup-ops keeps for itself.

The grammar is pg_dump 18's (``src/bin/pg_dump/pg_dump.c``): its getopt string
``abBcCd:e:E:f:F:h:j:n:N:Op:RsS:t:T:U:vwWxXZ:`` and its long options, read the way glibc's
``getopt_long`` reads them. Short options bundle (``-vFc`` is ``-v -F c``) and take their
argument attached (``-Z9``) or as the next word; long options take theirs after ``=`` or as the
next word, and may be abbreviated to any prefix (``--form=c`` is ``--format=c``; a prefix of
several options is ambiguous and pg_dump refuses it). Any other word is a positional argument,
which pg_dump takes as the name of the database to dump; so is everything after ``--``.

``parse_pg_dump_args`` turns ``extra_args`` into these readings, each option named by its long
name. ``extra_args_problem`` says why ``extra_args`` must not be passed to pg_dump: an option
backup-ops sets itself, in any spelling, or a positional argument. The config validation and
the dump adapter both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Long options that take an argument (pg_dump 18 has no optional-argument options).
_LONG_WITH_ARG = frozenset({
    "compress", "dbname", "encoding", "exclude-extension", "exclude-schema", "exclude-table",
    "exclude-table-and-children", "exclude-table-data", "exclude-table-data-and-children", "extension",
    "extra-float-digits", "file", "filter", "format", "host", "include-foreign-data", "jobs",
    "lock-wait-timeout", "port", "restrict-key", "role", "rows-per-insert", "schema", "section", "snapshot",
    "superuser", "sync-method", "table", "table-and-children", "username",
})
_LONG_WITHOUT_ARG = frozenset({
    "attribute-inserts", "binary-upgrade", "blobs", "clean", "column-inserts", "create", "data-only",
    "disable-dollar-quoting", "disable-triggers", "enable-row-security", "help", "if-exists", "inserts",
    "large-objects", "load-via-partition-root", "no-acl", "no-blobs", "no-comments", "no-data", "no-large-objects",
    "no-owner", "no-password", "no-policies", "no-privileges", "no-publications", "no-reconnect", "no-schema",
    "no-security-labels", "no-statistics", "no-subscriptions", "no-sync", "no-table-access-method",
    "no-tablespaces", "no-toast-compression", "no-unlogged-table-data", "on-conflict-do-nothing", "password",
    "quote-all-identifiers", "schema-only", "sequence-data", "serializable-deferrable", "statistics",
    "statistics-only", "strict-names", "use-set-session-authorization", "verbose", "version",
})
LONG_OPTIONS = _LONG_WITH_ARG | _LONG_WITHOUT_ARG
"""Every long option of pg_dump 18, without the leading ``--``."""

# The getopt string's letters, each with the long option it stands for ("X" has none).
_SHORT = {
    "a": "data-only", "b": "large-objects", "B": "no-large-objects", "c": "clean", "C": "create", "d": "dbname",
    "e": "extension", "E": "encoding", "f": "file", "F": "format", "h": "host", "j": "jobs", "n": "schema",
    "N": "exclude-schema", "O": "no-owner", "p": "port", "R": "no-reconnect", "s": "schema-only",
    "S": "superuser", "t": "table", "T": "exclude-table", "U": "username", "v": "verbose", "w": "no-password",
    "W": "password", "x": "no-privileges", "X": "-X", "Z": "compress",
}
_SHORT_WITH_ARG = frozenset("dEefFhjnNpStTUZ")

RESERVED_OPTIONS = {
    "file": "backup-ops writes pg_dump's output to the staged dump itself",
    "format": "backup-ops sets the output format from the format key",
    "compress": "backup-ops sets the compression from the compression key",
    "snapshot": "backup-ops dumps inside the snapshot it exported, so that its row counts match the dump",
    "dbname": "the Airflow connection says which database to dump",
    "host": "the Airflow connection says where the server is",
    "port": "the Airflow connection says where the server is",
    "username": "the Airflow connection says who logs in",
    "password": "backup-ops gives pg_dump the connection's password itself, and pg_dump would wait for a prompt",
    "jobs": "parallel dumps need the directory format, which backup-ops does not write",
    "table": "use the include_tables key (with pg_dump 16 or later it brings the tables' partitions too)",
    "exclude-table": "use the exclude_tables key (with pg_dump 16 or later it leaves out the tables' partitions too)",
    "inserts": "backup-ops counts every table's rows in the COPY data pg_dump writes, which INSERT statements "
               "replace (and COPY restores several times faster)",
    "column-inserts": "backup-ops counts every table's rows in the COPY data pg_dump writes, which INSERT "
                      "statements replace (and COPY restores several times faster)",
    "attribute-inserts": "backup-ops counts every table's rows in the COPY data pg_dump writes, which INSERT "
                         "statements replace (and COPY restores several times faster)",
    "rows-per-insert": "backup-ops counts every table's rows in the COPY data pg_dump writes, which INSERT "
                       "statements replace (and COPY restores several times faster)",
}
"""Long options backup-ops sets itself (or that would break the dump), with the reason."""


@dataclass(frozen=True)
class PgDumpArg:
    """One option or positional argument of a pg_dump command line, as pg_dump reads it."""

    written: str  # the word that starts it, e.g. "-vFc", "--form=c", "otherdb"
    option: str | None  # the long name without "--" ("format"); None for a positional argument
    value: str | None = None  # the option's argument; None when it takes none (or it is missing)
    candidates: tuple[str, ...] = ()  # long options a long-option word could mean (one when exact)

    @property
    def abbreviated(self) -> bool:
        """A long option written as a prefix of its name (``--form``): getopt_long accepts it, pg_dump may not."""
        return self.written.startswith("--") and self.option is not None and (
            self.written[2:].partition("=")[0] != self.option)


def parse_pg_dump_args(args: Sequence[str]) -> list[PgDumpArg]:
    """Read ``args`` as pg_dump's getopt_long would: options by long name, then positional arguments."""
    parsed: list[PgDumpArg] = []
    i = 0
    only_positional = False
    while i < len(args):
        word = args[i]
        i += 1
        if only_positional or word == "-" or not word.startswith("-"):
            parsed.append(PgDumpArg(word, None))
        elif word == "--":
            only_positional = True
        elif word.startswith("--"):
            name, has_value, value = word[2:].partition("=")
            candidates = long_option_candidates(name)
            option = candidates[0] if len(candidates) == 1 else None
            given: str | None = value if has_value else None
            if not has_value and option in _LONG_WITH_ARG:
                given = args[i] if i < len(args) else None
                i += 1
            parsed.append(PgDumpArg(word, option or name, given, candidates))
        else:
            for pos in range(1, len(word)):
                letter = word[pos]
                option = _SHORT.get(letter, "-" + letter)
                if letter in _SHORT_WITH_ARG:
                    attached: str | None = word[pos + 1:]
                    if not attached:
                        attached = args[i] if i < len(args) else None
                        i += 1
                    parsed.append(PgDumpArg(word, option, attached))
                    break
                parsed.append(PgDumpArg(word, option))
    return parsed


def long_option_candidates(name: str) -> tuple[str, ...]:
    """The long options ``--name`` can mean: itself when exact, else every option it is a prefix of."""
    if name in LONG_OPTIONS:
        return (name,)
    return tuple(sorted(o for o in LONG_OPTIONS if name and o.startswith(name)))


def extra_args_problem(args: Sequence[str]) -> str | None:
    """Why ``args`` must not be given to pg_dump, as the rest of a sentence ``… must not contain <this>.``, or None.

    Refused: every spelling of a ``RESERVED_OPTIONS`` option (short, bundled, attached, with
    ``=``, abbreviated or ambiguous prefix), an option missing its value, and positional arguments.
    """
    for arg in parse_pg_dump_args(args):
        if arg.option is None:
            return (f"{arg.written!r}, which pg_dump reads as the name of the database to dump instead of the "
                    "Airflow connection's; write each option and its value as one word (--option=value)")
        reserved = [c for c in (arg.candidates or (arg.option,)) if c in RESERVED_OPTIONS]
        if reserved:
            reading = ("could read as " + " or ".join("--" + c for c in arg.candidates) if len(arg.candidates) > 1
                       else f"reads as --{reserved[0]}")
            return f"{arg.written!r}, which pg_dump {reading}: {RESERVED_OPTIONS[reserved[0]]}"
        if arg.value is None and arg.option in _LONG_WITH_ARG:
            return f"{arg.written!r} without its value, which pg_dump refuses; write --{arg.option}=value"
    return None
