"""Which tables' rows pg_dump dumps, worked out from the options it is given, so those are the rows counted.

Table selection. ``include_tables`` / ``exclude_tables`` are passed to pg_dump as patterns, and
the same patterns select the tables that are counted. Supported pattern syntax is pg_dump's:
``*`` and ``?`` wildcards, an optional ``schema.`` qualifier (``db.schema.table`` ignores the
database part), double quotes to keep upper case or match ``*?."`` literally, unquoted letters
folded to lower case. An unqualified pattern matches the tables visible on the database's
search_path, as pg_dump does. Regular-expression characters outside quotes (``[](){}|+^\\``) are
refused: pg_dump would treat them as a regex and the counts could disagree with the dump. With
pg_dump 16 or later, the patterns also select the partitions and inheritance children of
matching tables (``--table-and-children``). Older pg_dump selects only the tables named. These
options in ``extra_args`` are honoured the same way: ``-n/--schema``, ``-N/--exclude-schema``,
``--exclude-table-data[-and-children]``, ``--table-and-children``,
``--exclude-table-and-children``, ``--no-unlogged-table-data``, and the no-data switches
``-s/--schema-only``, ``--no-data`` and ``--statistics-only``, in every spelling pg_dump reads
(bundled, attached, ``=`` or next word; the grammar is ``core.pg_dump_args``'s). ``--filter`` and
abbreviations of these options are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from backup_ops.adapters.postgres.snapshot import Table
from backup_ops.core.config import DatabaseSource
from backup_ops.core.errors import DumpError
from backup_ops.core.pg_dump_args import parse_pg_dump_args


@dataclass
class TableSelection:
    """Which tables pg_dump dumps data for, mirrored from the options it is given."""

    include: list[tuple[_NamePattern, bool]] = field(default_factory=list)  # (pattern, with children)
    exclude: list[tuple[_NamePattern, bool]] = field(default_factory=list)
    exclude_data: list[tuple[_NamePattern, bool]] = field(default_factory=list)
    schemas: list[_NamePattern] = field(default_factory=list)
    exclude_schemas: list[_NamePattern] = field(default_factory=list)
    no_data: bool = False
    no_unlogged_data: bool = False
    generated_args: list[str] = field(default_factory=list)

    @classmethod
    def from_source(cls, source: DatabaseSource, *, with_children: bool) -> TableSelection:
        """The selection for ``source``: include/exclude_tables (with children for pg_dump 16+) and extra_args."""
        selection = cls()
        include_flag = "--table-and-children" if with_children else "--table"
        exclude_flag = "--exclude-table-and-children" if with_children else "--exclude-table"
        for pattern in source.include_tables:
            selection.include.append((_NamePattern.parse(pattern), with_children))
            selection.generated_args.append(f"{include_flag}={pattern}")
        for pattern in source.exclude_tables:
            selection.exclude.append((_NamePattern.parse(pattern), with_children))
            selection.generated_args.append(f"{exclude_flag}={pattern}")
        for option, value in _selection_options(source.extra_args):
            selection._add_option(option, value)
        return selection

    def _add_option(self, option: str, value: str | None) -> None:
        if option in _NO_DATA_FLAGS:
            self.no_data = True
        elif option == "no-unlogged-table-data":
            self.no_unlogged_data = True
        elif value is not None:
            kind = _SELECTION_OPTIONS[option]
            children = kind.endswith("+")
            if kind.startswith("include"):
                self.include.append((_NamePattern.parse(value), children))
            elif kind.startswith("exclude"):
                self.exclude.append((_NamePattern.parse(value), children))
            elif kind.startswith("nodata"):
                self.exclude_data.append((_NamePattern.parse(value), children))
            elif kind == "schema":
                self.schemas.append(_NamePattern.parse(value, schema_pattern=True))
            else:
                self.exclude_schemas.append(_NamePattern.parse(value, schema_pattern=True))

    def pg_dump_args(self) -> list[str]:
        """Options for include_tables / exclude_tables (extra_args are passed through separately)."""
        return list(self.generated_args)

    def dumps_data(self, table: Table) -> bool:
        """Whether pg_dump, given these options, dumps rows of ``table``."""
        if table.kind != "r" or self.no_data or (self.no_unlogged_data and table.unlogged):
            return False
        if self.include:
            # pg_dump ignores -n/-N when -t is given: tables named by -t are dumped regardless.
            selected = _any_match(self.include, table)
        else:
            selected = (not self.schemas or any(p.matches_schema(table.schema) for p in self.schemas)) and not any(
                p.matches_schema(table.schema) for p in self.exclude_schemas)
        return selected and not _any_match(self.exclude, table) and not _any_match(self.exclude_data, table)


def _any_match(patterns: Iterable[tuple[_NamePattern, bool]], table: Table) -> bool:
    for pattern, children in patterns:
        candidates = (table, *table.ancestors) if children else (table,)
        if any(pattern.matches_table(t) for t in candidates):
            return True
    return False


@dataclass(frozen=True)
class _NamePattern:
    """A pg_dump/psql name pattern, compiled to anchored regular expressions."""

    text: str
    schema: re.Pattern[str] | None  # None: unqualified, matches tables visible on the search_path
    name: re.Pattern[str]

    @classmethod
    def parse(cls, text: str, *, schema_pattern: bool = False) -> _NamePattern:
        """Parse ``text``; ``schema_pattern`` for -n/-N, where the last part names a schema."""
        parts: list[list[str]] = [[]]
        in_quotes = False
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == '"':
                if in_quotes and text[i + 1:i + 2] == '"':
                    parts[-1].append('"')
                    i += 1
                else:
                    in_quotes = not in_quotes
            elif in_quotes:
                parts[-1].append(re.escape(ch))
            elif ch == ".":
                parts.append([])
            elif ch == "*":
                parts[-1].append(".*")
            elif ch == "?":
                parts[-1].append(".")
            elif ch in "[](){}|+^\\":
                raise DumpError(
                    f"Table pattern {text!r} uses the regular-expression character {ch!r}, which backup-ops does "
                    "not support (row counts must match what pg_dump selects); use * and ? wildcards, or "
                    "double-quote the name to match it literally.", retryable=False,
                )
            else:
                parts[-1].append(re.escape(ch.lower() if "A" <= ch <= "Z" else ch))
            i += 1
        max_parts = 2 if schema_pattern else 3
        if len(parts) > max_parts:
            raise DumpError(f"Pattern {text!r} has too many dotted parts; write [schema.]table for tables "
                            "or a schema name for schemas.", retryable=False)
        regexes = [re.compile("(?s:" + ("".join(p) or ".*") + ")") for p in parts]
        if schema_pattern:
            return cls(text, None, regexes[-1])
        if len(parts) == 1 or not parts[-2]:
            return cls(text, None, regexes[-1])  # empty schema part: pg_dump applies the visibility rule
        return cls(text, regexes[-2], regexes[-1])

    def matches_table(self, table: Table) -> bool:
        if self.schema is None:
            return table.visible and self.name.fullmatch(table.name) is not None
        return self.schema.fullmatch(table.schema) is not None and self.name.fullmatch(table.name) is not None

    def matches_schema(self, schema: str) -> bool:
        return self.name.fullmatch(schema) is not None


# pg_dump options that change which tables' data is dumped (long names, as parse_pg_dump_args gives
# every spelling), by kind; they take a pattern argument.
_SELECTION_OPTIONS = {
    "table": "include", "table-and-children": "include+",
    "exclude-table": "exclude", "exclude-table-and-children": "exclude+",
    "exclude-table-data": "nodata", "exclude-table-data-and-children": "nodata+",
    "schema": "schema", "exclude-schema": "noschema",
}
_NO_DATA_FLAGS = frozenset({"schema-only", "no-data", "statistics-only"})
_MIRRORED = frozenset({*_SELECTION_OPTIONS, *_NO_DATA_FLAGS, "no-unlogged-table-data", "filter"})


def _selection_options(args: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """Yield (long option name, value) for the extra_args that affect which table data pg_dump dumps."""
    for arg in parse_pg_dump_args(args):
        if arg.option == "filter":
            raise DumpError("extra_args --filter is not supported: backup-ops could not match its row counts to "
                            "the tables pg_dump selects; use include_tables / exclude_tables instead.",
                            retryable=False)
        # getopt_long accepts abbreviations; mirroring them would depend on pg_dump's exact option list.
        if (arg.abbreviated or len(arg.candidates) > 1) and _MIRRORED.intersection(arg.candidates):
            raise DumpError(f"extra_args option {arg.written.partition('=')[0]} is an abbreviation; spell out the "
                            "full pg_dump option name so backup-ops can tell which tables are dumped.",
                            retryable=False)
        if arg.option in _MIRRORED:
            yield arg.option, arg.value
