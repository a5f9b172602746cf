"""Download, verify and safely extract the datasets named in the manifests.

* Files are cached under ``$COMPANION_DATA/<id>/raw/`` (default: the OS cache folder ``companion``); the files an
  archive's manifest entry lists as ``members`` go to ``$COMPANION_DATA/<id>/<name>`` (only those are extracted).
* A local mirror (``--mirror DIR`` / ``$COMPANION_MIRROR``, see :mod:`companion.data.mirror`) is searched before the
  network; its copies are checked exactly like downloads, and the completion marker records which path they came
  from.
* Every download goes to a temporary file first (pooch's HTTP downloader); it is renamed into place only after its
  size and checksum match the manifest. On any failure the temporary file, and everything else the call created, is
  removed and the error says what was expected, what arrived and what to do.
* Archives are checked member by member *before* anything is extracted: absolute paths, ``..`` components, and links
  that point outside the target are refused. Extraction happens in a temporary folder that is moved into place only
  when complete.
* Gated datasets (registration / request / private) cannot be downloaded: the user places the archive(s) in
  ``raw/`` as the manifest's ``manual`` text explains, then ``companion data fetch ID`` extracts and ``verify`` checks.
  The exception is registration data whose manifest lists ``files`` (ATM'22): the terms ask for registration, but the
  host serves the files without a login, so they are fetched and verified like open data.
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pooch

from . import mirror as mirrors
from .integrity import ChecksumError, DataAccessError, file_hashes, install_verified
from .integrity import file_problem as _file_problem
from .manifests import Manifest, RemoteFile, get_manifest, load_manifests

__all__ = ["ChecksumError", "DataAccessError", "UnsafeArchiveError", "check_archive", "data_root", "dataset_dir",
           "download_file", "extract_members", "fetch", "file_hash", "file_hashes", "local_path", "safe_extract",
           "status", "verify"]

MARKER = ".companion-complete.json"


class UnsafeArchiveError(RuntimeError):
    """An archive tried to write outside its target folder; nothing was extracted."""


def data_root() -> Path:
    """``$COMPANION_DATA`` if set, else the OS cache folder for ``companion``."""
    env = os.environ.get("COMPANION_DATA")
    return Path(env).expanduser() if env else Path(pooch.os_cache("companion"))


def dataset_dir(dataset_id: str) -> Path:
    return data_root() / dataset_id


def file_hash(path: Path, algorithm: str) -> str:
    return pooch.file_hash(str(path), alg=algorithm)


# ----------------------------------------------------------------------------------------------- safe extraction
def _check_member_path(name: str, archive: Path) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} has an absolute path; refusing to extract")
    if ".." in p.parts:
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} contains '..'; refusing to extract")


def _link_escapes(member_name: str, link_target: str) -> bool:
    if link_target.startswith("/") or PurePosixPath(link_target).is_absolute():
        return True
    depth = 0
    for part in (PurePosixPath(member_name).parent / link_target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def check_archive(archive: Path, kind: str) -> list[str]:
    """Return member names after refusing anything that would land outside the target folder."""
    names: list[str] = []
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_member_path(info.filename, archive)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is a symbolic link; refusing")
                names.append(info.filename)
    elif kind in ("tar", "tar.gz"):
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                _check_member_path(m.name, archive)
                if (m.issym() or m.islnk()) and _link_escapes(m.name if m.issym() else "", m.linkname):
                    raise UnsafeArchiveError(
                        f"{archive.name}: link {m.name!r} -> {m.linkname!r} points outside the target; refusing"
                    )
                if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise UnsafeArchiveError(f"{archive.name}: member {m.name!r} is a device or fifo; refusing")
                names.append(m.name)
    else:
        raise ValueError(f"cannot check archive kind {kind!r}")
    return names


def safe_extract(archive: Path, target: Path, kind: str) -> None:
    """Extract `archive` into `target` atomically: all members checked first, then extracted to a temporary
    folder beside `target`, then moved in. On failure nothing is left behind."""
    if kind == "none":
        return
    if kind == "rar":
        try:
            import rarfile  # optional: needs the `unrar` or `bsdtar` program
        except ImportError as exc:
            raise DataAccessError(
                f"{archive.name} is a RAR archive. Install `rarfile` (pip) and `unrar` (your package manager), or "
                f"extract it yourself into {target} and run `companion data verify {target.name}`."
            ) from exc
        with rarfile.RarFile(archive) as rf:
            for info in rf.infolist():
                _check_member_path(info.filename, archive)
                if info.is_symlink():
                    raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is a link; refusing")
        extract = lambda dst: rarfile.RarFile(archive).extractall(dst)  # noqa: E731
    else:
        check_archive(archive, kind)
        if kind == "zip":
            extract = lambda dst: zipfile.ZipFile(archive).extractall(dst)  # noqa: E731
        else:
            def extract(dst):
                with tarfile.open(archive) as tf:
                    tf.extractall(dst, filter="data")
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        extract(tmp)
        for entry in tmp.iterdir():
            dest = target / entry.name
            if dest.exists():
                shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
            os.replace(entry, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def extract_members(archive: Path, kind: str, rf: RemoteFile, root: Path) -> None:
    """Take only the manifest's ``members`` out of `archive` (e.g. one image inside a PyPI sdist), each into
    ``root/<member name>`` and checked against its own size and hashes before it is moved into place. The whole
    archive is checked for unsafe paths first; a missing member is an error naming the archive."""
    check_archive(archive, kind)
    if kind == "zip":
        zf = zipfile.ZipFile(archive)
        names = set(zf.namelist())
        opener = zf.open
    else:
        tf = tarfile.open(archive)
        names = {m.name for m in tf.getmembers() if m.isfile()}
        opener = tf.extractfile
    try:
        for mem in rf.members:
            if mem.member not in names:
                raise ChecksumError(f"{archive.name}: has no member {mem.member!r} (manifest files[].members); the "
                                    f"archive is not the one the manifest describes.")

            def write(tmp: Path, mem=mem) -> None:
                with opener(mem.member) as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)

            install_verified(write, mem, root / mem.name, origin=f"member {mem.member} of {archive.name}")
    finally:
        (zf if kind == "zip" else tf).close()


# ----------------------------------------------------------------------------------------------- downloads
def _require_checksum(rf: RemoteFile, allow_unverified: bool) -> None:
    """Refuse a file (download or mirror copy) that cannot be verified, unless the caller accepts that."""
    if not rf.hashes and not allow_unverified:
        raise ChecksumError(
            f"{rf.name}: the manifest publishes no checksum, so the download cannot be verified. Pass "
            f"allow_unverified=True (CLI: --allow-unverified) to accept it, then record its hash in the manifest."
        )


def download_file(rf: RemoteFile, raw_dir: Path, *, progress: bool = True, allow_unverified: bool = False) -> Path:
    """Download one manifest file into `raw_dir`, verified; returns its path. Reuses a verified cached copy."""
    _require_checksum(rf, allow_unverified)
    dest = raw_dir / rf.name
    if dest.exists():
        if _file_problem(dest, rf) is None:
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            pooch.HTTPDownloader(progressbar=progress, timeout=60)(rf.url, str(tmp), None)
        except Exception as exc:  # connection cut, HTTP error, incomplete read ...
            raise DataAccessError(
                f"{rf.name}: download from {rf.url} failed ({type(exc).__name__}: {exc}). Nothing was kept; "
                f"check your connection and run the fetch again."
            ) from exc
        problem = _file_problem(tmp, rf)
        if problem:
            raise ChecksumError(f"{problem} The downloaded file was removed.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _obtain(rf: RemoteFile, raw: Path, folders: list[Path], previous: dict[str, str], *, progress: bool,
            allow_unverified: bool) -> tuple[Path, str]:
    """`rf` in ``raw/``, verified: a cached copy, else the mirror's, else a download. Returns (path, source)."""
    dest = raw / rf.name
    if dest.exists() and _file_problem(dest, rf) is None:
        return dest, previous.get(rf.name, rf.url)
    source = mirrors.place(rf, folders, dest)
    if source:
        return dest, source
    return download_file(rf, raw, progress=progress, allow_unverified=allow_unverified), rf.url


def _members_ready(rf: RemoteFile, root: Path) -> bool:
    return all((root / mem.name).is_file() and _file_problem(root / mem.name, mem) is None for mem in rf.members)


def _manual_message(m: Manifest) -> str:
    return (
        f"dataset {m.id!r} ({m.title}) has access '{m.access}' and cannot be downloaded automatically.\n"
        f"{(m.manual or '').strip()}\n"
        f"Place the archive(s) in {dataset_dir(m.id) / 'raw'} and run `companion data fetch {m.id}` to extract "
        f"them, then `companion data verify {m.id}`."
    )


def fetch(dataset_id: str, *, progress: bool = True, allow_unverified: bool = False,
          mirror: str | Path | list[str | Path] | None = None) -> Path:
    """Download (open data) or extract user-placed archives (gated data), verify, and mark complete.

    Open data are taken from a local mirror first (`mirror`, then ``$COMPANION_MIRROR``; see
    :mod:`companion.data.mirror`), checked exactly as downloads are. Returns the dataset folder. On failure,
    everything this call created is removed.
    """
    m = get_manifest(dataset_id)
    if m.is_packaged:
        return packaged_path(m)
    root = dataset_dir(m.id)
    existed = root.exists()
    raw = root / "raw"
    sources: dict[str, str] = {}
    try:
        if m.downloadable:
            folders = mirrors.dataset_folders(m, mirrors.mirror_roots(mirror))
            previous = _read_marker(root).get("sources", {})
            archives = []
            for rf in m.files:
                for f in (rf, *rf.members):
                    _require_checksum(f, allow_unverified)
                if rf.members:
                    if _members_ready(rf, root):
                        sources.update({mem.name: previous.get(mem.name, rf.url) for mem in rf.members})
                        continue
                    placed = mirrors.place_members(rf, folders, root)
                    if placed:
                        sources.update(placed)
                        continue
                path, sources[rf.name] = _obtain(rf, raw, folders, previous, progress=progress,
                                                 allow_unverified=allow_unverified)
                if rf.members:
                    extract_members(path, rf.extract, rf, root)
                    sources.update({mem.name: f"{sources[rf.name]} (member {mem.member})" for mem in rf.members})
                else:
                    archives.append((path, rf.extract))
        else:
            placed = sorted(p for p in raw.glob("*") if p.is_file() and not p.name.startswith(".")) \
                if raw.is_dir() else []
            extracted = [p for p in root.iterdir() if p.name != "raw" and not p.name.startswith(".")] \
                if root.is_dir() else []
            if not placed and not extracted:
                raise DataAccessError(_manual_message(m))
            archives = [(p, _archive_kind(p)) for p in placed]  # none: the user extracted the files by hand
        for path, kind in archives:
            safe_extract(path, root, kind)
        _write_marker(m, root, sources)
    except BaseException:
        if not existed:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for p in root.rglob(".*.part") if root.is_dir() else []:
                p.unlink(missing_ok=True)
        raise
    return root


def _archive_kind(path: Path) -> str:
    name = path.name.lower()
    for suffix, kind in ((".tar.gz", "tar.gz"), (".tgz", "tar.gz"), (".tar", "tar"), (".zip", "zip"), (".rar", "rar")):
        if name.endswith(suffix):
            return kind
    return "none"


def local_path(m: Manifest, name: str) -> Path:
    """Where a manifest file (or archive member) lies after ``fetch``: members at ``<id>/<name>``, other files in
    ``<id>/raw/<name>``."""
    root = dataset_dir(m.id)
    for rf in m.files:
        if rf.name == name:
            return root / "raw" / name
        if any(mem.name == name for mem in rf.members):
            return root / name
    raise KeyError(f"{m.id}: no file {name!r} in the manifest; files: {[f.name for f in m.local_files()]}")


def _read_marker(root: Path) -> dict:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return {}


def _write_marker(m: Manifest, root: Path, sources: dict[str, str] | None = None) -> None:
    """The completion marker: hashes of the verified files and where each file's bytes came from (a URL, or
    ``mirror:<path>``)."""
    record = {"id": m.id, "files": {}, "sources": dict(sources or {})}
    for rf in m.local_files():
        p = local_path(m, rf.name)
        if p.exists() and rf.hashes:
            record["files"][rf.name] = list(rf.hashes)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / (MARKER + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, root / MARKER)


def verify(dataset_id: str) -> list[str]:
    """Check a dataset on disk against its manifest. Returns the problems found (empty list: verified)."""
    m = get_manifest(dataset_id)
    if m.is_packaged:
        try:
            packaged_path(m)
            return []
        except DataAccessError as exc:
            return [str(exc)]
    root = dataset_dir(m.id)
    problems: list[str] = []
    if m.downloadable:
        checks = [(root / "raw" / rf.name, rf) for rf in m.files
                  if not rf.members or (root / "raw" / rf.name).exists()]  # a mirror may give the members alone
        checks += [(root / mem.name, mem) for rf in m.files for mem in rf.members]
        for p, rf in checks:
            if not p.exists():
                problems.append(f"{rf.name}: missing in {p.parent}; run `companion data fetch {m.id}`")
                continue
            problem = _file_problem(p, rf)
            if problem:
                problems.append(problem)
    elif not root.exists() or not any(root.iterdir()):
        problems.append(_manual_message(m))
    if not problems and not (root / MARKER).exists():
        problems.append(f"{m.id}: files present but not extracted; run `companion data fetch {m.id}`")
    return problems


def packaged_path(m: Manifest) -> Path:
    """Path of data that ships inside a PyPI package (e.g. nilearn's MNI152 template)."""
    from . import packaged

    try:
        return packaged.locate(m.id)
    except Exception as exc:  # ImportError or missing file
        raise DataAccessError(f"{m.id}: packaged data not available ({exc}); install {m.packaged}") from exc


@dataclass(frozen=True)
class DatasetStatus:
    id: str
    access: str
    license: str | None
    state: str
    where: str


def status(dataset_id: str | None = None) -> list[DatasetStatus]:
    """Where each dataset stands on this machine."""
    manifests = load_manifests()
    if dataset_id:
        get_manifest(dataset_id)  # unknown id: KeyError listing the known ones
    out = []
    for i in [dataset_id] if dataset_id else sorted(manifests):
        m = manifests[i]
        root = dataset_dir(m.id)
        if m.is_packaged:
            try:
                where, state = str(packaged_path(m)), "available (ships with a PyPI package)"
            except DataAccessError:
                where, state = "-", "package not installed"
        elif (root / MARKER).exists():
            from_mirror = any(v.startswith(mirrors.PREFIX) for v in _read_marker(root).get("sources", {}).values())
            where, state = str(root), "ready (copied from a local mirror)" if from_mirror else "ready"
        elif root.exists() and any(root.iterdir()):
            where, state = str(root), "present, not verified"
        else:
            where = str(root)
            state = {
                "open": "not downloaded (companion data fetch %s)" % m.id,
                "registration": f"register first, then companion data fetch {m.id}" if m.downloadable
                else "needs registration, then manual placement",
                "request": "on request, then manual placement",
                "private": "private: not obtainable",
                "unidentified": "unidentified: not obtainable",
            }[m.access]
        out.append(DatasetStatus(m.id, m.access, m.license, state, where))
    return out
