"""Whether a backup stream is whole, judged from the stream alone: tar archives from Python's
tarfile and from real GNU tar (every format it writes, sparse files included), cut anywhere; dumps
ending, or not, with their tools' closing comments."""

from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.completeness import (
    DUMP_TAIL_WINDOW,
    CompletenessCheck,
    DumpCheck,
    TarCheck,
    check_for,
)
from reconciler.models import SourceType

BLOCK = 512
FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}


def verdict(check: CompletenessCheck, stream: bytes, cuts: list[int] | None = None) -> str | None:
    """Feed `stream` split at `cuts` (sorted offsets), then ask."""
    start = 0
    for cut in [*(cuts or []), len(stream)]:
        check.feed(stream[start:cut])
        start = cut
    return check.problem()


def tar_problem(stream: bytes, cuts: list[int] | None = None) -> str | None:
    return verdict(TarCheck(), stream, cuts)


@st.composite
def archives(draw: st.DrawFn) -> tuple[bytes, int]:
    """A tar archive from tarfile, and the offset where its end-of-archive marker starts."""
    form = draw(st.sampled_from(sorted(FORMATS)))
    names = st.text(
        st.characters(codec="ascii" if form == "ustar" else "utf-8", exclude_characters="\x00/"),
        min_size=1,
        max_size=110 if form != "ustar" else 90,
    ).filter(lambda name: name not in (".", ".."))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=FORMATS[form]) as archive:
        for index in range(draw(st.integers(0, 4))):
            info = tarfile.TarInfo(f"{index}-{draw(names)}")
            kind = draw(st.sampled_from(["file", "zeros", "dir", "symlink"]))
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, draw(names)
                archive.addfile(info)
            else:
                size = draw(st.integers(0, 3 * BLOCK + 7))
                seed = draw(st.integers(0, 1 << 32))
                data = bytes(size) if kind == "zeros" else random.Random(seed).randbytes(size)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        end = archive.offset
    return buffer.getvalue(), end


@given(archives(), st.lists(st.integers(0, 1 << 16), max_size=6))
def test_a_whole_archive_is_complete_however_it_is_chunked(
    archive: tuple[bytes, int], cuts: list[int]
) -> None:
    stream, _ = archive
    assert tar_problem(stream, sorted(cut % (len(stream) + 1) for cut in cuts)) is None


@given(archives(), st.integers(1, 4 * BLOCK))
def test_skipping_what_the_check_leaves_unread_gives_the_same_verdict(
    archive: tuple[bytes, int], step: int
) -> None:
    """As the verifier does: splice away member data the check would not look at."""
    stream, _ = archive
    for whole in (stream, stream[: len(stream) // 2]):
        check, position = TarCheck(), 0
        while position < len(whole):
            if unread := min(check.unread(), len(whole) - position):
                check.skip(unread)
                position += unread
            else:
                check.feed(whole[position : position + step])
                position += step
        assert check.problem() == tar_problem(whole)


def test_a_dump_check_leaves_nothing_unread() -> None:
    check = DumpCheck()
    check.feed(b"-- dump\n" + DUMP_BODY)
    assert check.unread() == 0
    with pytest.raises(ValueError, match="cannot be skipped"):
        check.skip(1)


@given(archives(), st.data())
def test_an_archive_cut_before_its_end_marker_is_refused(
    archive: tuple[bytes, int], data: st.DataObject
) -> None:
    stream, end = archive
    cut = data.draw(st.integers(0, end + 2 * BLOCK - 1))
    assert tar_problem(stream[:cut]) is not None


@given(archives(), st.data())
def test_an_archive_cut_only_in_the_padding_after_its_end_marker_is_complete(
    archive: tuple[bytes, int], data: st.DataObject
) -> None:
    stream, end = archive
    cut = data.draw(st.integers(end + 2 * BLOCK, len(stream)))
    assert tar_problem(stream[:cut]) is None


def test_a_stream_cut_inside_a_file_of_zeros_is_refused_even_on_a_record_boundary() -> None:
    """Zeros in a member's data look like the end-of-archive marker; only a header position
    counts."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        info = tarfile.TarInfo("zeros")
        info.size = 20 * 10240
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    cut = buffer.getvalue()[: 10 * 10240]
    assert cut[-2 * BLOCK :] == bytes(2 * BLOCK)
    problem = tar_problem(cut)
    assert problem is not None
    assert "cut short" in problem


def test_an_empty_stream_is_refused() -> None:
    assert tar_problem(b"") == "the stream is empty: no tar archive was produced"


def test_a_shell_error_message_is_not_a_tar_archive() -> None:
    problem = tar_problem(b"fish: Unexpected end of string, quotes are not balanced\n" * 20)
    assert problem is not None
    assert "the stream is not a tar header" in problem


def whole_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("file")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    return buffer.getvalue()


def test_text_printed_before_the_archive_is_refused() -> None:
    problem = tar_problem(b"Welcome to the server\n" + whole_archive())
    assert problem is not None
    assert "not a tar header" in problem


def test_data_after_the_end_of_archive_is_refused() -> None:
    problem = tar_problem(whole_archive() + b"logout\n")
    assert problem is not None
    assert "after the archive's end-of-archive marker" in problem


def test_a_damaged_header_is_refused() -> None:
    stream = bytearray(whole_archive())
    stream[10] ^= 0x01  # inside the name: the checksum no longer matches
    problem = tar_problem(bytes(stream))
    assert problem is not None
    assert "checksum" in problem


def test_a_lone_zero_block_before_more_members_is_refused() -> None:
    """GNU tar stops reading at a lone zero block, so what follows would never be restored."""
    stream = whole_archive()
    first_member = stream[: 2 * BLOCK]
    assert tar_problem(first_member + bytes(BLOCK) + first_member + bytes(2 * BLOCK)) is not None


def gnu_tar(tree: Path, *options: str) -> bytes:
    return subprocess.run(
        ["tar", *options, "-C", str(tree.parent), "-cf", "-", "--", tree.name],
        capture_output=True,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long names, a hard link, a symlink, a FIFO, an empty file, and sparse files with many holes
    (GNU sparse headers need extension blocks past four holes)."""
    root = tmp_path_factory.mktemp("tree") / "tree"
    (root / ("long-" * 19)).mkdir(parents=True)  # ustar can split it into prefix and name
    (root / ("long-" * 19) / ("name-" * 18)).write_bytes(os.urandom(3000))
    (root / "empty").write_bytes(b"")
    os.link(root / "empty", root / "hard link")
    os.symlink("empty", root / "link")
    os.mkfifo(root / "fifo")
    with open(root / "sparse", "wb") as sparse:
        for hole in range(12):
            sparse.seek(hole * 1 << 20)
            sparse.write(os.urandom(700))
    (root / "zeros").write_bytes(bytes(100_000))
    return root


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("--format=gnu", "--sparse"),
        ("--format=posix",),
        ("--format=posix", "--sparse"),
        ("--format=posix", "--sparse", "--sparse-version=0.1"),
        ("--format=oldgnu", "--sparse"),
        ("--format=ustar",),
    ],
    ids=lambda options: " ".join(options) or "default",
)
def test_gnu_tar_archives_in_every_format_are_complete_and_refused_when_cut(
    tree: Path, options: tuple[str, ...]
) -> None:
    stream = gnu_tar(tree, *options)
    assert tar_problem(stream) is None
    with tarfile.open(fileobj=io.BytesIO(stream)) as archive:
        archive.getmembers()
        end = archive.offset
    for cut in (0, BLOCK, end // 3, end // 2, end - 1, end, end + BLOCK):
        assert tar_problem(stream[:cut]) is not None, cut


MYSQL_TAIL = (
    b"/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;\n"
    b"/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;\n\n"
    b"-- Dump completed on 2024-05-01  3:00:00\n"
)
POSTGRES_TAIL = b"--\n-- PostgreSQL database dump complete\n--\n\n"
POSTGRES_UNRESTRICT_TAIL = POSTGRES_TAIL + b"\\unrestrict Z2zZ0cKlYxVCeeXhNFmW4qiZSC\n\n"
DUMP_BODY = b"INSERT INTO t VALUES (1,'a');\n" * 500


@given(
    st.sampled_from([MYSQL_TAIL, POSTGRES_TAIL, POSTGRES_UNRESTRICT_TAIL]),
    st.binary(max_size=3 * DUMP_TAIL_WINDOW),
    st.lists(st.integers(0, 1 << 14), max_size=5),
)
def test_a_dump_ending_with_its_closing_comment_is_complete(
    tail: bytes, body: bytes, cuts: list[int]
) -> None:
    stream = b"-- dump\n" + body + b"\n" + tail
    positions = sorted(cut % (len(stream) + 1) for cut in cuts)
    assert verdict(DumpCheck(), stream, positions) is None


@settings(max_examples=200)
@given(st.sampled_from([MYSQL_TAIL, POSTGRES_TAIL, POSTGRES_UNRESTRICT_TAIL]), st.data())
def test_a_dump_cut_before_its_closing_comment_is_refused(tail: bytes, data: st.DataObject) -> None:
    stream = DUMP_BODY + tail
    trailer_end = stream.rindex(b"complete" if tail is not MYSQL_TAIL else b"Dump completed") + 8
    cut = data.draw(st.integers(0, trailer_end - 1))
    assert verdict(DumpCheck(), stream[:cut]) is not None


def test_a_closing_comment_inside_a_line_of_data_does_not_count() -> None:
    """Both tools escape newlines inside data, so a line of data never starts with `--`."""
    for line in (b"INSERT INTO t VALUES ('-- Dump completed');\n", b"x\t-- Dump completed\n"):
        assert verdict(DumpCheck(), DUMP_BODY + line) is not None


def test_an_empty_dump_is_refused() -> None:
    assert verdict(DumpCheck(), b"") == "the stream is empty: no dump was produced"


def test_each_source_type_gets_its_own_check() -> None:
    assert isinstance(check_for(SourceType.FILES), TarCheck)
    assert isinstance(check_for(SourceType.DATABASE), DumpCheck)
