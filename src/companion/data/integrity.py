"""Checking a file against its manifest entry (size and every listed hash), shared by downloads
(:mod:`companion.data.download`) and local mirrors (:mod:`companion.data.mirror`)."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .manifests import RemoteFile


class DataAccessError(RuntimeError):
    """The dataset cannot be obtained automatically; the message says how to obtain it."""


class ChecksumError(RuntimeError):
    """A file's checksum or size differs from the manifest's; the file has been removed."""


def file_hashes(path: Path, algorithms: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Hex digests of `path` for each algorithm, reading the file once."""
    hs = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            for h in hs.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hs.items()}


def file_problem(path: Path, rf: RemoteFile) -> str | None:
    """What is wrong with `path` against the manifest's size and checksums, or None when it matches."""
    if rf.size_bytes is not None and path.stat().st_size != rf.size_bytes:
        return (f"{rf.name}: size {path.stat().st_size} bytes, manifest says {rf.size_bytes} (truncated or wrong "
                f"file). Run the fetch again, or download {rf.url} yourself and compare.")
    if rf.hashes:
        actual = file_hashes(path, [algo for algo, _ in rf.checks])
        wrong = [algo for algo, hexd in rf.checks if actual[algo] != hexd]
        if wrong:
            what = "; ".join(f"{a} checksum mismatch: expected {dict(rf.checks)[a]}, got {actual[a]}" for a in wrong)
            matched = [algo for algo, _ in rf.checks if algo not in wrong]
            if matched:  # the file agrees with one recorded value: the other value may be what is wrong
                return (f"{rf.name}: {what}, while the {'+'.join(matched)} matched. The recorded {'+'.join(wrong)} "
                        f"value may itself be wrong: compare it with its source named in the manifest's notes, and "
                        f"report it.")
            return (f"{rf.name}: {what}. Run the fetch again; if it persists, the host changed the file: check "
                    f"{rf.url} and the dataset's homepage, and report the new checksum.")
    return None


def install_verified(write, rf: RemoteFile, dest: Path, *, origin: str) -> Path:
    """Write a file through ``write(tmp_path)`` into a temporary file beside `dest`, check it against `rf`, and move
    it into place only when it matches; on any failure nothing is left (the temporary file is removed). `origin`
    names where the bytes came from in the error message."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        problem = file_problem(tmp, rf)
        if problem:
            raise ChecksumError(f"{problem} (bytes from {origin}). Nothing was kept.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def copy_into(src: Path):
    """A ``write`` for :func:`install_verified` that copies `src`."""
    def write(tmp: Path) -> None:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    return write
