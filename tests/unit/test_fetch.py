"""The download path for real, against a local HTTP server on 127.0.0.1 serving small fixture files."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from companion.cli import main
from companion.data import download as F
from companion.data.manifests import ManifestError, _load_all, load_manifests


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/cut/"):  # promise more bytes than sent, then close: a truncated transfer
            body = (Path(self.directory) / self.path[5:]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) * 2))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def env(tmp_path, monkeypatch):
    mdir, ddir = tmp_path / "manifests", tmp_path / "data"
    mdir.mkdir()
    monkeypatch.setenv("COMPANION_MANIFESTS", str(mdir))
    monkeypatch.setenv("COMPANION_DATA", str(ddir))
    _load_all.cache_clear()
    yield mdir, ddir
    _load_all.cache_clear()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _manifest(mdir: Path, did: str, url: str, name: str, digest: str | None, size: int | None = None,
              extract: str = "zip", access: str = "open", hashes: list[str] | None = None) -> None:
    """Write a one-file manifest; `hashes` (a list of "algo:hex") replaces the single sha256 `digest`."""
    m = {"id": did, "title": did, "chapters": ["vessel_data"], "homepage": "http://127.0.0.1/", "access": access,
         "license": "CC0", "citation": "fixture", "layout": "x", "loader": "none",
         "files": [{"url": url, "name": name, "hash": hashes if hashes is not None else digest and f"sha256:{digest}",
                    "size_bytes": size, "extract": extract}] if url else [],
         "manual": None if access == "open" else "Ask the fixture's authors."}
    (mdir / f"{did}.yaml").write_text(yaml.safe_dump(m))
    _load_all.cache_clear()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def _left_behind(ddir: Path) -> list[Path]:
    return [p for p in ddir.rglob("*")] if ddir.exists() else []


def test_good_download_extracts_and_verifies(server, env):
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"good/images/case1.txt": b"vessel", "good/labels/case1.txt": b"1"})
    (www / "good.zip").write_bytes(payload)
    _manifest(mdir, "good", f"{base}/good.zip", "good.zip", _sha(payload), len(payload))
    root = F.fetch("good", progress=False)
    assert (root / "good" / "images" / "case1.txt").read_bytes() == b"vessel"
    assert F.verify("good") == []
    assert F.status("good")[0].state == "ready"
    # a cached, verified file is reused: removing it from the server does not matter
    (www / "good.zip").unlink()
    assert F.fetch("good", progress=False) == root


def test_wrong_hash_rejected_and_nothing_left(server, env):
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"a.txt": b"a"})
    (www / "bad.zip").write_bytes(payload)
    wrong = _sha(b"something else")
    _manifest(mdir, "badhash", f"{base}/bad.zip", "bad.zip", wrong)
    with pytest.raises(F.ChecksumError) as exc:
        F.fetch("badhash", progress=False)
    msg = str(exc.value)
    assert wrong in msg and _sha(payload) in msg and "removed" in msg
    assert _left_behind(ddir) == []


def test_several_hashes_all_checked(server, env):
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"multi/a.txt": b"a"})
    (www / "multi.zip").write_bytes(payload)
    _manifest(mdir, "multi", f"{base}/multi.zip", "multi.zip", None,
              hashes=[f"md5:{_md5(payload)}", f"sha256:{_sha(payload)}"])
    root = F.fetch("multi", progress=False)
    assert (root / "multi" / "a.txt").read_bytes() == b"a" and F.verify("multi") == []
    marker = json.loads((root / F.MARKER).read_text())
    assert marker["files"]["multi.zip"] == [f"md5:{_md5(payload)}", f"sha256:{_sha(payload)}"]
    (root / "raw" / "multi.zip").write_bytes(b"corrupted")  # verify checks every value
    problems = F.verify("multi")
    assert len(problems) == 1 and "md5 checksum mismatch" in problems[0] and "sha256 checksum mismatch" in problems[0]


@pytest.mark.parametrize("wrong", ["md5", "sha256"])
def test_several_hashes_one_wrong_refused_and_nothing_left(server, env, wrong):
    """A file that matches one recorded checksum but not the other is refused; which one is wrong does not matter."""
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"a.txt": b"a" * 100})
    (www / "one.zip").write_bytes(payload)
    good = {"md5": _md5(payload), "sha256": _sha(payload)}
    bad = dict(good, **{wrong: {"md5": _md5, "sha256": _sha}[wrong](b"another file")})
    _manifest(mdir, "onewrong", f"{base}/one.zip", "one.zip", None, size=len(payload),
              hashes=[f"md5:{bad['md5']}", f"sha256:{bad['sha256']}"])
    with pytest.raises(F.ChecksumError) as exc:
        F.fetch("onewrong", progress=False)
    msg = str(exc.value)
    right = "sha256" if wrong == "md5" else "md5"
    assert f"{wrong} checksum mismatch: expected {bad[wrong]}, got {good[wrong]}" in msg
    assert f"{right} checksum mismatch" not in msg and f"the {right} matched" in msg and "removed" in msg
    assert _left_behind(ddir) == []


@pytest.mark.parametrize("value, complaint", [
    ([], "empty list"),
    (["sha256:" + "a" * 64, "sha256:" + "b" * 64], "two sha256 values"),
    (["md5:" + "a" * 31], "a md5 digest has 32 hex digits, not 31"),
    (["sha256:" + "A" * 64], "lowercase hex"),
    ("crc32:1234abcd", "md5|sha1|sha256"),
])
def test_malformed_hash_lists_are_refused_with_the_field_named(env, value, complaint):
    mdir, _ = env
    _manifest(mdir, "badlist", "http://127.0.0.1/x.zip", "x.zip", None, hashes=value)
    with pytest.raises(ManifestError, match="files\\[0\\].hash") as exc:
        load_manifests()
    assert complaint in str(exc.value) and "badlist.yaml" in str(exc.value)


def test_truncated_file_rejected_by_size_and_hash(server, env):
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"a.txt": b"x" * 5000})
    (www / "short.zip").write_bytes(payload[: len(payload) // 2])  # the host serves half the file
    _manifest(mdir, "short", f"{base}/short.zip", "short.zip", _sha(payload), len(payload))
    with pytest.raises(F.ChecksumError, match="truncated"):
        F.fetch("short", progress=False)
    assert _left_behind(ddir) == []


def test_connection_cut_midway_rejected(server, env):
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"a.txt": b"y" * 5000})
    (www / "cut.zip").write_bytes(payload)
    _manifest(mdir, "cut", f"{base}/cut/cut.zip", "cut.zip", _sha(payload))
    with pytest.raises((F.DataAccessError, F.ChecksumError)):
        F.fetch("cut", progress=False)
    assert _left_behind(ddir) == []


def test_unverifiable_file_refused_unless_allowed(server, env):
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"a.txt": b"a"})
    (www / "nohash.zip").write_bytes(payload)
    _manifest(mdir, "nohash", f"{base}/nohash.zip", "nohash.zip", None)
    with pytest.raises(F.ChecksumError, match="no checksum"):
        F.fetch("nohash", progress=False)
    assert _left_behind(ddir) == []
    assert (F.fetch("nohash", progress=False, allow_unverified=True) / "a.txt").exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/companion-evil.txt", "ok/../../evil.txt"])
def test_zip_path_traversal_rejected(server, env, tmp_path, member):
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"fine.txt": b"ok", member: b"evil"})
    (www / "trav.zip").write_bytes(payload)
    _manifest(mdir, "trav", f"{base}/trav.zip", "trav.zip", _sha(payload))
    with pytest.raises(F.UnsafeArchiveError):
        F.fetch("trav", progress=False)
    assert _left_behind(ddir) == []
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/companion-evil.txt").exists()


def _tar_bytes(add) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        add(tf)
    return buf.getvalue()


def _tar_file(tf, name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _tar_link(tf, name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tf.addfile(info)


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink-out", "hardlink-out"])
def test_tar_path_traversal_and_links_rejected(server, env, case):
    www, base = server
    mdir, ddir = env

    def add(tf):
        _tar_file(tf, "data/fine.txt")
        if case == "dotdot":
            _tar_file(tf, "data/../../evil.txt")
        elif case == "absolute":
            _tar_file(tf, "/tmp/companion-evil-tar.txt")
        elif case == "symlink-out":
            _tar_link(tf, "data/link", "../../../etc/passwd")
        else:
            _tar_link(tf, "data/hard", "/etc/passwd", tarfile.LNKTYPE)

    payload = _tar_bytes(add)
    (www / "t.tar.gz").write_bytes(payload)
    _manifest(mdir, "tarcase", f"{base}/t.tar.gz", "t.tar.gz", _sha(payload), extract="tar.gz")
    with pytest.raises(F.UnsafeArchiveError):
        F.fetch("tarcase", progress=False)
    assert _left_behind(ddir) == []


def test_tar_internal_symlink_allowed(server, env):
    www, base = server
    mdir, ddir = env

    def add(tf):
        _tar_file(tf, "data/fine.txt", b"fine")
        _tar_link(tf, "data/alias.txt", "fine.txt")

    payload = _tar_bytes(add)
    (www / "ok.tar.gz").write_bytes(payload)
    _manifest(mdir, "tarok", f"{base}/ok.tar.gz", "ok.tar.gz", _sha(payload), extract="tar.gz")
    root = F.fetch("tarok", progress=False)
    assert (root / "data" / "alias.txt").read_bytes() == b"fine"


def test_gated_dataset_explains_manual_placement_then_extracts(env):
    mdir, ddir = env
    _manifest(mdir, "gated", "", "", None, access="registration")
    with pytest.raises(F.DataAccessError) as exc:
        F.fetch("gated", progress=False)
    assert "Ask the fixture's authors" in str(exc.value) and str(ddir / "gated" / "raw") in str(exc.value)
    assert F.verify("gated")  # problems listed
    raw = ddir / "gated" / "raw"
    raw.mkdir(parents=True)
    (raw / "placed.zip").write_bytes(_zip_bytes({"gated/img.txt": b"i"}))
    F.fetch("gated", progress=False)
    assert (ddir / "gated" / "gated" / "img.txt").exists()
    assert F.verify("gated") == []


def test_registration_data_served_without_login_is_fetched_with_a_note(server, env, capsys):
    """ATM'22's case: the terms ask for registration, the host serves the files; fetch works and says so."""
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"reg/img.txt": b"r"})
    (www / "reg.zip").write_bytes(payload)
    _manifest(mdir, "reg", f"{base}/reg.zip", "reg.zip", _sha(payload), access="registration")
    host = base.split("//", 1)[1]
    assert F.status("reg")[0].state == "register first, then companion data fetch reg"
    assert main(["data", "list"]) == 0
    assert f"registration ({host}: open download)" in capsys.readouterr().out
    assert main(["data", "fetch", "reg"]) == 0
    err = capsys.readouterr().err
    assert f"has access 'registration' although {host} serves the files" in err and "Ask the fixture's authors" in err
    assert (ddir / "reg" / "reg" / "img.txt").read_bytes() == b"r" and F.verify("reg") == []


@pytest.mark.parametrize("access", ["request", "private", "unidentified"])
def test_files_refused_for_data_that_cannot_be_downloaded(env, access):
    mdir, _ = env
    _manifest(mdir, "gatedfiles", "http://127.0.0.1/x.zip", "x.zip", "a" * 64, access=access)
    with pytest.raises(ManifestError, match=f"access '{access}' cannot list files"):
        load_manifests()


def test_verify_detects_corruption_after_download(server, env):
    www, base = server
    mdir, ddir = env
    payload = _zip_bytes({"a.txt": b"a"})
    (www / "v.zip").write_bytes(payload)
    _manifest(mdir, "ver", f"{base}/v.zip", "v.zip", _sha(payload))
    F.fetch("ver", progress=False)
    (ddir / "ver" / "raw" / "v.zip").write_bytes(b"corrupted")
    problems = F.verify("ver")
    assert len(problems) == 1 and "checksum mismatch" in problems[0] and _sha(payload) in problems[0]
