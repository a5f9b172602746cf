"""The ten real public datasets (issue 23): manifests against the team's local copies, and companion.data.real on
the real files. Expected shapes, spacings, label values and voxel counts are transcribed from the copies'
provenance record (sources.yaml). Without a mirror or network the file tests skip with the fetch command."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from companion.data import real
from companion.data.integrity import DataAccessError, file_problem
from companion.data.manifests import load_manifests

REAL = ["vesselmnist3d", "topcow_roi", "airquant_airway", "niivue_mra", "vesselexpress_lightsheet",
        "vessel_express_napari_liver", "voxelmorph_test_scan", "synthseg_labels", "deepmedic_brats2015", "stroke_mri"]
NON_COMMERCIAL = {"niivue_mra", "deepmedic_brats2015", "topcow_roi"}


def _shared() -> Path | None:
    """The local copies: a $COMPANION_MIRROR folder holding SHA256SUMS, else ../shared/data beside the repository."""
    candidates = [Path(p) for p in os.environ.get("COMPANION_MIRROR", "").split(os.pathsep) if p]
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    return next((c for c in candidates if (c / "SHA256SUMS").is_file()), None)


def test_every_real_dataset_has_a_manifest_with_origin_licence_and_caveats():
    ms = load_manifests()
    for did in REAL:
        m = ms[did]
        assert m.access == "open" and m.files and m.license and m.license_stated_in and m.caveats, did
        assert all(rf.hashes and rf.size_bytes for rf in m.local_files()), did
        assert all("sha256" in dict(rf.checks) for rf in m.local_files()), did
        commit = m.origin.get("commit")
        if m.origin.get("type") == "github":
            assert all(commit in rf.url for rf in m.files), did  # raw URLs pinned at the recorded commit
    assert ms["vesselmnist3d"].files[0].url.startswith("https://zenodo.org/records/10519652/")
    sdist = ms["vessel_express_napari_liver"].files[0]
    assert sdist.url.startswith("https://files.pythonhosted.org/") and sdist.extract == "tar.gz"
    assert [mem.member for mem in sdist.members][0].endswith("src/vessel_express/_tests/images/Raw_liver_1.tiff")
    for did in NON_COMMERCIAL:
        assert "NC" in ms[did].license or "commercial" in ms[did].license, did
    caveats = {did: " ".join(ms[did].caveats) for did in REAL}
    assert "136 to 4 and 163 to 43" in caveats["synthseg_labels"]
    assert "> 0.5" in caveats["deepmedic_brats2015"]
    masks = [v for v in ms["deepmedic_brats2015"].volumes if v["file"].endswith("brainmask.nii.gz")]
    assert len(masks) == 6 and all(v["kind"] == "mask" and v["threshold"] == 0.5 for v in masks)
    assert "Mask origin not stated" in caveats["vesselexpress_lightsheet"]
    assert "test fixtures" in caveats["topcow_roi"]


@pytest.mark.parametrize("dataset_id", REAL)
def test_manifest_checksums_match_the_local_copies(dataset_id):
    shared = _shared()
    if shared is None:
        pytest.skip("the team's local copies (../shared/data with SHA256SUMS) are not on this machine")
    m = load_manifests()[dataset_id]
    sums = {}
    for line in (shared / "SHA256SUMS").read_text().splitlines():
        digest, _, rel = line.partition("  ")
        folder, _, name = rel.partition("/")
        if folder == m.mirror_name:
            sums[name] = digest
    listed = {rf.name: rf for rf in m.local_files()}
    assert set(listed) == set(sums), f"{dataset_id}: manifest and SHA256SUMS list different files"
    for name, rf in listed.items():
        assert dict(rf.checks)["sha256"] == sums[name], name
        assert file_problem(shared / m.mirror_name / name, rf) is None  # size, md5 and sha256 of the bytes


def test_load_before_fetch_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    with pytest.raises(DataAccessError, match="companion data fetch topcow_roi"):
        real.load("topcow_roi")
    with pytest.raises(DataAccessError, match="companion data fetch vesselmnist3d"):
        real.load_vesselmnist3d()
    with pytest.raises(ValueError, match="load_vesselmnist3d"):
        real.names("vesselmnist3d")
    with pytest.raises(KeyError, match="topcow_mr_roi_003.nii.gz"):
        real.load("topcow_roi", "nope.nii.gz")
    assert tmp_path.exists() and not any(tmp_path.iterdir())  # nothing fetched, nothing written


# (dataset, volume) -> (shape, spacing or None, label values or None, value range or None, non-zero voxels)
EXPECTED = {
    ("topcow_roi", "topcow_mr_roi_003.nii.gz"): ((146, 121, 35), (0.296875, 0.296875, 0.6), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], None, 36405),
    ("topcow_roi", "topcow_mr_roi_014.nii.gz"): ((130, 125, 32), (0.296875, 0.296875, 0.600002), [0, 1, 2, 3, 4, 6, 7, 10, 11, 12, 15], None, 27290),
    ("topcow_roi", "topcow_mr_roi_023.nii.gz"): ((168, 122, 43), (0.296875, 0.296875, 0.6), [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12], None, 34241),
    ("topcow_roi", "topcow_ct_roi_003.nii.gz"): ((86, 69, 30), (0.503906, 0.503906, 0.75), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], None, 7751),
    ("topcow_roi", "topcow_ct_roi_014.nii.gz"): ((74, 59, 31), (0.552734, 0.552734, 0.75), [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 15], None, 4498),
    ("topcow_roi", "topcow_ct_roi_023.nii.gz"): ((113, 81, 31), (0.419922, 0.419922, 0.700012), [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12], None, 8041),
    ("topcow_roi", "LPS_ACA_flipped.nii.gz"): ((86, 69, 30), (0.503906, 0.503906, 0.75), [0, 1, 2, 3, 6, 11, 12], None, 4331),
    ("topcow_roi", "LPS_ICA_PCA_flipped.nii.gz"): ((168, 122, 43), (0.296875, 0.296875, 0.6), [0, 1, 2, 3, 4, 6], None, 6803),
    ("airquant_airway", "github_demo_seg.nii.gz"): ((512, 512, 130), (0.664062, 0.664062, 3.0), [0, 1], None, 51005),
    ("niivue_mra", "chris_MRA.nii.gz"): ((200, 256, 120), (0.520833, 0.520834, 0.65), None, (0.0, 254.0), 63447),
    ("niivue_mra", "chris_PD.nii.gz"): ((191, 256, 54), (0.857875, 0.859375, 2.399997), None, (0.0, 252.0), 1672957),
    ("vesselexpress_lightsheet", "000.tif"): ((100, 100, 100), None, None, (258, 21444), 1000000),
    ("vesselexpress_lightsheet", "Binary_000.tif"): ((100, 100, 100), None, [0, 1], None, 66323),  # stored 0/255
    ("vessel_express_napari_liver", "Raw_liver_1.tiff"): ((51, 130, 130), None, None, (0, 29550), 846835),
    ("synthseg_labels", "training_seg_01.nii.gz"): ((256, 256, 256), (1.0, 1.0, 1.0), [0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 25, 26, 28, 30, 41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 57, 58, 60, 62, 72, 85, 136, 137, 163, 164, 502, 506, 507, 508, 509, 511, 512, 514, 515, 516, 530], None, 4376109),  # noqa: E501  stored float32
    ("synthseg_labels", "training_seg_02.nii.gz"): ((256, 256, 256), (1.0, 1.0, 1.0), [0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 25, 26, 28, 30, 41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 57, 58, 60, 62, 85, 136, 137, 163, 164, 502, 506, 507, 508, 509, 511, 512, 514, 515, 516, 530], None, 3920660),  # noqa: E501  stored int32
    ("deepmedic_brats2015", "test/brats_2013_pat0001_1/Flair_subtrMeanDivStd.nii.gz"): ((240, 240, 155), (1.0, 1.0, 1.0), None, (-3.624394, 9.155817), 8928000),
    ("deepmedic_brats2015", "test/brats_2013_pat0001_1/OTMultiClass.nii.gz"): ((240, 240, 155), (1.0, 1.0, 1.0), [0, 1, 2, 3, 4], None, 111724),
    ("deepmedic_brats2015", "test/brats_2013_pat0001_1/brainmask.nii.gz"): ((240, 240, 155), (1.0, 1.0, 1.0), [0, 1], None, 1487565),
    ("stroke_mri", "T1.nii.gz"): ((124, 160, 140), (1.0, 1.0, 1.0), None, (0.0, 252.0), 1088315),
    ("stroke_mri", "T2.nii.gz"): ((124, 160, 140), (1.0, 1.0, 1.0), None, (0.0, 503.968657), 1137561),
    ("stroke_mri", "FLAIR.nii.gz"): ((124, 160, 140), (1.0, 1.0, 1.0), None, (0.0, 255.0), 1069777),
}


@pytest.mark.parametrize("dataset_id, name", list(EXPECTED), ids=[f"{d}:{n.rsplit('/', 1)[-1]}" for d, n in EXPECTED])
def test_real_volume_as_recorded(real_dataset, dataset_id, name):
    real_dataset(dataset_id)
    shape, spacing, values, value_range, nonzero = EXPECTED[(dataset_id, name)]
    v = real.load(dataset_id, name)
    assert name in real.names(dataset_id) and v.source == f"{dataset_id}/{name}"
    assert v.array.shape == shape
    if spacing is None:
        assert v.spacing is None
    else:
        assert v.spacing == pytest.approx(spacing, abs=2e-6)
    assert int(np.count_nonzero(v.array)) == nonzero
    if v.kind == "image":
        assert values is None and (float(v.array.min()), float(v.array.max())) == pytest.approx(value_range, abs=1e-5)
    else:
        assert v.array.dtype == (bool if v.kind == "mask" else np.int32)
        assert np.unique(v.array).astype(int).tolist() == values
        assert v.labels is not None and set(v.labels) >= ({0, 1} if v.kind == "mask" else set()), v.labels


def test_label_names_as_published(real_dataset):
    real_dataset("synthseg_labels")
    real_dataset("topcow_roi")
    real_dataset("deepmedic_brats2015")
    seg = real.load("synthseg_labels", "training_seg_02.nii.gz")
    assert seg.labels[4] == "left lateral ventricle" and seg.labels[43] == "right lateral ventricle"
    assert len(seg.labels) == 33 and 136 not in seg.labels  # generation label, mapped to 4 by SynthSeg
    assert real.load("topcow_roi").labels[15] == "3rd-A2"
    brats = real.load("deepmedic_brats2015", "train/brats_2013_pat0005_1/OTMultiClass.nii.gz")
    assert brats.labels[4] == "enhancing tumour" and brats.kind == "labels"
    assert len(real.names("synthseg_labels")) == 20 and len(real.names("deepmedic_brats2015")) == 24


def test_voxelmorph_scan_and_labels(real_dataset):
    real_dataset("voxelmorph_test_scan")
    vol = real.load("voxelmorph_test_scan", "test_scan.npz:vol")
    seg = real.load("voxelmorph_test_scan", "test_scan.npz:seg")
    assert vol.array.shape == seg.array.shape == (160, 192, 224) and vol.spacing is None and seg.spacing is None
    assert vol.array.min() == 0.0 and vol.array.max() == pytest.approx(0.976471, abs=1e-6)
    assert seg.array.dtype == np.int32 and {4, 43} <= set(np.unique(seg.array).tolist())
    assert np.unique(seg.array).tolist() == [0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 24, 26, 28, 30,
                                             31, 41, 42, 43, 44, 46, 47, 49, 50, 51, 52, 53, 54, 58, 60, 62, 63, 72,
                                             77, 80, 85, 251, 252, 253, 254, 255]


def test_vesselmnist3d_splits(real_dataset):
    real_dataset("vesselmnist3d")
    counts = {"train": (1335, 150), "val": (191, 22), "test": (382, 43)}  # (samples, aneurysms)
    for split, (n, aneurysms) in counts.items():
        images, labels = real.load_vesselmnist3d(size=28, split=split)
        assert images.shape == (n, 28, 28, 28) and images.dtype == bool
        assert labels.shape == (n,) and set(labels.tolist()) == {0, 1} and int(labels.sum()) == aneurysms
    images, labels = real.load_vesselmnist3d(size=64, split="val")
    assert images.shape == (191, 64, 64, 64) and int(labels.sum()) == 22 and images.any()
    with pytest.raises(ValueError, match="64 or 28"):
        real.load_vesselmnist3d(size=32)


def test_datasets_page_gives_licence_use_and_caveats_without_local_paths():
    from companion.build import dataset_blocks, datasets_markdown

    blocks = dataset_blocks()
    for did in REAL:
        text = "\n".join(blocks[did])
        for field in ("* **License:**", "* **License stated in:**", "* **Use:**", "* **Caveats:**", "* **Chapters:**"):
            assert field in text, (did, field)
    page = datasets_markdown() + (Path(__file__).resolve().parents[2] / "book" / "datasets.md").read_text()
    assert "shared/data" not in page and "/work/" not in page and "sources.yaml" not in page
