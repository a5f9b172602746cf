"""VesSAP (chapter vpbsd) on a tiny fake release in the layout its manifest expects: WGA channel picked, labels paired,
spacing from the manifest, unlabelled patches on request, clear errors for a missing label or a wrong layout."""
import nibabel as nib
import numpy as np
import pytest
import yaml

from companion.data.loaders import LayoutError, iter_samples
from companion.data.manifests import ManifestError, get_manifest, load_manifests

TRAIN = "software/data/real_training"
CASES = ["brainA_C00_x0_cube", "brainA_C00_x1_cube", "brainB_C00_x0_cube"]  # case ids: names without prep_ / .nii.gz
SHAPE = (8, 8, 4)  # x, y, z: a 500 x 500 x 50 patch in miniature, z last


def _nii(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))  # pixdim 1 1 1, as the public VesSAP example label


def _vol(seed, dtype=np.float32):
    return np.random.default_rng(seed).integers(0, 200, SHAPE).astype(dtype)


@pytest.fixture()
def vessap(tmp_path, monkeypatch):
    """Three annotated patches, both stains as separate files, labels named after the C00 file (vesselFM's reading
    of the release), one file that must not be read, one user-cut unlabelled patch."""
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    root = tmp_path / "vessap"
    for i, case in enumerate(CASES):
        _nii(root / TRAIN / "prep" / f"prep_{case}.nii.gz", _vol(i))  # C00: read as WGA
        _nii(root / TRAIN / "prep" / f"prep_{case.replace('_C00_', '_C01_')}.nii.gz", _vol(i) + 1000)  # other stain
        _nii(root / TRAIN / "gt_all" / f"{case}_DoG026.nii.gz", (_vol(i, np.uint8) > 100).astype(np.uint8))
        _nii(root / TRAIN / "gt_all" / f"{case}_DoG026_classResult.nii.gz", _vol(9, np.uint8))
    _nii(root / "unlabelled" / "brainC_patch001.nii.gz", _vol(7))
    return root


def test_annotated_patches_pair_with_labels_wga_channel_and_spacing(vessap):
    samples = list(iter_samples("vessap", check=False))
    assert [s.case for s in samples] == CASES
    for i, s in enumerate(samples):
        assert np.array_equal(s.image, _vol(i))  # the C00 file, not the C01 one (+1000)
        assert np.array_equal(s.target, _vol(i, np.uint8) > 100)
        assert s.image.shape == SHAPE and s.spacing == (1.625, 1.625, 3.0)  # z last, spacing in the same order
    assert [s.case for s in iter_samples("vessap", split="labelled", check=False)] == CASES


def test_unlabelled_patches_come_separately(vessap):
    (s,) = iter_samples("vessap", split="unlabelled", check=False)
    assert s.case == "brainC_patch001" and s.target is None and s.spacing == (1.625, 1.625, 3.0)
    assert np.array_equal(s.image, _vol(7))
    for p in (vessap / "unlabelled").iterdir():
        p.unlink()
    with pytest.raises(LayoutError, match="no unlabelled image") as exc:
        list(iter_samples("vessap", split="unlabelled", check=False))
    assert "unlabelled/**/*.nii.gz" in str(exc.value) and "fix loader_args" in str(exc.value)
    with pytest.raises(ValueError, match="'labelled'"):
        list(iter_samples("vessap", split="train", check=False))


def test_both_stains_in_one_file_keep_channel_0(vessap):
    """The other likely layout: one 4-D file per patch with both stains (manifest: channel 0)."""
    two = np.stack([_vol(0), _vol(0) + 1000], axis=-1)
    _nii(vessap / TRAIN / "prep" / f"prep_{CASES[0]}.nii.gz", two)
    s = next(iter_samples("vessap", check=False))
    assert s.image.shape == SHAPE and np.array_equal(s.image, _vol(0))


def test_missing_label_says_where_it_was_expected_and_what_to_fix(vessap):
    (vessap / TRAIN / "gt_all" / f"{CASES[1]}_DoG026.nii.gz").unlink()
    with pytest.raises(LayoutError) as exc:
        list(iter_samples("vessap", check=False))
    msg = str(exc.value)
    assert f"gt_all/{CASES[1]}_DoG026.nii.gz" in msg and "label_sub" in msg and "vessap.yaml" in msg


def test_wrong_layout_shows_the_expected_one(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    _nii(tmp_path / "vessap" / "real_training" / "raw_1.nii.gz", _vol(0))  # names the manifest does not expect
    with pytest.raises(LayoutError) as exc:
        list(iter_samples("vessap", check=False))
    msg = str(exc.value)
    assert "no file matches '**/prep/prep_*_C00_*.nii.gz'" in msg
    assert "software/data/real_training" in msg and "fix loader_args" in msg and "vessap.yaml" in msg


def test_not_ready_without_check_false(vessap):
    with pytest.raises(LayoutError, match="not ready"):  # no `companion data fetch` marker yet
        list(iter_samples("vessap"))


def test_manifest_records_its_sources():
    m = get_manifest("vessap")
    assert m.loader == "nifti_pairs" and m.access == "request" and m.license is None
    assert m.loader_args["spacing"] == [1.625, 1.625, 3.0]
    for source in ("vessap/vessap issue #9", "clDice issue #30", "fa21e8c92489f27de4d32178a7634f3fc0d6f339",
                   "02cf71167c740a17645c635bb6e171b655457425", "VesSAP_data_repository_access.pdf"):
        assert source in " ".join(m.notes.split()), source
    assert "unverified" in m.layout


def test_label_sub_that_misses_an_image_is_a_layout_error(tmp_path, monkeypatch):
    """Without this an image whose path label_sub does not match would be paired with itself."""
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    _nii(tmp_path / "topcow2024/TopCoW2024_Data_Release/imagesTr/topcow_ct_001.nii.gz", _vol(0))  # no _0000
    monkeypatch.setenv("COMPANION_MANIFESTS", str(tmp_path / "m"))
    (tmp_path / "m").mkdir()
    m = {"id": "topcow2024", "title": "t", "chapters": ["vessel_data"], "homepage": "x", "access": "open",
         "license": None, "citation": "x", "files": [], "layout": "x", "loader": "nifti_pairs",
         "loader_args": {"images": "TopCoW2024_Data_Release/imagesTr/*.nii.gz",
                         "label_sub": ["/imagesTr/(.*)_0000\\.nii\\.gz$", "/cow_seg_labelsTr/\\1.nii.gz"]}}
    (tmp_path / "m" / "topcow2024.yaml").write_text(yaml.safe_dump(m))
    with pytest.raises(LayoutError, match="does not match image"):
        list(iter_samples("topcow2024", check=False))


@pytest.mark.parametrize("args, complaint", [
    ({"images": "a/*.nii.gz", "channel": -1}, "channel index"),
    ({"images": "a/*.nii.gz", "channel": True}, "channel index"),
    ({"images": "a/*.nii.gz", "spacing": [1.0, 0, 1.0]}, "positive voxel sizes"),
    ({"images": "a/*.nii.gz", "spacing": "1.625 x 1.625 x 3"}, "positive voxel sizes"),
    ({"images": "a/*.nii.gz", "unlabelled_images": []}, "unlabelled_images must be a glob"),
])
def test_new_loader_args_are_checked(tmp_path, args, complaint):
    m = {"id": "bad", "title": "bad", "chapters": ["vessel_data"], "homepage": "x", "access": "open", "license": None,
         "citation": "x", "files": [], "layout": "x", "loader": "nifti_pairs", "loader_args": args}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(m))
    with pytest.raises(ManifestError, match=complaint):
        load_manifests(tmp_path)


def test_unannotated_images_a_release_holds_come_with_split_unlabelled(tmp_path, monkeypatch):
    """General: with unlabelled: skip (TopCoW 2024) the images without their label file are the unlabelled split."""
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    rel = tmp_path / "topcow2024/TopCoW2024_Data_Release"
    _nii(rel / "imagesTr/topcow_ct_001_0000.nii.gz", _vol(0))
    _nii(rel / "cow_seg_labelsTr/topcow_ct_001.nii.gz", _vol(0, np.uint8))
    _nii(rel / "imagesTr/topcow_mr_901_0000.nii.gz", _vol(1))  # an unannotated validation image
    assert [s.case for s in iter_samples("topcow2024", check=False)] == ["topcow_ct_001"]
    (s,) = iter_samples("topcow2024", split="unlabelled", check=False)
    assert s.case == "topcow_mr_901" and s.target is None
