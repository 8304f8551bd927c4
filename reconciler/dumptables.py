"""The tables a SQL dump creates and the rows it holds for each, read as the dump streams past.

Pure: bytes in, counts out; nothing is kept but the current line, so a dump of any size costs
the memory of its longest line. A restore drill with `verify: {load_into: ...}` compares these
counts with what the scratch database holds after the load.

- **mysqldump**: `CREATE TABLE `name` (` starts a table; each `INSERT INTO `name` VALUES
  (...),(...);` adds one row per top-level parenthesis. Strings are single-quoted with backslash
  escapes (mysqldump's own form; newlines inside values are written as `\\n`, so a string never
  spans lines), and a statement may span lines. Views' stand-ins (`/*!50001 CREATE ...`) are not
  tables.
- **pg_dump** (plain format): `CREATE TABLE schema.name (` starts a table; `COPY schema.name
  (...) FROM stdin;` is followed by one line per row up to `\\.`.

A table's name is kept exactly as the dump quotes it (`` `a``b` ``, `public."Odd"`): the grammar
of each engine's quoted identifier is matched in full, so the text can name the table in a query
on the scratch database and never be anything but that identifier.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from reconciler.models import DatabaseEngine

_MYSQL_NAME = rb"`(?:[^`\n]|``)+`"
_PG_PART = rb'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"\n]|"")+")'
_PG_NAME = _PG_PART + rb"(?:\." + _PG_PART + rb")?"

_MYSQL_CREATE = re.compile(rb"CREATE TABLE (" + _MYSQL_NAME + rb") \(")
_MYSQL_INSERT = re.compile(rb"INSERT INTO (" + _MYSQL_NAME + rb") (?:\([^)]*\) )?VALUES ?")
# In a VALUES list: a whole string (backslash escapes, or '' in NO_BACKSLASH_ESCAPES dumps), or
# one of the characters that matter outside strings.
_MYSQL_TOKEN = re.compile(rb"'(?:[^'\\]|\\.|'')*'|[();]", re.DOTALL)
_PG_CREATE = re.compile(rb"CREATE (?:UNLOGGED )?TABLE (" + _PG_NAME + rb") \(")
_PG_COPY = re.compile(rb"COPY (" + _PG_NAME + rb") (?:\(.*\) )?FROM stdin;$")
_PG_END_OF_COPY = b"\\."


_WHOLE_NAME = {
    DatabaseEngine.MYSQL: re.compile(_MYSQL_NAME.decode() + r"\Z"),
    DatabaseEngine.POSTGRESQL: re.compile(_PG_NAME.decode() + r"\Z"),
}


def is_quoted_table(engine: DatabaseEngine, name: str) -> bool:
    """Whether `name` is one whole table identifier of the engine, as a dump quotes it."""
    return _WHOLE_NAME[engine].match(name) is not None


class DumpFormatError(ValueError):
    """The dump does not read as the engine's dump: says where and why."""


@dataclass
class DumpTables:
    """Feed it a dump's bytes in any chunks, then `finish`; `rows` maps each table (as the dump
    quotes it) to its rows, in the order the dump creates them."""

    engine: DatabaseEngine
    rows: dict[str, int] = field(default_factory=dict)
    _pending: bytes = b""
    _line: int = 0
    _copying: str | None = None  # pg_dump: the table whose COPY rows are being read
    _inserting: str | None = None  # mysqldump: the table of the INSERT being read
    _depth: int = 0

    def feed(self, data: bytes) -> None:
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._line += 1
            self._read(line)

    def finish(self) -> dict[str, int]:
        """The counts, once the whole dump was fed; DumpFormatError if it stopped mid-table."""
        if self._pending:
            self._line += 1
            self._read(self._pending)
            self._pending = b""
        if self._copying is not None:
            raise DumpFormatError(f"the dump ends inside the rows of {self._copying}")
        if self._inserting is not None:
            raise DumpFormatError(f"the dump ends inside an INSERT into {self._inserting}")
        return dict(self.rows)

    def _read(self, line: bytes) -> None:
        if self.engine is DatabaseEngine.MYSQL:
            self._read_mysql(line)
        else:
            self._read_postgres(line)

    def _read_postgres(self, line: bytes) -> None:
        if self._copying is not None:
            if line == _PG_END_OF_COPY:
                self._copying = None
            else:
                self.rows[self._copying] += 1
            return
        if created := _PG_CREATE.match(line):
            self._table(created.group(1))
        elif copied := _PG_COPY.match(line):
            self._copying = self._known(copied.group(1))

    def _read_mysql(self, line: bytes) -> None:
        start = 0
        if self._inserting is None:
            if created := _MYSQL_CREATE.match(line):
                self._table(created.group(1))
                return
            inserted = _MYSQL_INSERT.match(line)
            if inserted is None:
                return
            self._inserting, self._depth = self._known(inserted.group(1)), 0
            start = inserted.end()
        self._values(line, start)

    def _values(self, line: bytes, start: int) -> None:
        """Count the rows of an INSERT's VALUES list from `start`, to its `;` or the line's end."""
        assert self._inserting is not None
        for token in _MYSQL_TOKEN.finditer(line, start):
            char = token.group()
            if char == b"(":
                if self._depth == 0:
                    self.rows[self._inserting] += 1
                self._depth += 1
            elif char == b")":
                self._depth -= 1
                if self._depth < 0:
                    raise DumpFormatError(f"line {self._line}: a ')' closes nothing")
            elif char == b";" and self._depth == 0:
                self._inserting = None
                return

    def _table(self, quoted: bytes) -> None:
        name = quoted.decode("utf-8", "surrogateescape")
        if name in self.rows:
            raise DumpFormatError(f"line {self._line}: table {name} is created twice")
        self.rows[name] = 0

    def _known(self, quoted: bytes) -> str:
        name = quoted.decode("utf-8", "surrogateescape")
        if name not in self.rows:
            raise DumpFormatError(
                f"line {self._line}: rows for {name}, which the dump never creates"
            )
        return name


def display_name(quoted: str) -> str:
    """A table as people write it: the dump's quoting taken off (`` `a``b` `` -> a`b)."""
    if quoted.startswith("`"):
        return quoted[1:-1].replace("``", "`")
    parts = re.findall(r'"(?:[^"]|"")+"|[^.]+', quoted)
    return ".".join(
        part[1:-1].replace('""', '"') if part.startswith('"') else part for part in parts
    )
