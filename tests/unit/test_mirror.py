"""Local mirrors as a data source (companion.data.mirror): small fixture files, no network (the manifests' URLs point
at a closed local port, so a file the mirror lacks cannot be downloaded either)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import yaml

from companion.cli import main
from companion.data import download as F
from companion.data.manifests import ManifestError, _load_all, load_manifests

NOWHERE = "http://127.0.0.1:9"  # discard port: nothing listens, the download fails at once
PAYLOAD = b"vessel voxels " * 100


@pytest.fixture()
def env(tmp_path, monkeypatch):
    mdir, ddir, mirror = tmp_path / "manifests", tmp_path / "data", tmp_path / "mirror"
    mdir.mkdir()
    mirror.mkdir()
    monkeypatch.setenv("COMPANION_MANIFESTS", str(mdir))
    monkeypatch.setenv("COMPANION_DATA", str(ddir))
    monkeypatch.delenv("COMPANION_MIRROR", raising=False)
    _load_all.cache_clear()
    yield mdir, ddir, mirror
    _load_all.cache_clear()


def _hashes(b: bytes) -> list[str]:
    return [f"md5:{hashlib.md5(b).hexdigest()}", f"sha256:{hashlib.sha256(b).hexdigest()}"]


def _manifest(mdir: Path, did: str, files: list[dict], **extra) -> None:
    m = {"id": did, "title": did, "chapters": ["vessel_data"], "homepage": "http://127.0.0.1/", "access": "open",
         "license": "CC0", "citation": "fixture", "layout": "x", "loader": "none", "manual": None, "files": files,
         **extra}
    (mdir / f"{did}.yaml").write_text(yaml.safe_dump(m))
    _load_all.cache_clear()


def _file(name: str, data: bytes, **kw) -> dict:
    return {"url": f"{NOWHERE}/{name}", "name": name, "size_bytes": len(data), "hash": _hashes(data),
            "extract": "none", **kw}


def _put(mirror: Path, folder: str, name: str, data: bytes) -> Path:
    p = mirror / folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _left_behind(ddir: Path) -> list[Path]:
    return sorted(ddir.rglob("*")) if ddir.exists() else []


def test_good_mirror_copy_is_used_and_recorded(env):
    mdir, ddir, mirror = env
    _manifest(mdir, "fix", [_file("case/vol.bin", PAYLOAD)], mirror_id="fix-data")
    src = _put(mirror, "fix-data", "case/vol.bin", PAYLOAD)
    root = F.fetch("fix", progress=False, mirror=mirror)
    assert (root / "raw" / "case" / "vol.bin").read_bytes() == PAYLOAD
    marker = json.loads((root / F.MARKER).read_text())
    assert marker["sources"] == {"case/vol.bin": f"mirror:{src.resolve()}"}
    assert F.verify("fix") == []
    assert F.status("fix")[0].state == "ready (copied from a local mirror)"
    assert src.read_bytes() == PAYLOAD  # the mirror is never modified


def test_mirror_from_environment_list_by_id_and_by_sha256(env, monkeypatch):
    mdir, ddir, mirror = env
    other = mirror.parent / "empty-mirror"
    other.mkdir()
    _manifest(mdir, "fix", [_file("a.bin", PAYLOAD), _file("b.bin", PAYLOAD[::-1])])  # mirror_id defaults to the id
    _put(mirror, "fix", "a.bin", PAYLOAD)
    _put(mirror, "fix", "renamed/elsewhere.dat", PAYLOAD[::-1])  # found by its sha256
    _put(mirror, "fix", "decoy.dat", b"x" * len(PAYLOAD))  # same size, other bytes: not taken
    monkeypatch.setenv("COMPANION_MIRROR", os.pathsep.join([str(other), str(mirror)]))
    root = F.fetch("fix", progress=False)
    assert (root / "raw" / "b.bin").read_bytes() == PAYLOAD[::-1]
    assert json.loads((root / F.MARKER).read_text())["sources"]["b.bin"].endswith("renamed/elsewhere.dat")


@pytest.mark.parametrize("damage", ["wrong byte", "truncated", "missing"])
def test_bad_or_missing_mirror_copy_refused_and_nothing_left(env, damage):
    mdir, ddir, mirror = env
    _manifest(mdir, "fix", [_file("vol.bin", PAYLOAD)])
    if damage == "wrong byte":
        bad = bytearray(PAYLOAD)
        bad[7] ^= 1
        src = _put(mirror, "fix", "vol.bin", bytes(bad))
    elif damage == "truncated":
        src = _put(mirror, "fix", "vol.bin", PAYLOAD[:-10])
    else:
        src = None
        (mirror / "fix").mkdir()
    expected = F.DataAccessError if damage == "missing" else F.ChecksumError
    with pytest.raises(expected) as exc:
        F.fetch("fix", progress=False, mirror=mirror)
    msg = str(exc.value)
    if damage == "missing":  # not in the mirror: the network is tried, and fails here
        assert NOWHERE in msg and "Nothing was kept" in msg
    else:
        assert str(src) in msg and ("size" in msg if damage == "truncated" else "sha256 checksum mismatch" in msg)
    assert _left_behind(ddir) == []
    assert F.verify("fix") and F.status("fix")[0].state.startswith("not downloaded")


def test_bad_mirror_copy_leaves_an_existing_dataset_as_it_was(env):
    mdir, ddir, mirror = env
    _manifest(mdir, "fix", [_file("a.bin", PAYLOAD), _file("b.bin", PAYLOAD * 2)])
    _put(mirror, "fix", "a.bin", PAYLOAD)
    _put(mirror, "fix", "b.bin", PAYLOAD * 2)
    root = F.fetch("fix", progress=False, mirror=mirror)
    before = {p: p.read_bytes() for p in _left_behind(ddir) if p.is_file()}
    (root / "raw" / "b.bin").unlink()
    _put(mirror, "fix", "b.bin", PAYLOAD * 2 + b"!")
    with pytest.raises(F.ChecksumError):
        F.fetch("fix", progress=False, mirror=mirror)
    after = {p: p.read_bytes() for p in _left_behind(ddir) if p.is_file()}
    assert not any(p.name.endswith(".part") for p in after)
    assert after == {p: b for p, b in before.items() if p.name != "b.bin"}


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _sdist_manifest(mdir: Path, archive: bytes, image: bytes = PAYLOAD) -> None:
    member = {"path": "pkg-1.0/src/pkg/_tests/images/liver.tiff", "name": "liver.tiff", "size_bytes": len(image),
              "hash": _hashes(image)}
    _manifest(mdir, "sdist", [_file("pkg-1.0.tar.gz", archive, extract="tar.gz", members=[member])],
              mirror_id="pkg-liver")


def test_archive_member_from_mirror_or_from_the_archive(env):
    mdir, ddir, mirror = env
    archive = _tar_gz({"pkg-1.0/src/pkg/_tests/images/liver.tiff": PAYLOAD, "pkg-1.0/setup.py": b"big code"})
    _sdist_manifest(mdir, archive)
    # 1. the mirror keeps the member unpacked: it is copied, no archive needed
    _put(mirror, "pkg-liver", "liver.tiff", PAYLOAD)
    root = F.fetch("sdist", progress=False, mirror=mirror)
    assert (root / "liver.tiff").read_bytes() == PAYLOAD and not (root / "raw").exists()
    assert F.verify("sdist") == []
    # 2. the mirror keeps the archive: only the listed member is extracted, checked against its own hashes
    (mirror / "pkg-liver" / "liver.tiff").unlink()
    _put(mirror, "pkg-liver", "pkg-1.0.tar.gz", archive)
    (root / "liver.tiff").unlink()
    F.fetch("sdist", progress=False, mirror=mirror)
    assert (root / "liver.tiff").read_bytes() == PAYLOAD and (root / "raw" / "pkg-1.0.tar.gz").is_file()
    assert not (root / "pkg-1.0").exists() and not list(root.rglob("setup.py"))
    assert "(member pkg-1.0/src/pkg/_tests/images/liver.tiff)" in \
        json.loads((root / F.MARKER).read_text())["sources"]["liver.tiff"]
    (root / "liver.tiff").write_bytes(PAYLOAD[:-1])
    assert any("liver.tiff" in p for p in F.verify("sdist"))


@pytest.mark.parametrize("case", ["member differs", "member absent"])
def test_archive_whose_member_is_wrong_is_refused(env, case):
    mdir, ddir, mirror = env
    members = {"pkg-1.0/other.txt": b"x"}
    if case == "member differs":
        members["pkg-1.0/src/pkg/_tests/images/liver.tiff"] = PAYLOAD[:-1] + b"?"
    archive = _tar_gz(members)
    _sdist_manifest(mdir, archive)
    _put(mirror, "pkg-liver", "pkg-1.0.tar.gz", archive)
    with pytest.raises(F.ChecksumError, match="sha256 checksum mismatch" if case == "member differs" else
                       "has no member"):
        F.fetch("sdist", progress=False, mirror=mirror)
    assert _left_behind(ddir) == []


def test_cli_fetch_with_mirror(env, capsys):
    mdir, ddir, mirror = env
    _manifest(mdir, "fix", [_file("vol.bin", PAYLOAD)])
    _put(mirror, "fix", "vol.bin", PAYLOAD)
    assert main(["data", "fetch", "fix", "--mirror", str(mirror)]) == 0
    assert "fix: ready in" in capsys.readouterr().out
    assert main(["data", "status", "fix"]) == 0
    assert "ready (copied from a local mirror)" in capsys.readouterr().out
    _put(mirror, "fix", "vol.bin", PAYLOAD[1:])
    (ddir / "fix" / "raw" / "vol.bin").unlink()
    assert main(["data", "fetch", "fix", "--mirror", str(mirror)]) == 1
    assert "mirror copy" in capsys.readouterr().err


@pytest.mark.parametrize("change, complaint", [
    ({"mirror_id": "a/b"}, "mirror_id"),
    ({"files": [{"url": "u", "name": "../x", "hash": None}]}, "without '..'"),
    ({"files": [{"url": "u", "name": "x.zip", "hash": None, "members": [{"path": "a", "name": "b"}]}]},
     "members need extract"),
    ({"loader": "real_volumes", "volumes": [{"file": "nope.nii.gz", "kind": "image"}]}, "not one of the manifest's"),
    ({"loader": "real_volumes", "volumes": [{"file": "x.nii.gz", "kind": "picture"}]}, "kind"),
    ({"loader": "real_volumes", "volumes": [{"file": "x.nii.gz", "kind": "image", "threshold": 0.5}]}, "threshold"),
    ({"loader": "real_volumes", "volumes": [{"file": "x.nii.gz", "kind": "labels", "labels": {"a": 1}}]},
     "integer label values"),
    ({"loader": "real_volumes"}, "none are listed"),
    ({"origin": {"commit": "abc"}}, "40-hex"),
    ({"caveats": "one string"}, "caveats must be a list"),
])
def test_new_manifest_fields_are_validated(env, change, complaint):
    mdir, _, _ = env
    m = {"files": [{"url": "u", "name": "x.nii.gz", "hash": None}], **change}
    _manifest(mdir, "bad", **{"files": m.pop("files")}, **m)
    with pytest.raises(ManifestError) as exc:
        load_manifests(mdir)
    assert complaint in str(exc.value) and "bad.yaml" in str(exc.value)


def test_mirror_copy_without_checksum_needs_allow_unverified(env):
    mdir, ddir, mirror = env
    _manifest(mdir, "fix", [{**_file("vol.bin", PAYLOAD), "hash": None}])
    _put(mirror, "fix", "vol.bin", PAYLOAD)
    with pytest.raises(F.ChecksumError, match="no checksum"):
        F.fetch("fix", progress=False, mirror=mirror)
    assert _left_behind(ddir) == []
    assert (F.fetch("fix", progress=False, mirror=mirror, allow_unverified=True) / "raw" / "vol.bin").is_file()
