"""Safe extraction: real malicious tarballs, built here, must be refused with nothing left behind."""

from __future__ import annotations

import hashlib
import os
import tarfile

import pytest

from mlflow_sync.convert.errors import UnsafeArchive
from mlflow_sync.convert.extract import extract_tarball
from tests.convert.fixtures import device_member, file_member, link_member, tarball_with


@pytest.fixture
def parent(tmp_path):
    directory = tmp_path / "scratch"
    directory.mkdir()
    return directory


def _refused(tarball, parent, match, **limits):
    with pytest.raises(UnsafeArchive, match=match) as caught:
        extract_tarball(tarball, parent=parent, **limits)
    assert list(parent.iterdir()) == [], "the extraction directory must be removed on error"
    assert "\n" not in str(caught.value)
    return caught.value


def test_good_archive_extracts_with_its_hash(tmp_path, parent):
    tarball = tarball_with(tmp_path / "ok.tar.gz", [file_member("config.json", b"{}"),
                                                    file_member("./sub/tokenizer.json", b"tok"),
                                                    link_member("sub/alias.json", "tokenizer.json")])
    extracted = extract_tarball(tarball, parent=parent)
    assert (extracted.directory / "config.json").read_bytes() == b"{}"
    assert (extracted.directory / "sub" / "alias.json").read_bytes() == b"tok"  # an internal link is fine
    assert extracted.sha256 == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert extracted.compressed_bytes == tarball.stat().st_size
    assert extracted.files == 2 and extracted.extracted_bytes == 5
    assert oct(os.stat(extracted.directory / "config.json").st_mode & 0o7777) == "0o644"


def test_path_traversal_is_refused_and_earlier_members_removed(tmp_path, parent):
    tarball = tarball_with(tmp_path / "evil.tar.gz", [file_member("config.json", b"{}"),
                                                      file_member("../../escaped.txt", b"pwned")])
    _refused(tarball, parent, r"outside the extraction directory \('\.\.'\)")
    assert not (tmp_path / "escaped.txt").exists() and not (parent.parent / "escaped.txt").exists()


def test_absolute_path_is_refused_not_made_relative(tmp_path, parent):
    target = tmp_path / "absolute-target.txt"
    tarball = tarball_with(tmp_path / "evil.tar.gz", [file_member(str(target), b"pwned")])
    _refused(tarball, parent, "absolute path")
    assert not target.exists()


def test_symlink_escaping_the_directory_is_refused(tmp_path, parent):
    outside = tmp_path / "outside"
    outside.mkdir()
    tarball = tarball_with(tmp_path / "evil.tar.gz", [link_member("escape", "../../outside"),
                                                      file_member("escape/planted.txt", b"pwned")])
    _refused(tarball, parent, "escapes the extraction directory")
    assert list(outside.iterdir()) == []


def test_absolute_symlink_is_refused(tmp_path, parent):
    tarball = tarball_with(tmp_path / "evil.tar.gz", [link_member("passwd", "/etc/passwd")])
    _refused(tarball, parent, "absolute path")


def test_hardlink_escaping_the_directory_is_refused(tmp_path, parent):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    tarball = tarball_with(tmp_path / "evil.tar.gz", [link_member("leak.txt", "../../secret.txt", hard=True)])
    _refused(tarball, parent, "escapes the extraction directory")


def test_hardlink_to_an_absolute_path_is_refused(tmp_path, parent):
    tarball = tarball_with(tmp_path / "evil.tar.gz", [link_member("leak.txt", "/etc/passwd", hard=True)])
    _refused(tarball, parent, "absolute path")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_are_refused(tmp_path, parent, kind):
    tarball = tarball_with(tmp_path / "evil.tar.gz", [file_member("config.json", b"{}"), device_member("null", kind)])
    _refused(tarball, parent, "device or FIFO")


def test_decompression_bomb_is_refused_by_the_size_limit(tmp_path, parent):
    # 50 MB of zeros compress to ~50 KB: the ratio of a real bomb, at a size a test can afford.
    bomb = tarball_with(tmp_path / "bomb.tar.gz", [file_member("model.safetensors", bytes(50 * 1024 * 1024))])
    assert bomb.stat().st_size < 1024 * 1024
    error = _refused(bomb, parent, "expands to more than", max_extracted_bytes=10 * 1024 * 1024)
    assert "--max-extracted-gb" in str(error)


def test_too_many_members_is_refused(tmp_path, parent):
    tarball = tarball_with(tmp_path / "many.tar.gz", [file_member(f"f{i}") for i in range(20)])
    _refused(tarball, parent, "more than 10 members", max_members=10)


def test_duplicate_member_cannot_overwrite_through_a_link(tmp_path, parent):
    tarball = tarball_with(tmp_path / "evil.tar.gz", [link_member("config.json", "tokenizer.json"),
                                                      file_member("config.json", b"{}")])
    _refused(tarball, parent, "appears twice")


def test_not_a_tarball(tmp_path, parent):
    garbage = tmp_path / "model.tar.gz"
    garbage.write_bytes(b"\x1f\x8b\x08 this is not gzip at all" * 10)
    _refused(garbage, parent, "not a readable tar archive")


def test_truncated_tarball(tmp_path, parent):
    tarball = tarball_with(tmp_path / "ok.tar.gz", [file_member("model.safetensors", os.urandom(200_000))])
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(tarball.read_bytes()[:50_000])
    _refused(truncated, parent, "not a readable tar archive")
