"""Whether a backup stream is complete, judged from the stream itself. Pure: fed chunk by chunk.

An exit status is not proof: a login shell that cannot parse the command may exit 0 without ever
running tar, and a stream cut short by anything on the way can still end with status 0. So a run
succeeds only when the plaintext it stored is whole:

- a **tar archive** is walked header by header (each header's checksum checked, each member's
  data skipped by its size, pax `size` records and GNU sparse extension headers followed) and must
  reach its end-of-archive marker, two zero blocks at a header position, followed by nothing but
  the zero padding of the last record. Zeros inside a member's data never count as the end, so a
  stream cut inside a file of zeros is still refused.
- a **dump** must end with its tool's closing comment at the start of a line: mysqldump's
  `-- Dump completed` or pg_dump's `-- PostgreSQL database dump complete`, after which only blank
  lines, bare `--` comment lines and pg_dump's `\\unrestrict` line may follow.

Both keep a bounded amount of state (one header, a pax header of at most `MAX_PAX_HEADER` bytes,
the last `DUMP_TAIL_WINDOW` bytes), whatever the stream's size.
"""

from __future__ import annotations

from typing import Protocol

from reconciler.models import SourceType

BLOCK = 512
MAX_PAX_HEADER = 1 << 20
DUMP_TRAILERS = (b"-- Dump completed", b"-- PostgreSQL database dump complete")
DUMP_TAIL_WINDOW = 4096
# Types whose size field never announces data blocks (as Python's tarfile reads them): hard and
# symbolic links, character and block devices, directories, FIFOs.
_NO_DATA_TYPES = frozenset(b"123456")
_PAX_EXTENDED, _PAX_GLOBAL = ord("x"), ord("g")
_GNU_SPARSE = ord("S")
_CHECKSUM = slice(148, 156)
_SIZE = slice(124, 136)
_TYPEFLAG = 156
_SPARSE_IS_EXTENDED = 482
_SPARSE_EXTENSION_IS_EXTENDED = 504


class CompletenessCheck(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def unread(self) -> int:
        """How many of the next bytes the check passes without looking at them (member data):
        a caller may skip them with `skip` instead of feeding them."""

    def skip(self, size: int) -> None:
        """Account for `size` bytes (at most `unread()`) passed without being fed."""

    def problem(self) -> str | None:
        """At the end of the stream: None when it is complete, else why it is not."""


def check_for(source_type: SourceType) -> CompletenessCheck:
    """A fresh check for the plaintext of a backup of `source_type`."""
    return TarCheck() if source_type is SourceType.FILES else DumpCheck()


def _number(field: bytes) -> int | None:
    """A tar numeric field: octal digits (NUL or space terminated), or GNU base-256."""
    if field[:1] and field[0] & 0x80:
        if field[0] == 0xFF:  # negative: never a valid size
            return None
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    digits = field.replace(b"\0", b" ").strip()
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        return None


def _checksum_matches(header: bytes) -> bool:
    stored = _number(header[_CHECKSUM])
    if stored is None:
        return False
    rest = header[: _CHECKSUM.start] + b" " * 8 + header[_CHECKSUM.stop :]
    unsigned = sum(rest)
    signed = unsigned - 256 * sum(1 for byte in rest if byte & 0x80)  # old tars summed signed
    return stored in (unsigned, signed)


def _pax_size(records: bytes) -> int | None:
    """The `size` a pax extended header sets (None: it sets none); ValueError says why the header
    is malformed.

    Records are `<length> <key>=<value>\\n`, the length counting the whole record.
    """
    size: int | None = None
    position = 0
    while position < len(records):
        space = records.find(b" ", position)
        length = int(records[position:space]) if records[position:space].isdigit() else 0
        record = records[position : position + length]
        key, equals, value = record[space - position + 1 : -1].partition(b"=")
        if space < 0 or len(record) != length or not record.endswith(b"\n") or not equals:
            raise ValueError(f"a malformed pax header record at byte {position} of the header")
        if key == b"size":
            if not value.isdigit():
                raise ValueError(f"a pax size record that is not a number: {value[:40]!r}")
            size = int(value)
        position += length
    return size


def _round_up(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class TarCheck:
    """Walks a tar stream's headers as it passes and tells whether it reached its end."""

    def __init__(self) -> None:
        self._offset = 0  # stream bytes consumed so far
        self._header = bytearray()  # a header being assembled across chunks
        self._skip = 0  # member data and padding still to pass
        self._pax: bytearray | None = None  # a pax header's data being collected
        self._pax_length = 0
        self._next_size: int | None = None  # a pax `size` for the next member
        self._sparse_data: int | None = None  # a GNU sparse member waiting for its extensions
        self._zero_blocks = 0
        self._ended = False
        self._members = 0
        self._problem: str | None = None

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        position = 0
        while position < len(view) and self._problem is None:
            if self._ended:
                if view[position:].tobytes().strip(b"\0"):
                    self._problem = (
                        f"data after the archive's end-of-archive marker (byte {self._offset})"
                    )
                self._offset += len(view) - position
                return
            if self._skip:
                step = min(self._skip, len(view) - position)
                if self._pax is not None and len(self._pax) < self._pax_length:
                    self._pax += view[position : position + step]
                self._skip -= step
                self._offset += step
                position += step
                if not self._skip and self._pax is not None:
                    self._end_pax()
                continue
            step = min(BLOCK - len(self._header), len(view) - position)
            self._header += view[position : position + step]
            position += step
            if len(self._header) == BLOCK:
                header, self._header = bytes(self._header), bytearray()
                self._read_header(header)
                self._offset += BLOCK

    def unread(self) -> int:
        return 0 if self._pax is not None or self._problem is not None else self._skip

    def skip(self, size: int) -> None:
        if not 0 <= size <= self.unread():
            raise ValueError(f"cannot skip {size} bytes: only {self.unread()} are unread")
        self._skip -= size
        self._offset += size

    def _read_header(self, header: bytes) -> None:
        if self._sparse_data is not None:  # a GNU sparse extension block, not a member header
            if not header[_SPARSE_EXTENSION_IS_EXTENDED]:
                self._skip, self._sparse_data = _round_up(self._sparse_data), None
            return
        if not header.strip(b"\0"):
            self._zero_blocks += 1
            self._ended = self._zero_blocks == 2
            return
        if self._zero_blocks:  # GNU tar stops at a lone zero block: what follows is never read
            self._problem = f"a lone zero block before the header at byte {self._offset}"
            return
        if not _checksum_matches(header):
            what = "the stream" if self._offset == 0 else f"byte {self._offset}"
            self._problem = f"{what} is not a tar header (its checksum does not match)"
            return
        size = _number(header[_SIZE])
        if size is None:
            self._problem = f"the tar header at byte {self._offset} has an invalid size"
            return
        typeflag = header[_TYPEFLAG]
        self._members += 1
        if typeflag == _PAX_EXTENDED:
            if size > MAX_PAX_HEADER:
                self._problem = f"a pax header of {size} bytes at byte {self._offset}"
                return
            self._pax, self._pax_length = bytearray(), size
            self._skip = _round_up(size)
            if not self._skip:
                self._end_pax()
            return
        if typeflag == _PAX_GLOBAL:  # its records apply to the whole archive, not one size
            self._skip = _round_up(size)
            return
        if self._next_size is not None:
            size, self._next_size = self._next_size, None
        if typeflag in _NO_DATA_TYPES:
            return
        if typeflag == _GNU_SPARSE and header[_SPARSE_IS_EXTENDED]:
            self._sparse_data = size
            return
        self._skip = _round_up(size)

    def _end_pax(self) -> None:
        assert self._pax is not None
        records, self._pax = bytes(self._pax[: self._pax_length]), None
        try:
            self._next_size = _pax_size(records)
        except ValueError as exc:
            self._problem = str(exc)

    def problem(self) -> str | None:
        if self._problem is not None:
            return self._problem
        if self._ended:
            return None
        if self._offset == 0 and not self._header:
            return "the stream is empty: no tar archive was produced"
        return (
            f"the tar archive was cut short after {self._offset + len(self._header)} bytes "
            f"({self._members} headers read): it never reached its end-of-archive marker"
        )


class DumpCheck:
    """Keeps a dump's last bytes and tells whether they are its tool's closing comment."""

    def __init__(self) -> None:
        self._tail = b""
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        self._tail = (self._tail + chunk[-DUMP_TAIL_WINDOW:])[-DUMP_TAIL_WINDOW:]

    def unread(self) -> int:
        return 0  # every byte may be the last: the tail is kept

    def skip(self, size: int) -> None:
        if size:
            raise ValueError("a dump's bytes cannot be skipped")

    def problem(self) -> str | None:
        if self._size == 0:
            return "the stream is empty: no dump was produced"
        if dump_tail_complete(self._tail, whole=self._size <= DUMP_TAIL_WINDOW):
            return None
        return (
            f"the dump ({self._size} bytes) does not end with its tool's closing comment "
            "(mysqldump: '-- Dump completed', pg_dump: '-- PostgreSQL database dump complete'): "
            "it was cut short"
        )


def dump_tail_complete(tail: bytes, *, whole: bool) -> bool:
    """Whether the last bytes of a dump are its closing comment and what may follow it.

    `whole`: `tail` is the entire dump, so its first line starts a line; otherwise the first line
    of the window may be the end of a longer one and never counts.
    """
    lines = tail.split(b"\n")
    if not whole:
        lines = lines[1:]
    while lines and (lines[-1].strip() in (b"", b"--") or lines[-1].startswith(b"\\unrestrict ")):
        lines.pop()
    return bool(lines) and lines[-1].startswith(DUMP_TRAILERS)
