"""The real manifests: every dataset of the four papers is there, valid, and listed by `companion data list`."""
import pytest

from companion.build import dataset_blocks, datasets_markdown
from companion.cli import main
from companion.data.manifests import ACCESS_LEVELS, load_manifests

EXPECTED = {
    # open, direct download
    "aeropath", "hipas", "topcow2024", "ixi", "msd_task08_hepaticvessel", "msd_task01_braintumour",
    "vesselmnist3d", "neurite_oasis",
    # registration, but the files download directly (Zenodo)
    "atm22",
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
            assert m.manual, f"{m.id}: gated data has manual steps"
        if m.access not in ("open", "registration"):
            assert not m.files, f"{m.id}: data on request, private or unidentified have no download"
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


THIRD_PARTY_SHA256 = {  # issue 13: torch_em's values, each named with its source in the manifest's notes
    ("hipas", "annotation.zip"): ("8badcebd8c82d5ac0c1ea38d08d482efd37c78712009e7839f8339eee11f82ce", "4fa51ac"),
    ("aeropath", "AeroPath.zip"): ("996b6bd7c79b71a871568293bf6927a52e8e73c1a4dadc1b0975ce3eec3e42ee", "3db1c5e"),
    ("msd_task01_braintumour", "Task01_BrainTumour.tar"):
        ("d423911308d2ae5396d9c6bf4fad2b68cfde2dd09044269da9c0d639c22753c4", "medical/msd.py"),
    ("msd_task08_hepaticvessel", "Task08_HepaticVessel.tar"):
        ("ee880799f12e3b6e1ef2f8645f6626c5b39de77a4f1eae6f496c25fbf306ba04", "medical/msd.py"),
}


def test_third_party_checksums_recorded_with_their_source():
    ms = load_manifests()
    for (did, name), (sha, source) in THIRD_PARTY_SHA256.items():
        rf = next(f for f in ms[did].files if f.name == name)
        assert f"sha256:{sha}" in rf.hashes, did
        assert "torch_em" in ms[did].notes and source in ms[did].notes, did
    for did in ("msd_task01_braintumour", "msd_task08_hepaticvessel"):  # MONAI's md5 kept beside the sha256
        assert [a for a, _ in ms[did].files[0].checks] == ["md5", "sha256"] and ms[did].checksums == "md5+sha256"
    assert ms["hipas"].checksums == "sha256 (1 of 2 files)"  # none published for ct_scan.zip
    assert ms["aeropath"].size == "about 5.04 GB" and "aeropath-load-dataset-example.ipynb" in ms["aeropath"].notes
    # the direct ?download=1 URL is torch_em's; the official README gives the record page and DOI only
    notes = " ".join(ms["aeropath"].notes.split())
    assert "does not give a file URL" in notes and "are given in the official README" not in notes


def test_cli_data_list_shows_access_and_license(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    ms = load_manifests()
    assert out.splitlines()[0].split()[-1] == "checksums"
    for m in ms.values():
        line = next(l for l in out.splitlines() if l.split()[0] == m.id)
        assert m.access in line and (m.license or "not stated").split()[0] in line
        assert line.rstrip().endswith(m.checksums or "-"), line


def test_atm22_needs_registration_but_downloads_directly(capsys, tmp_path, monkeypatch):
    m = load_manifests()["atm22"]
    assert m.access == "registration" and m.downloadable and m.download_hosts == ("zenodo.org",)
    assert "atm22.grand-challenge.org/registration" in m.manual
    notes = " ".join(m.notes.split())
    assert "102957" in notes and "ATM-22-Related-Work" in notes and "download directly" in notes
    assert main(["data", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("atm22 "))
    assert "registration (zenodo.org: open download)" in line
    block = dataset_blocks()["atm22"]
    assert "(`atm22`) {bdg-info}`registration`" in block[0]
    assert "* **Access:** registration; the files download directly from zenodo.org" in block
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    assert main(["data", "status", "atm22"]) == 0
    assert "register first, then companion data fetch atm22" in capsys.readouterr().out


def test_ixi_577_cites_the_torchio_version_that_has_it():
    m = load_manifests()["ixi"]
    assert "v1.2.1" in str(m.published_stats["n_subjects_T1_and_T2"]) and "75bf207c" in m.notes


def test_checksum_summary():
    ms = load_manifests()
    assert ms["ixi"].checksums == "md5" and ms["brats2019"].checksums is None


def test_datasets_page_rows_follow_the_manifests():
    page = datasets_markdown()
    assert not any(line.startswith("|") for line in page.splitlines()), "no wide table"
    blocks = dataset_blocks()
    assert set(blocks) == set(load_manifests())
    for m in load_manifests().values():
        assert f"(`{m.id}`)" in blocks[m.id][0] and f"(`{m.id}`)" in page
        assert f"* **Checksums:** {m.checksums or '–'}" in blocks[m.id], m.id


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
