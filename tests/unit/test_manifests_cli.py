"""The real manifests: every dataset of the four papers is there, valid, and listed by `companion data list`."""
import pytest

from companion.build import datasets_markdown
from companion.cli import main
from companion.data.manifests import ACCESS_LEVELS, load_manifests

EXPECTED = {
    # open, direct download
    "atm22", "aeropath", "hipas", "topcow2024", "ixi", "msd_task08_hepaticvessel", "msd_task01_braintumour",
    "vesselmnist3d", "neurite_oasis",
    # registration / request / private / unidentified
    "aiib23", "parse2022", "insted", "costa", "vessap", "brats2019", "stroke_rost2010", "pulmonary_av",
    # shipped inside PyPI packages
    "mni152", "dipy_aniso_vox", "nibabel_anatomical",
}


def test_every_dataset_has_a_valid_manifest():
    ms = load_manifests()
    assert EXPECTED <= set(ms), f"missing manifests: {sorted(EXPECTED - set(ms))}"
    for m in ms.values():
        assert m.access in ACCESS_LEVELS
        assert m.citation
        if m.access == "open" and not m.is_packaged:
            assert m.files, f"{m.id}: open data needs files"
        if m.access != "open":
            assert m.manual and not m.files, f"{m.id}: gated data has manual steps, no download"
    assert ms["stroke_rost2010"].access == "private"
    assert ms["pulmonary_av"].access == "unidentified"


def test_published_checksums_are_recorded_where_given_to_us():
    ms = load_manifests()
    hashes = {h for m in ms.values() for rf in m.files for h in rf.hashes}
    for h in ("md5:34901a0593b41dd19c1a1f746eac2d58", "md5:29be7d2fee3998f978a55a9bdaf3407e",
              "md5:641d79e80ec66453921d997fbf12a29c", "md5:240a19d752f0d9e9101544901065d872",
              "md5:b41fd4f7e7e2feedddb201585ecafa1b",
              "md5:081392a8150ff99ab7a64a9ded377835"):  # neurite-OASIS: md5 as its own README publishes
        assert h in hashes, h


def test_cli_data_list_shows_access_and_license(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    ms = load_manifests()
    assert out.splitlines()[0].split()[-1] == "checksums"
    for m in ms.values():
        line = next(l for l in out.splitlines() if l.split()[0] == m.id)
        assert m.access in line and (m.license or "not stated").split()[0] in line
        assert line.rstrip().endswith(m.checksums or "-"), line


def test_checksum_summary():
    ms = load_manifests()
    assert ms["ixi"].checksums == "md5" and ms["brats2019"].checksums is None


def test_datasets_page_rows_follow_the_manifests():
    page = datasets_markdown()
    header = page.splitlines()[0]
    assert "| checksums |" in header
    col = [c.strip() for c in header.split("|")].index("checksums")
    for m in load_manifests().values():
        row = next(r for r in page.splitlines() if f"(`{m.id}`)" in r)
        assert [c.strip() for c in row.split("|")][col] == (m.checksums or "–"), row


def test_cli_status_and_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    assert main(["data", "status"]) == 0
    out = capsys.readouterr().out
    assert "available (ships with a PyPI package)" in out and "private: not obtainable" in out
    assert main(["data", "fetch", "brats2019"]) == 1
    assert "cannot be downloaded automatically" in capsys.readouterr().err
    assert main(["data", "verify", "nope"]) == 1
    assert main(["data", "verify", "mni152"]) == 0
    with pytest.raises(SystemExit):
        main(["data", "explode"])
