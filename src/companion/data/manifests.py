"""Dataset manifests: one YAML file per dataset in ``data_manifests/`` (schema in ``data_manifests/README.md``).

A manifest records facts as published (URL, size, checksum with its algorithm, license, citation) or, for gated data,
how a user obtains it and where to place it.  Nothing here downloads; see :mod:`companion.data.fetch`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ACCESS_LEVELS = ("open", "registration", "request", "private", "unidentified")
DIRECT_ACCESS = ("open", "registration")  # levels whose manifests may list files that download directly
EXTRACTORS = ("zip", "tar", "tar.gz", "rar", "none")
HASH_ALGORITHMS = ("md5", "sha1", "sha256")
HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64}
LOADERS = ("nifti_pairs", "nifti_folder", "npz_arrays", "medmnist_npz", "tiff_stack", "neurite_oasis", "real_volumes",
           "none")
VOLUME_KINDS = ("image", "labels", "mask")  # what companion.data.real.load returns: as stored, integer labels, bool
CHAPTER_IDS = ("vessel_data", "vaesselsparse", "vaesselsparse_latent", "vpbsd", "hyperbolic", "sparsevm")
LOADER_ARGS = ("images", "label_sub", "unlabelled", "unlabelled_images", "case", "channel", "spacing", "key", "file")
REQUIRED = ("id", "title", "chapters", "homepage", "access", "license", "citation", "files", "layout", "loader")


class ManifestError(ValueError):
    """A manifest file is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    name: str
    hashes: tuple[str, ...] = ()  # "algorithm:hex" values (all must match); empty when no checksum is known
    size_bytes: int | None = None
    extract: str = "none"
    members: tuple["RemoteFile", ...] = ()  # files taken out of this archive (only these are extracted)
    member: str | None = None  # for a member: its path inside the archive

    @property
    def checks(self) -> tuple[tuple[str, str], ...]:
        """(algorithm, hex digest) pairs, in the manifest's order."""
        return tuple((algo, hexd) for algo, _, hexd in (h.partition(":") for h in self.hashes))


@dataclass(frozen=True)
class Manifest:
    id: str
    title: str
    chapters: tuple[str, ...]
    homepage: str
    access: str
    license: str | None
    citation: str
    files: tuple[RemoteFile, ...]
    layout: str
    loader: str
    path: Path
    role: str = ""
    size: str | None = None
    modality: str | None = None
    manual: str | None = None
    bibtex: str | None = None
    packaged: dict[str, Any] | None = None
    published_stats: dict[str, Any] = field(default_factory=dict)
    notes: str | None = None
    loader_args: dict[str, Any] = field(default_factory=dict)
    mirror_id: str | None = None
    origin: dict[str, Any] = field(default_factory=dict)
    license_stated_in: tuple[str, ...] = ()
    caveats: tuple[str, ...] = ()
    volumes: tuple[dict[str, Any], ...] = ()

    @property
    def mirror_name(self) -> str:
        """The folder holding this dataset's files inside a local mirror (``mirror_id``, default: the id)."""
        return self.mirror_id or self.id

    def local_files(self) -> tuple[RemoteFile, ...]:
        """Every file the dataset puts on disk: the listed files, with an archive that lists ``members`` replaced by
        those members."""
        return tuple(f for rf in self.files for f in (rf.members or (rf,)))

    @property
    def downloadable(self) -> bool:
        """Files download directly: open data, or registration data whose host serves the files without a login."""
        return self.access in DIRECT_ACCESS and bool(self.files)

    @property
    def download_hosts(self) -> tuple[str, ...]:
        return tuple(sorted({urlsplit(rf.url).netloc for rf in self.files}))

    @property
    def access_summary(self) -> str:
        """The access level, plus where gated data also download directly, e.g. 'registration (zenodo.org: open
        download)': the terms ask for registration, the files themselves need no login."""
        if self.access != "open" and self.downloadable:
            return f"{self.access} ({', '.join(self.download_hosts)}: open download)"
        return self.access

    @property
    def is_packaged(self) -> bool:
        return bool(self.packaged)

    @property
    def checksums(self) -> str | None:
        """How the downloads are verified, e.g. ``md5+sha256``, ``sha256 (1 of 2 files)``, ``none``; None: no files."""
        if not self.files:
            return None
        algos = [a for a in HASH_ALGORITHMS if any(a == algo for rf in self.files for algo, _ in rf.checks)]
        hashed = sum(1 for rf in self.files if rf.hashes)
        if not hashed:
            return "none"
        return "+".join(algos) + ("" if hashed == len(self.files) else f" ({hashed} of {len(self.files)} files)")


def manifest_dir() -> Path:
    """``$COMPANION_MANIFESTS`` or the repository's ``data_manifests/``."""
    env = os.environ.get("COMPANION_MANIFESTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "data_manifests"


def _parse_hashes(path: Path, i: int | str, value: Any) -> tuple[str, ...]:
    """``files[i].hash`` (`i` an index, or the entry's full name such as ``files[0].members[1]``): null, one
    ``"algorithm:hex"`` string, or a list of them (one per algorithm; all must match)."""
    where = f"files[{i}]" if isinstance(i, int) else i
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ManifestError(f"{path}: {where}.hash is an empty list; write null when no checksum is known")
    seen: set[str] = set()
    for h in values:
        algo, _, hexd = str(h).partition(":")
        if algo not in HASH_ALGORITHMS or not re.fullmatch(r"[0-9a-f]+", hexd):
            raise ManifestError(f"{path}: {where}.hash {h!r} must be 'md5|sha1|sha256:<lowercase hex>' "
                                f"(or a list of such values, all of which must match)")
        if len(hexd) != HEX_LENGTHS[algo]:
            raise ManifestError(f"{path}: {where}.hash {h!r}: a {algo} digest has {HEX_LENGTHS[algo]} hex digits, "
                                f"not {len(hexd)}; copy the value again from its source")
        if algo in seen:
            raise ManifestError(f"{path}: {where}.hash lists two {algo} values; they cannot both match, keep the "
                                f"one whose source is right")
        seen.add(algo)
    return tuple(str(h) for h in values)


def _parse(path: Path) -> Manifest:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a mapping at top level")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ManifestError(f"{path}: missing required field(s) {', '.join(missing)}")
    if raw["id"] != path.stem or not re.fullmatch(r"[a-z0-9_]+", str(raw["id"])):
        raise ManifestError(f"{path}: id {raw['id']!r} must be [a-z0-9_]+ and equal the file name stem {path.stem!r}")
    if raw["access"] not in ACCESS_LEVELS:
        raise ManifestError(f"{path}: access {raw['access']!r} not one of {', '.join(ACCESS_LEVELS)}")
    if raw["loader"] not in LOADERS:
        raise ManifestError(f"{path}: loader {raw['loader']!r} not one of {', '.join(LOADERS)}")
    bad = [c for c in raw["chapters"] if c not in CHAPTER_IDS]
    if bad:
        raise ManifestError(f"{path}: unknown chapter id(s) {bad}; valid: {', '.join(CHAPTER_IDS)}")
    files = []
    for i, f in enumerate(raw.get("files") or []):
        for key in ("url", "name"):
            if not f.get(key):
                raise ManifestError(f"{path}: files[{i}] lacks {key!r}")
        hashes = _parse_hashes(path, i, f.get("hash"))
        extract = f.get("extract") or "none"
        if extract not in EXTRACTORS:
            raise ManifestError(f"{path}: files[{i}].extract {extract!r} not one of {', '.join(EXTRACTORS)}")
        name = _relative_name(path, f"files[{i}].name", f["name"])
        members = []
        for j, mem in enumerate(f.get("members") or []):
            where = f"files[{i}].members[{j}]"
            if extract not in ("zip", "tar", "tar.gz"):
                raise ManifestError(f"{path}: {where}: members need extract zip, tar or tar.gz, not {extract!r}")
            for key in ("path", "name"):
                if not mem.get(key):
                    raise ManifestError(f"{path}: {where} lacks {key!r}")
            members.append(RemoteFile(url=f["url"], name=_relative_name(path, f"{where}.name", mem["name"]),
                                      hashes=_parse_hashes(path, where, mem.get("hash")),
                                      size_bytes=mem.get("size_bytes"),
                                      member=_relative_name(path, f"{where}.path", mem["path"])))
        files.append(RemoteFile(url=f["url"], name=name, hashes=hashes, size_bytes=f.get("size_bytes"),
                                extract=extract, members=tuple(members)))
    names = [rf.name for rf in files] + [mem.name for rf in files for mem in rf.members]
    if len(set(names)) != len(names):
        raise ManifestError(f"{path}: file names must be unique, got {sorted(n for n in names if names.count(n) > 1)}")
    loader_args = dict(raw.get("loader_args") or {})
    unknown = set(loader_args) - set(LOADER_ARGS)
    if unknown:
        raise ManifestError(f"{path}: unknown loader_args {sorted(unknown)}; valid: {', '.join(LOADER_ARGS)}")
    sub = loader_args.get("label_sub")
    if sub is not None and not (isinstance(sub, list) and len(sub) == 2 and all(isinstance(x, str) for x in sub)):
        raise ManifestError(f"{path}: loader_args.label_sub must be [regex, replacement]")
    for key in ("images", "unlabelled_images"):
        globs = loader_args.get(key)
        if globs is not None and not (isinstance(globs, str) or (
                isinstance(globs, list) and globs and all(isinstance(x, str) and x for x in globs))):
            raise ManifestError(f"{path}: loader_args.{key} must be a glob or a non-empty list of globs, got {globs!r}")
    channel = loader_args.get("channel")
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int) or channel < 0):
        raise ManifestError(f"{path}: loader_args.channel must be a channel index (0, 1, ...), got {channel!r}")
    spacing = loader_args.get("spacing")
    if spacing is not None and not (isinstance(spacing, list) and spacing and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in spacing)):
        raise ManifestError(f"{path}: loader_args.spacing must be a list of positive voxel sizes in the array's axis "
                            f"order, got {spacing!r}")
    unlabelled = loader_args.get("unlabelled")
    if unlabelled is not None and unlabelled not in ("error", "skip"):
        raise ManifestError(f"{path}: loader_args.unlabelled must be 'error' or 'skip', got {unlabelled!r}")
    if unlabelled is not None and sub is None:
        raise ManifestError(f"{path}: loader_args.unlabelled needs label_sub (it says what to do with an image whose "
                            f"label file is missing)")
    if raw["access"] != "open" and not raw.get("manual"):
        raise ManifestError(f"{path}: access {raw['access']!r} needs 'manual' placement instructions")
    if files and raw["access"] not in DIRECT_ACCESS:
        raise ManifestError(f"{path}: access {raw['access']!r} cannot list files to download (only "
                            f"{' or '.join(DIRECT_ACCESS)} can); move the URLs to 'manual' or 'notes'")
    extra = _parse_real_fields(path, raw, names)
    return Manifest(
        id=raw["id"], title=raw["title"], chapters=tuple(raw["chapters"]), homepage=raw["homepage"],
        access=raw["access"], license=raw["license"], citation=str(raw["citation"]).strip(), files=tuple(files),
        layout=str(raw["layout"] or ""), loader=raw["loader"], path=path, role=raw.get("role") or "",
        size=raw.get("size"), modality=raw.get("modality"), manual=raw.get("manual"), bibtex=raw.get("bibtex"),
        packaged=raw.get("packaged"), published_stats=dict(raw.get("published_stats") or {}),
        notes=raw.get("notes"), loader_args=loader_args, **extra,
    )


def _relative_name(path: Path, where: str, value: Any) -> str:
    """A file name, or a relative '/'-separated path inside the dataset folder (no absolute path, no '..')."""
    name = str(value)
    parts = name.split("/")
    if "\\" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"{path}: {where} {name!r} must be a file name or a relative path ('a/b.nii.gz') "
                            f"without '..', '.' or empty parts")
    return name


def _string_list(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not (isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)):
        raise ManifestError(f"{path}: {key} must be a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _parse_real_fields(path: Path, raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``mirror_id``, ``origin``, ``license_stated_in``, ``caveats`` and ``volumes`` (schema in the README)."""
    mirror_id = raw.get("mirror_id")
    if mirror_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(mirror_id)):
        raise ManifestError(f"{path}: mirror_id {mirror_id!r} must be a folder name ([A-Za-z0-9._-], no '/')")
    origin = raw.get("origin") or {}
    if not isinstance(origin, dict):
        raise ManifestError(f"{path}: origin must be a mapping (repository, commit, ... or package, version, sdist)")
    commit = origin.get("commit")
    if commit is not None and not re.fullmatch(r"[0-9a-f]{40}", str(commit)):
        raise ManifestError(f"{path}: origin.commit {commit!r} must be a full 40-hex git commit id")
    volumes = []
    for i, v in enumerate(raw.get("volumes") or []):
        where = f"volumes[{i}]"
        if not isinstance(v, dict) or not v.get("file"):
            raise ManifestError(f"{path}: {where} needs 'file' (one of the manifest's file or member names)")
        if v["file"] not in names:
            raise ManifestError(f"{path}: {where}.file {v['file']!r} is not one of the manifest's files: {names}")
        if v.get("kind") not in VOLUME_KINDS:
            raise ManifestError(f"{path}: {where}.kind {v.get('kind')!r} not one of {', '.join(VOLUME_KINDS)}")
        spacing = v.get("spacing")
        if spacing is not None and not (isinstance(spacing, list) and spacing and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in spacing)):
            raise ManifestError(f"{path}: {where}.spacing must be null (use the file's header; none recorded: "
                                f"unknown) or a list of positive voxel sizes in mm, got {spacing!r}")
        labels = v.get("labels")
        if labels is not None and not (isinstance(labels, dict) and all(
                isinstance(k, int) and not isinstance(k, bool) and isinstance(n, str) for k, n in labels.items())):
            raise ManifestError(f"{path}: {where}.labels must map integer label values to names, got {labels!r}")
        threshold = v.get("threshold")
        if threshold is not None and (v["kind"] != "mask" or isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))):
            raise ManifestError(f"{path}: {where}.threshold is a number and only for kind 'mask'")
        unknown = set(v) - {"file", "key", "kind", "spacing", "labels", "threshold", "note"}
        if unknown:
            raise ManifestError(f"{path}: {where} has unknown field(s) {sorted(unknown)}")
        volumes.append(dict(v))
    vnames = [v["file"] + (f":{v['key']}" if v.get("key") else "") for v in volumes]
    if len(set(vnames)) != len(vnames):
        raise ManifestError(f"{path}: volumes name a file (and key) twice: {vnames}")
    if not volumes and raw["loader"] == "real_volumes":
        raise ManifestError(f"{path}: loader real_volumes reads the manifest's volumes, but none are listed")
    if volumes and raw["loader"] != "real_volumes":
        raise ManifestError(f"{path}: volumes are read by loader real_volumes, but loader is {raw['loader']!r}")
    return {"mirror_id": mirror_id, "origin": dict(origin),
            "license_stated_in": _string_list(path, "license_stated_in", raw.get("license_stated_in")),
            "caveats": _string_list(path, "caveats", raw.get("caveats")), "volumes": tuple(volumes)}


@lru_cache(maxsize=8)
def _load_all(directory: str) -> dict[str, Manifest]:
    d = Path(directory)
    if not d.is_dir():
        raise ManifestError(f"manifest folder {d} not found; set COMPANION_MANIFESTS to the data_manifests/ folder")
    return {m.id: m for m in (_parse(p) for p in sorted(d.glob("*.yaml")))}


def load_manifests(directory: str | Path | None = None) -> dict[str, Manifest]:
    """All manifests, keyed by id (validated; a malformed file raises :class:`ManifestError`)."""
    return dict(_load_all(str(directory or manifest_dir())))


def get_manifest(dataset_id: str, directory: str | Path | None = None) -> Manifest:
    manifests = load_manifests(directory)
    if dataset_id not in manifests:
        raise KeyError(f"unknown dataset {dataset_id!r}; known datasets: {', '.join(sorted(manifests))}")
    return manifests[dataset_id]
