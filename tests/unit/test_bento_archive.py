"""extract_bento on crafted archives: every unsafe entry is refused, nothing lands outside."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from services.builder.adapters.bento_archive import UnsafeArchive, extract_bento
from shared.errors import PermanentError, is_permanent

Entry = Callable[[tarfile.TarFile], None]


def file_entry(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))

    return add


def special_entry(name: str, kind: bytes, linkname: str = "") -> Entry:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            info.devmajor, info.devminor = 1, 3
        tar.addfile(info)

    return add


def dir_entry(name: str) -> Entry:
    return special_entry(name, tarfile.DIRTYPE)


def symlink(name: str, target: str) -> Entry:
    return special_entry(name, tarfile.SYMTYPE, target)


def hardlink(name: str, target: str) -> Entry:
    return special_entry(name, tarfile.LNKTYPE, target)


def archive(path: Path, *entries: Entry, compress: bool = False) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for add in entries:
            add(tar)
    data = gzip.compress(buffer.getvalue()) if compress else buffer.getvalue()
    path.write_bytes(data)
    return path


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    """A directory holding only the destination: anything else in it escaped."""
    path = tmp_path / "jail"
    path.mkdir()
    return path


def outside(tmp_path: Path) -> str:
    return str(tmp_path / "outside-absolute")


# case -> (the entries after a harmless first file, the name the refusal must quote)
UNSAFE: dict[str, tuple[Callable[[Path], list[Entry]], str]] = {
    "parent": (lambda _: [file_entry("../escaped")], "../escaped"),
    "nested-parent": (lambda _: [file_entry("src/../../escaped")], "src/../../escaped"),
    "inner-parent": (lambda _: [file_entry("src/../service.py")], "src/../service.py"),
    "absolute": (lambda t: [file_entry(outside(t))], "<outside>"),
    "char-device": (lambda _: [special_entry("dev-null", tarfile.CHRTYPE)], "dev-null"),
    "block-device": (lambda _: [special_entry("disk", tarfile.BLKTYPE)], "disk"),
    "fifo": (lambda _: [special_entry("pipe", tarfile.FIFOTYPE)], "pipe"),
    "symlink-absolute": (lambda _: [symlink("passwd", "/etc/passwd")], "passwd"),
    "symlink-outside": (lambda _: [symlink("src/up", "../../escaped")], "src/up"),
    "hardlink-absolute": (lambda _: [hardlink("shadow", "/etc/shadow")], "shadow"),
    "hardlink-outside": (
        lambda _: [file_entry("a"), hardlink("b", "../escaped")],
        "b",
    ),
    "hardlink-to-nothing": (lambda _: [hardlink("b", "missing")], "b"),
    "hardlink-to-symlink": (
        lambda _: [symlink("s", "a"), file_entry("a"), hardlink("b", "s")],
        "b",
    ),
    # Each link points inside when written; together `y` leaves through `x`.
    "symlink-chain": (lambda _: [symlink("x", "."), symlink("y", "x/..")], "y"),
    # Inside when written; a later entry makes it point outside.
    "symlink-retargeted": (lambda _: [symlink("a", "b/.."), symlink("b", ".")], "a"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
async def test_an_unsafe_entry_is_refused_by_name_and_nothing_lands_outside(
    case: str, tmp_path: Path, jail: Path
) -> None:
    entries, entry = UNSAFE[case]
    # A harmless file first: it is extracted, then removed again with the refusal.
    tar = archive(tmp_path / "bento.tar", file_entry("bento.yaml", b"name: x"), *entries(tmp_path))
    before = tree(tmp_path)
    dest = jail / "context"
    with pytest.raises(UnsafeArchive) as caught:
        await extract_bento(tar, dest)
    error = caught.value
    assert is_permanent(error)
    assert error.reason == "UnsafeArchive"
    quoted = repr(outside(tmp_path) if entry == "<outside>" else entry)
    assert quoted in error.message, error.message
    assert error.details["entry"] in (entry, outside(tmp_path))
    assert list(jail.iterdir()) == [dest]
    assert list(dest.iterdir()) == [], "the refused archive left files behind"
    assert tree(tmp_path) - before <= {"jail/context"}
    assert not Path(outside(tmp_path)).exists()


async def test_a_total_size_past_the_limit_is_refused(tmp_path: Path, jail: Path) -> None:
    tar = archive(tmp_path / "big.tar", file_entry("a", b"1" * 600), file_entry("b/c", b"2" * 600))
    with pytest.raises(UnsafeArchive, match=r"'b/c'.*limit of 1000 bytes"):
        await extract_bento(tar, jail / "context", max_bytes=1000)
    assert list((jail / "context").iterdir()) == []


async def test_too_many_entries_are_refused(tmp_path: Path, jail: Path) -> None:
    tar = archive(tmp_path / "many.tar", *(file_entry(f"f{i}") for i in range(11)))
    with pytest.raises(UnsafeArchive, match="more than 10 entries"):
        await extract_bento(tar, jail / "context", max_entries=10)


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
async def test_a_bento_with_links_inside_is_extracted_faithfully(
    compress: bool, tmp_path: Path, jail: Path
) -> None:
    tar = archive(
        tmp_path / "bento.tar",
        file_entry("./bento.yaml", b"service: service:Greeter\n"),
        dir_entry("env/docker"),
        file_entry("env/docker/Dockerfile", b"FROM python:3.11-slim\n"),
        file_entry("env/docker/entrypoint.sh", b"#!/bin/sh\n", mode=0o4755),
        file_entry("src/service.py", b"print('hi')\n"),
        symlink("src/link.py", "service.py"),
        symlink("src/env", "../env/docker"),
        hardlink("src/copy.py", "src/service.py"),
        compress=compress,
    )
    extracted = await extract_bento(tar, jail / "context")
    root = extracted.root
    assert extracted.has_dockerfile()
    assert extracted.dockerfile.read_text() == "FROM python:3.11-slim\n"
    assert (root / "src" / "link.py").read_text() == "print('hi')\n"
    assert (root / "src" / "env" / "Dockerfile").is_file()
    assert (root / "src" / "copy.py").stat().st_ino == (root / "src" / "service.py").stat().st_ino
    mode = (root / "env" / "docker" / "entrypoint.sh").stat().st_mode
    assert mode & 0o111, "the executable bit is kept"
    assert not mode & 0o4000, "set-uid is dropped"
    assert extracted.entries == 8
    assert list(jail.iterdir()) == [jail / "context"]


async def test_a_stream_is_extracted_in_one_pass(tmp_path: Path, jail: Path) -> None:
    tar = archive(tmp_path / "bento.tar", file_entry("bento.yaml"), file_entry("src/a.py"))

    class OneWay(io.RawIOBase):
        """A body that can only be read forward, like an HTTP response."""

        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            chunk = self._data.read(min(len(buffer), 1000))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    extracted = await extract_bento(io.BufferedReader(OneWay(tar.read_bytes())), jail / "context")
    assert tree(extracted.root) == {"bento.yaml", "src", "src/a.py"}


async def test_a_file_that_is_no_tar_is_a_permanent_error(tmp_path: Path, jail: Path) -> None:
    path = tmp_path / "junk.tar"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(PermanentError) as caught:
        await extract_bento(path, jail / "context")
    assert caught.value.reason == "InvalidArchive"


async def test_the_destination_must_be_empty(tmp_path: Path, jail: Path) -> None:
    dest = jail / "context"
    dest.mkdir()
    (dest / "old").write_text("x")
    tar = archive(tmp_path / "bento.tar", file_entry("bento.yaml"))
    with pytest.raises(ValueError, match="not empty"):
        await extract_bento(tar, dest)
