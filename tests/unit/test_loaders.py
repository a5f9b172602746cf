"""Dataset loaders on tiny fixture files written in each dataset's published layout."""
import nibabel as nib
import numpy as np
import pytest
import yaml

from companion.data.loaders import LayoutError, iter_samples
from companion.data.manifests import ManifestError, load_manifests


def _nii(path, arr, zooms=(0.5, 0.5, 0.5)):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, np.diag([*zooms, 1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


@pytest.fixture()
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    return tmp_path


def _vol(seed, shape=(8, 9, 10)):
    return np.random.default_rng(seed).integers(0, 2, shape).astype(np.uint8)


# dataset id -> (image path, label path) of two cases, relative to $COMPANION_DATA/<id>/
NIFTI_LAYOUTS = {
    "atm22": [("TrainBatch1/imagesTr/ATM_001_0000.nii.gz", "TrainBatch1/labelsTr/ATM_001_0000.nii.gz"),
              ("TrainBatch2/imagesTr/ATM_164_0000.nii.gz", "TrainBatch2/labelsTr/ATM_164_0000.nii.gz")],
    "aeropath": [("AeroPath/1/1_CT_HR.nii.gz", "AeroPath/1/1_CT_HR_label_airways.nii.gz"),
                 ("AeroPath/2/2_CT_HR.nii.gz", "AeroPath/2/2_CT_HR_label_airways.nii.gz")],
    "msd_task08_hepaticvessel": [
        ("Task08_HepaticVessel/imagesTr/hepaticvessel_001.nii.gz",
         "Task08_HepaticVessel/labelsTr/hepaticvessel_001.nii.gz"),
        ("Task08_HepaticVessel/imagesTr/hepaticvessel_002.nii.gz",
         "Task08_HepaticVessel/labelsTr/hepaticvessel_002.nii.gz")],
    "topcow2024": [("TopCoW2024_Data_Release/imagesTr/topcow_ct_001_0000.nii.gz",
                    "TopCoW2024_Data_Release/cow_seg_labelsTr/topcow_ct_001.nii.gz"),
                   ("TopCoW2024_Data_Release/imagesTr/topcow_mr_001_0000.nii.gz",
                    "TopCoW2024_Data_Release/cow_seg_labelsTr/topcow_mr_001.nii.gz")],
    "neurite_oasis": [("OASIS_OAS1_0001_MR1/aligned_norm.nii.gz", "OASIS_OAS1_0001_MR1/aligned_seg35.nii.gz"),
                      ("OASIS_OAS1_0002_MR1/aligned_norm.nii.gz", "OASIS_OAS1_0002_MR1/aligned_seg35.nii.gz")],
    "brats2019": [("HGG/BraTS19_A_1/BraTS19_A_1_flair.nii.gz", "HGG/BraTS19_A_1/BraTS19_A_1_seg.nii.gz"),
                  ("HGG/BraTS19_B_2/BraTS19_B_2_flair.nii.gz", "HGG/BraTS19_B_2/BraTS19_B_2_seg.nii.gz")],
}
CASES = {"atm22": ["ATM_001_0000", "ATM_164_0000"], "aeropath": ["1", "2"],
         "msd_task08_hepaticvessel": ["hepaticvessel_001", "hepaticvessel_002"],
         "topcow2024": ["topcow_ct_001", "topcow_mr_001"],
         "neurite_oasis": ["OASIS_OAS1_0001_MR1", "OASIS_OAS1_0002_MR1"],
         "brats2019": ["BraTS19_A_1", "BraTS19_B_2"]}


@pytest.mark.parametrize("dataset", list(NIFTI_LAYOUTS))
def test_nifti_layouts(data, dataset):
    root = data / dataset
    for i, (img, lab) in enumerate(NIFTI_LAYOUTS[dataset]):
        _nii(root / img, _vol(i).astype(np.float32) * 100)
        _nii(root / lab, _vol(i))
    first = root / NIFTI_LAYOUTS[dataset][0][0]
    _nii(first.with_name("._" + first.name), _vol(9))  # a macOS companion file (as in MSD archives): skipped
    samples = list(iter_samples(dataset, check=False))
    assert [s.case for s in samples] == CASES[dataset]
    for i, s in enumerate(samples):
        assert np.array_equal(s.target, _vol(i)) and np.allclose(s.image, _vol(i) * 100)
        assert s.spacing == (0.5, 0.5, 0.5)
    assert len(list(iter_samples(dataset, check=False, limit=1))) == 1


def test_topcow_unannotated_validation_images_are_skipped(data):
    """TopCoW 2024 also ships 10 unannotated validation images: they are not paired with labels, wherever they sit."""
    root = data / "topcow2024"
    for i, (img, lab) in enumerate(NIFTI_LAYOUTS["topcow2024"]):
        _nii(root / img, _vol(i))
        _nii(root / lab, _vol(i))
    for n in range(1, 11):  # unannotated: images without a cow_seg label
        _nii(root / f"TopCoW2024_Data_Release/imagesTr/topcow_{'ct' if n % 2 else 'mr'}_{900 + n}_0000.nii.gz", _vol(n))
    samples = list(iter_samples("topcow2024", check=False))
    assert [s.case for s in samples] == CASES["topcow2024"]
    assert all(s.target is not None for s in samples)


def test_skipping_unlabelled_images_still_needs_some_labels(data):
    _nii(data / "topcow2024/TopCoW2024_Data_Release/imagesTr/topcow_ct_001_0000.nii.gz", _vol(0))
    with pytest.raises(LayoutError, match="none of the 1 image"):
        list(iter_samples("topcow2024", check=False))


@pytest.mark.parametrize("top", ["", "MICCAI_BraTS_2019_Data_Training/"])
def test_brats2019_read_as_extracted_or_one_folder_up(data, top):
    root = data / "brats2019"
    for i, (img, lab) in enumerate(NIFTI_LAYOUTS["brats2019"]):
        _nii(root / (top + img), _vol(i))
        _nii(root / (top + lab), _vol(i))
    samples = list(iter_samples("brats2019", check=False))
    assert [s.case for s in samples] == CASES["brats2019"]
    assert [s.path for s in samples] == [top + img for img, _ in NIFTI_LAYOUTS["brats2019"]]


def test_brats2019_at_both_depths_is_refused(data):
    root = data / "brats2019"
    for top in ("", "MICCAI_BraTS_2019_Data_Training/"):
        img, lab = NIFTI_LAYOUTS["brats2019"][0]
        _nii(root / (top + img), _vol(0))
        _nii(root / (top + lab), _vol(0))
    with pytest.raises(LayoutError, match="case 'BraTS19_A_1' found twice"):
        list(iter_samples("brats2019", check=False))


def test_missing_label_and_missing_files_are_clear(data):
    _nii(data / "atm22/TrainBatch1/imagesTr/ATM_001_0000.nii.gz", _vol(0))
    with pytest.raises(LayoutError, match="labelsTr/ATM_001_0000.nii.gz"):
        list(iter_samples("atm22", check=False))
    with pytest.raises(LayoutError, match="Expected layout"):
        list(iter_samples("aeropath", check=False))
    with pytest.raises(LayoutError, match="not ready"):  # check=True verifies against the manifest first
        list(iter_samples("atm22"))


def test_hipas_npz_layout(data):
    root = data / "hipas"
    for i in (1, 2):
        for sub, arr in (("ct_scan", _vol(i) * 7), ("annotation/artery", _vol(i)), ("annotation/vein", _vol(5))):
            (root / sub).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(root / sub / f"{i:03d}.npz", data=arr)
    samples = list(iter_samples("hipas", check=False))
    assert [s.case for s in samples] == ["001", "002"]
    assert np.array_equal(samples[1].target, _vol(2)) and np.array_equal(samples[1].image, _vol(2) * 7)


def test_vesselmnist3d_npz(data):
    root = data / "vesselmnist3d"
    root.mkdir()
    arrays = {f"{s}_images": _vol(3, (4, 64, 64, 64)) for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.array([[0], [1], [0], [1]]) for s in ("train", "val", "test")})
    np.savez(root / "vesselmnist3d_64.npz", **arrays)
    samples = list(iter_samples("vesselmnist3d", split="val", check=False))
    assert [s.target for s in samples] == [0, 1, 0, 1] and samples[0].image.shape == (64, 64, 64)
    with pytest.raises(ValueError, match="train, val or test"):
        list(iter_samples("vesselmnist3d", split="dev", check=False))


def test_every_loader_has_its_arguments():
    for m in load_manifests().values():
        if m.loader == "none":
            continue
        if m.loader == "real_volumes":  # companion.data.real reads the manifest's volumes
            assert m.volumes and not m.loader_args, m.id
            continue
        assert m.loader_args.get("images") or m.loader_args.get("file"), m.id


@pytest.mark.parametrize("args, complaint", [
    ({"images": []}, "non-empty list of globs"),
    ({"images": ["a/*.nii.gz", 3]}, "non-empty list of globs"),
    ({"images": "a/*.nii.gz", "unlabelled": "ignore", "label_sub": ["a", "b"]}, "'error' or 'skip'"),
    ({"images": "a/*.nii.gz", "unlabelled": "skip"}, "needs label_sub"),
])
def test_bad_loader_args_are_refused(tmp_path, monkeypatch, args, complaint):
    m = {"id": "bad", "title": "bad", "chapters": ["vessel_data"], "homepage": "x", "access": "open", "license": None,
         "citation": "x", "files": [], "layout": "x", "loader": "nifti_pairs", "loader_args": args}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(m))
    with pytest.raises(ManifestError, match="loader_args") as exc:
        load_manifests(tmp_path)
    assert complaint in str(exc.value)


def test_no_loader_is_a_clear_error():
    with pytest.raises(ValueError, match="no loader"):
        next(iter_samples("pulmonary_av", check=False))
