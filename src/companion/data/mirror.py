"""Local mirrors: folders that already hold a dataset's files, used by ``companion data fetch`` before the network.

A mirror is a folder with one sub-folder per dataset, named by the manifest's ``mirror_id`` (default: its id), e.g.
``../shared/data/topcow-roi/``. Mirrors come from ``--mirror DIR`` (CLI) or ``mirror=`` (Python), then from
``$COMPANION_MIRROR`` (folders separated by ``os.pathsep``). A manifest file is found in ``DIR/<mirror id>/`` by its
name (which may hold sub-folders, e.g. ``test/case/x.nii.gz``), or else by its sha256 anywhere in that folder (only
files of the recorded size are hashed). A copy is checked exactly as a download is (size and every listed hash)
before it is moved into place; a copy that does not match is refused with the mirror path named, and nothing of it
is kept. Mirror files are never modified.
"""
from __future__ import annotations

import os
from pathlib import Path

from .integrity import ChecksumError, copy_into, file_hashes, install_verified
from .manifests import Manifest, RemoteFile

ENV = "COMPANION_MIRROR"
PREFIX = "mirror:"  # how the completion marker records a file that came from a mirror


def mirror_roots(mirror: str | Path | list[str | Path] | tuple[str | Path, ...] | None = None) -> list[Path]:
    """The mirror folders to search, in order: `mirror` (one folder or a list), then ``$COMPANION_MIRROR``."""
    given = [] if mirror is None else [mirror] if isinstance(mirror, (str, Path)) else list(mirror)
    env = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    return [Path(p).expanduser() for p in [*given, *env]]


def dataset_folders(m: Manifest, roots: list[Path]) -> list[Path]:
    """``<root>/<mirror id>/`` for each mirror root that has it."""
    return [r / m.mirror_name for r in roots if (r / m.mirror_name).is_dir()]


def find(rf: RemoteFile, folders: list[Path]) -> Path | None:
    """The mirror copy of `rf`: by its name, else by its sha256 among files of its size; None if absent."""
    for folder in folders:
        candidate = folder / rf.name
        if candidate.is_file():
            return candidate
    sha = dict(rf.checks).get("sha256")
    if not sha:
        return None
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and (rf.size_bytes is None or p.stat().st_size == rf.size_bytes) \
                    and file_hashes(p, ["sha256"])["sha256"] == sha:
                return p
    return None


def copy_verified(src: Path, rf: RemoteFile, dest: Path) -> Path:
    """Copy a mirror file to `dest`, verified like a download; a mismatch raises :class:`ChecksumError` naming the
    mirror path, and nothing is left at `dest`."""
    try:
        return install_verified(copy_into(src), rf, dest, origin=f"the mirror copy {src}")
    except ChecksumError as exc:
        raise ChecksumError(f"{exc} The mirror copy does not match the manifest: replace it, or fetch without "
                            f"this mirror (drop --mirror / {ENV}) to download {rf.url}.") from None


def place(rf: RemoteFile, folders: list[Path], dest: Path) -> str | None:
    """Put the mirror copy of `rf` at `dest` (verified); returns the marker's record of its source
    (``mirror:<path>``), or None when no mirror holds it."""
    src = find(rf, folders)
    if src is None:
        return None
    copy_verified(src, rf, dest)
    return PREFIX + str(src.resolve())


def place_members(archive: RemoteFile, folders: list[Path], root: Path) -> dict[str, str] | None:
    """Archive members found in a mirror (e.g. a file of a PyPI sdist kept unpacked): each is copied, verified, to
    ``root/<member name>``. Returns {name: source} when the mirror holds every member, else None (nothing copied)."""
    found = {mem.name: find(mem, folders) for mem in archive.members}
    if not found or any(src is None for src in found.values()):
        return None
    sources = {}
    for mem in archive.members:
        copy_verified(found[mem.name], mem, root / mem.name)
        sources[mem.name] = PREFIX + str(found[mem.name].resolve())
    return sources
