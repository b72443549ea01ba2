"""Safe extraction of an untrusted ``model.tar.gz`` into a fresh directory.

Python's ``tarfile`` ``filter="data"`` turns absolute names into relative ones and leaves the
members before a bad one on disk (field notes). Here every member is checked *before* anything
is written: a bad member fails the whole archive, and the directory is removed on any error.
The archive is read once, as a stream, and hashed on the way (the SHA-256 tags the model).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mlflow_sync.convert.errors import UnsafeArchive

log = logging.getLogger(__name__)

GB = 1024**3
DEFAULT_MAX_EXTRACTED_BYTES = 200 * GB
DEFAULT_MAX_MEMBERS = 10_000
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Extracted:
    directory: Path
    sha256: str
    compressed_bytes: int
    extracted_bytes: int
    files: int


class _HashingReader:
    """A read-only file wrapper that hashes every byte the tar reader pulls through it."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.digest = hashlib.sha256()
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.bytes_read += len(data)
        return data

    def drain(self) -> None:
        """Hash what the tar reader left unread (end-of-archive padding)."""
        while self.read(_CHUNK):
            pass


def _safe_relative_name(name: str, what: str = "member") -> str:
    """The member's path relative to the extraction root, or :class:`UnsafeArchive`."""
    if not name or "\x00" in name:
        raise UnsafeArchive(f"archive {what} has an empty or invalid name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"archive {what} {name!r} has an absolute path")
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"archive {what} {name!r} points outside the extraction directory ('..')")
    return "/".join(parts)


def _check_link(member: tarfile.TarInfo, relative: str) -> str:
    """The link target relative to the root; links that leave the directory are refused."""
    target = member.linkname
    if target.startswith(("/", "\\")):
        raise UnsafeArchive(f"archive link {member.name!r} -> {target!r} points to an absolute path")
    if member.issym():
        # A symlink's target is relative to the link's own directory.
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(relative), target))
    else:
        joined = posixpath.normpath(target)  # a hard link names another member
    if joined == ".." or joined.startswith("../") or joined.startswith("/"):
        raise UnsafeArchive(f"archive link {member.name!r} -> {target!r} escapes the extraction directory")
    return joined


def _inside(root: Path, path: Path) -> bool:
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root) + os.sep)


def extract_tarball(
    tarball: str | Path,
    *,
    parent: str | Path | None = None,
    max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> Extracted:
    """Extract into a new temporary directory under ``parent`` and return it with the archive's hash.

    Refused (:class:`UnsafeArchive`, directory removed): absolute names, ``..``, symbolic or hard
    links leaving the directory, devices/FIFOs, more than ``max_members`` members or more than
    ``max_extracted_bytes`` of content (decompression bombs). Files are written 0644, dirs 0755.
    """
    tarball = Path(tarball)
    root = Path(tempfile.mkdtemp(prefix="hf-checkpoint-", dir=parent)).resolve()
    try:
        with tarball.open("rb") as raw:
            reader = _HashingReader(raw)
            extracted, files = _extract_stream(reader, root, max_extracted_bytes, max_members, tarball)
            reader.drain()
    except UnsafeArchive:
        shutil.rmtree(root, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise UnsafeArchive(f"{tarball.name} is not a readable tar archive: {exc}") from exc
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return Extracted(root, reader.digest.hexdigest(), reader.bytes_read, extracted, files)


def _extract_stream(reader: _HashingReader, root: Path, max_bytes: int, max_members: int, tarball: Path):
    total = 0
    files = 0
    with tarfile.open(fileobj=reader, mode="r|*") as archive:
        for count, member in enumerate(archive, start=1):
            if count > max_members:
                raise UnsafeArchive(f"{tarball.name} has more than {max_members} members")
            relative = _safe_relative_name(member.name)
            if not relative:  # the archive's "." entry
                continue
            target = root / relative
            if member.isdir():
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                if not _inside(root, target):
                    raise UnsafeArchive(f"archive member {member.name!r} resolves outside the extraction directory")
                continue
            if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
                raise UnsafeArchive(f"archive member {member.name!r} is a device or FIFO, not a file")
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if not _inside(root, target.parent):
                raise UnsafeArchive(f"archive member {member.name!r} resolves outside the extraction directory")
            if target.is_symlink() or target.exists():
                raise UnsafeArchive(f"archive member {member.name!r} appears twice")
            if member.issym():
                link_target = _check_link(member, relative)
                os.symlink(posixpath.relpath(link_target, posixpath.dirname(relative) or "."), target)
                if not _inside(root, target):
                    raise UnsafeArchive(f"archive link {member.name!r} escapes the extraction directory")
                continue
            if member.islnk():
                source = root / _check_link(member, relative)
                if not _inside(root, source) or not source.is_file():
                    raise UnsafeArchive(f"archive hard link {member.name!r} does not name a file inside the archive")
                total += source.stat().st_size
                if total > max_bytes:
                    raise _too_large(tarball, max_bytes)
                shutil.copyfile(source, target)
                files += 1
                continue
            if not member.isfile():
                raise UnsafeArchive(f"archive member {member.name!r} has an unsupported type")
            total += member.size
            if total > max_bytes:
                raise _too_large(tarball, max_bytes)
            _write_member(archive, member, target)
            files += 1
    return total, files


def _write_member(archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = archive.extractfile(member)
    # O_EXCL | O_NOFOLLOW: never write through a link planted by an earlier member.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as sink:
        shutil.copyfileobj(source, sink, _CHUNK)


def _too_large(tarball: Path, max_bytes: int) -> UnsafeArchive:
    return UnsafeArchive(
        f"{tarball.name} expands to more than {max_bytes / GB:.3g} GB (size limit; raise --max-extracted-gb if "
        "the checkpoint really is that large)"
    )


