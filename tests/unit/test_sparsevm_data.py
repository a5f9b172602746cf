"""Chapter 4 data: the MNI152 atlas and its ventricle labels, the synthetic sparse subjects (deterministic, labels
that follow the warp, invertible deformations, the acquisition's slice fraction and masks, lesion burden), argument
checks, the neurite-OASIS path on a fake release, and dipy's thick-slice scan."""
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from companion.data.loaders import LayoutError
from companion.sparsevm.data import (ATLAS_SOURCE, Atlas, Subject, _deformation, _subject_map, _template,
                                     _to_sar, _ventricle_ids, aniso_example, load_atlas, load_dataset, make_subject,
                                     subject_set)

SMALL = dict(atlas_spacing_mm=3.0, shape=(40, 52, 40))  # 120 x 156 x 120 mm: the ventricles and most of the brain
CLEAN = dict(bias=0.0, noise=0.0, lesion_load=0.0)


@pytest.fixture(scope="module")
def atlas2() -> Atlas:
    return load_atlas(2.0, (72, 88, 72))


def _centroid_x(labels, k):
    return np.argwhere(labels == k)[:, 2].mean()


# --- atlas ------------------------------------------------------------------------------------------------------------
def test_template_ventricles_are_plausible():
    t = _template()
    assert t.image.shape == (189, 233, 197)  # (S, A, R)
    for k in (1, 2):
        ml = (t.labels == k).sum() / 1000  # 1 mm voxels
        assert 5 <= ml <= 25, f"ventricle {k}: {ml} ml"
    assert t.brain[t.labels > 0].all()
    assert _centroid_x(t.labels, 1) < t.midline < _centroid_x(t.labels, 2)  # axis 2 runs left -> right
    z, y, _ = np.argwhere(t.labels > 0).mean(axis=0)
    assert 60 < z < 110 and 90 < y < 140  # deep, central (not sulcal CSF)


def test_atlas_on_working_grid(atlas2):
    a = atlas2
    assert a.image.shape == a.labels.shape == a.brain.shape == (72, 88, 72)
    assert a.image.dtype == np.float32 and a.labels.dtype == np.uint8 and a.brain.dtype == bool
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0 and a.image.max() > 0.9
    assert a.spacing_mm == 2.0 and a.source == ATLAS_SOURCE and "/" not in a.source[:1]
    assert set(np.unique(a.labels)) == {0, 1, 2}
    assert a.brain[a.labels > 0].all()
    assert _centroid_x(a.labels, 1) < (a.labels.shape[2] - 1) / 2 < _centroid_x(a.labels, 2)
    for k in (1, 2):
        assert 5 <= (a.labels == k).sum() * 8 / 1000 <= 25
    # ventricles are CSF-dark, the box is centred on the brain
    assert a.image[a.labels > 0].mean() < 0.5 * np.median(a.image[a.brain])
    lo_hi = [np.flatnonzero(a.brain.any(axis=tuple(j for j in range(3) if j != i)))[[0, -1]] for i in range(3)]
    for (lo, hi), n in zip(lo_hi, a.brain.shape):
        assert abs((lo + hi) / 2 - (n - 1) / 2) <= 1.5
    one = load_atlas(1.0, (40, 40, 40))  # 1 mm: samples template voxels exactly
    assert one.image.shape == (40, 40, 40) and one.image.max() <= 1.0


# --- synthetic subjects -----------------------------------------------------------------------------------------------
def test_subject_fields_and_determinism():
    s = make_subject(seed=7, index=1, **SMALL)
    assert isinstance(s, Subject) and s.name == "subject-001"
    for arr in (s.image, s.mask, s.dense, s.nearest):
        assert arr.shape == (40, 52, 40) and arr.dtype == np.float32
    assert s.labels.shape == (40, 52, 40) and s.labels.dtype == np.uint8
    assert s.acquired.shape == (40,) and s.acquired.dtype == bool
    assert 5.0 <= s.slice_mm <= 7.0
    assert 0.0 <= s.dense.min() and s.dense.max() <= 1.0
    same = make_subject(seed=7, index=1, **SMALL)
    for name in ("image", "mask", "labels", "acquired", "dense", "nearest"):
        assert np.array_equal(getattr(s, name), getattr(same, name)), name
    assert (s.slice_mm, s.lesion_load) == (same.slice_mm, same.lesion_load)
    other = make_subject(seed=7, index=2, **SMALL)
    assert not np.array_equal(s.dense, other.dense) and not np.array_equal(s.labels, other.labels)
    assert not np.array_equal(s.dense, make_subject(seed=8, index=1, **SMALL).dense)
    subjects = subject_set(3, spacing_mm=3.0, shape=(40, 52, 40), seed=7)
    assert [x.name for x in subjects] == ["subject-000", "subject-001", "subject-002"]
    assert np.array_equal(subjects[1].image, s.image)


def test_labels_follow_the_warp():
    t = _template()
    s = make_subject(seed=3, index=4, **SMALL, **CLEAN)
    phi = _subject_map(3.0, (40, 52, 40), 3, 4)  # subject voxel centres -> atlas mm
    assert np.array_equal(s.labels, ndi.map_coordinates(t.labels, phi, order=0))
    # the image moved with the labels: dark in the subject's ventricles, and correlated with the warped template
    brain = s.dense > 0
    assert s.dense[s.labels > 0].mean() < 0.7 * np.median(s.dense[brain])  # partial volume at 3 mm
    shifted = np.roll(s.labels, 4, axis=1)  # 12 mm off
    assert s.dense[shifted > 0].mean() > s.dense[s.labels > 0].mean() + 0.1
    warped = ndi.map_coordinates(t.image, phi, order=1)
    unwarped = load_atlas(3.0, (40, 52, 40)).image
    r_warped = np.corrcoef(s.dense[brain], warped[brain])[0, 1]
    r_unwarped = np.corrcoef(s.dense[brain], unwarped[brain])[0, 1]
    assert r_warped > 0.9 and r_warped > r_unwarped + 0.02


@pytest.mark.parametrize("seed,index,warp_mm,scale", [(0, 0, 4.0, (1.0, 1.6)), (1, 3, 10.0, 2.0),
                                                      (2, 5, 20.0, 0.9)])
def test_deformation_is_invertible(seed, index, warp_mm, scale):
    phi = _deformation(seed, index, warp_mm, scale if isinstance(scale, tuple) else (scale, scale))
    step = 2.5  # mm; the template's extent
    axes = [np.arange(0.0, 189.0, step), np.arange(0.0, 233.0, step), np.arange(0.0, 197.0, step)]
    m = phi.on_grid(axes).astype(np.float64)
    jac = np.stack([np.stack(np.gradient(m[i], step), axis=-1) for i in range(3)], axis=-2)
    det = np.linalg.det(jac)
    assert det.min() > 0.02, det.min()
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    far = np.linalg.norm(grid - phi.hull.centre.reshape(3, 1, 1, 1), axis=0) > 140  # beyond the enlargement
    assert np.linalg.norm(m - grid, axis=0)[far].max() <= warp_mm + 1e-3


@pytest.mark.parametrize("alpha", [1.0, 1.6])
def test_ventricles_enlarge_by_alpha_cubed(atlas2, alpha):
    s = make_subject(2.0, (72, 88, 72), 5, 0, warp_mm=0.0, ventricle_scale=alpha, **CLEAN)
    ratio = (s.labels > 0).sum() / (atlas2.labels > 0).sum()
    assert abs(ratio / alpha**3 - 1) < 0.12, ratio
    assert _centroid_x(s.labels, 1) < _centroid_x(s.labels, 2)


def test_sparse_acquisition_at_1mm_keeps_one_slice_in_k():
    fractions = []
    for i in range(6):
        s = make_subject(1.0, (90, 24, 24), 11, i, **CLEAN)
        k = round(s.slice_mm)
        kept = s.acquired.mean()
        assert abs(kept - 1 / k) <= 1 / 90 + 1e-9
        fractions.append(kept)
        m = s.mask[:, 0, 0]
        assert np.array_equal(m == 1, s.acquired)  # 1 exactly on the acquired slices
        assert np.array_equal(s.image[s.acquired], s.dense[s.acquired])  # acquired slices are exact copies
        assert np.array_equal(s.nearest[s.acquired], s.dense[s.acquired])
    assert all(0.13 <= f <= 0.21 for f in fractions)


def test_mask_is_continuous_after_resampling():
    for spacing, shape in [(3.0, (40, 20, 20)), (2.5, (40, 20, 20))]:
        s = make_subject(spacing, shape, 2, 0, **CLEAN)
        assert 0.0 <= s.mask.min() and s.mask.max() <= 1.0
        assert ((s.mask > 0) & (s.mask < 1)).any()
        assert (s.mask[s.acquired] > 0).all()
        assert s.acquired.any() and not s.acquired.all()
        assert np.ptp(s.mask, axis=(1, 2)).max() == 0  # one confidence per slice


def test_lesion_load_is_realised_and_brightens_white_matter():
    s = make_subject(seed=9, index=0, lesion_load=(0.03, 0.04), bias=0.0, noise=0.0, **SMALL)
    assert 0.03 - 1e-3 <= s.lesion_load <= 0.04 + 1e-3
    clean = make_subject(seed=9, index=0, lesion_load=0.0, bias=0.0, noise=0.0, **SMALL)
    assert clean.lesion_load == 0.0
    diff = s.dense - clean.dense  # same draws apart from the lesion target: lesions only brighten
    assert diff.min() >= -1e-6 and (diff > 0.02).mean() > 0.005
    assert np.array_equal(s.labels, clean.labels)
    loads = [x.lesion_load for x in subject_set(4, spacing_mm=3.0, shape=(40, 52, 40), seed=1)]
    assert all(0.0 <= v <= 0.04 + 1e-3 for v in loads)


@pytest.mark.parametrize("kwargs,complaint", [
    (dict(shape=(40, 52)), "three positive integers"),
    (dict(shape=(40, 0, 40)), "three positive integers"),
    (dict(shape=(40.0, 52, 40)), "three positive integers"),
    (dict(atlas_spacing_mm=0.5), "spacing_mm must be a number >= 1"),
    (dict(atlas_spacing_mm=float("nan")), "spacing_mm"),
    (dict(slice_mm=(7.0, 5.0)), "low <= high"),
    (dict(slice_mm=(2.0, 4.0)), "must not be closer than spacing_mm"),
    (dict(slice_mm=(0.5, 4.0), atlas_spacing_mm=1.0, shape=(40, 52, 40)), "slice_mm[0] must be a number >= 1"),
    (dict(shape=(2, 52, 40)), "less than the largest slice spacing"),
    (dict(warp_mm=-1.0), "warp_mm"),
    (dict(ventricle_scale=(0.5, 1.0)), "ventricle_scale[0] must be a number in [0.9, 2.0]"),
    (dict(lesion_load=(0.0, 0.5)), "lesion_load[1]"),
    (dict(bias=2.0), "bias"),
    (dict(noise=-0.1), "noise"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(index=1.5), "index must be a non-negative integer"),
])
def test_bad_parameters(kwargs, complaint):
    args = dict(SMALL, seed=0, index=0) | kwargs
    with pytest.raises(ValueError) as exc:
        make_subject(**args)
    assert complaint in str(exc.value)


def test_bad_parameters_elsewhere():
    with pytest.raises(ValueError, match="three positive integers"):
        load_atlas(2.0, (10, 10))
    with pytest.raises(ValueError, match="spacing_mm"):
        load_atlas(0.0, (10, 10, 10))
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        subject_set(-1, spacing_mm=3.0, shape=(40, 52, 40), seed=0)
    with pytest.raises(ValueError, match="warp_mm"):
        subject_set(2, spacing_mm=3.0, shape=(40, 52, 40), seed=0, warp_mm=100.0)
    with pytest.raises(ValueError, match="unknown for SparseVM"):
        load_dataset("oasis", spacing_mm=2.0, shape=(24, 32, 24), limit=1, seed=0)
    with pytest.raises(ValueError, match="only slice_mm"):
        load_dataset("neurite_oasis", spacing_mm=2.0, shape=(24, 32, 24), limit=1, seed=0, warp_mm=3.0)


# --- neurite-OASIS on a fake release ----------------------------------------------------------------------------------
LIA = np.array([[-1.0, 0, 0, 24], [0, 0, 1, -32], [0, -1, 0, 28], [0, 0, 0, 1]])  # axis 0 -> left, 1 -> inferior
SEG35 = "#$Id: fake colour table\n  0  Unknown  0 0 0 0\n  3  Left-Lateral-Ventricle  120 18 134 0\n" \
        " 22  Right-Lateral-Ventricle  120 18 134 0\n"


def _fake_case(root, case, rng):
    """A 48 x 56 x 64 LIA volume: an ellipsoidal brain, two dark ventricles in its superior half."""
    i, j, k = np.meshgrid(np.arange(48), np.arange(56), np.arange(64), indexing="ij")
    brain = ((i - 24) / 20) ** 2 + ((j - 28) / 24) ** 2 + ((k - 32) / 28) ** 2 <= 1
    seg = np.where(brain, 2, 0).astype(np.int32)
    left = (np.abs(i - 32) <= 3) & (np.abs(j - 20) <= 4) & (np.abs(k - 32) <= 10)  # high axis-0 index = left
    right = (np.abs(i - 16) <= 3) & (np.abs(j - 20) <= 4) & (np.abs(k - 32) <= 10)
    seg[left], seg[right] = 3, 22
    image = np.where(brain, 0.8, 0.0) + 0.02 * rng.standard_normal(brain.shape) * brain
    image[left | right] = 0.2
    folder = root / case
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(image.astype(np.float32), LIA), str(folder / "aligned_norm.nii.gz"))
    nib.save(nib.Nifti1Image(seg, LIA), str(folder / "aligned_seg35.nii.gz"))


@pytest.fixture()
def oasis(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    root = tmp_path / "neurite_oasis"
    rng = np.random.default_rng(0)
    for n in (3, 1, 2):
        _fake_case(root, f"OASIS_OAS1_{n:04d}_MR1", rng)
    (root / "seg35_labels.txt").write_text(SEG35)
    return root


def test_load_dataset_on_a_fake_release(oasis):
    atlas, subjects = load_dataset("neurite_oasis", spacing_mm=2.0, shape=(24, 32, 24), limit=2, seed=0,
                                   check=False)
    assert atlas.image.shape == (24, 32, 24) and atlas.source == "neurite_oasis: OASIS_OAS1_0001_MR1"
    assert [s.name for s in subjects] == ["OASIS_OAS1_0002_MR1", "OASIS_OAS1_0003_MR1"]
    for labels in [atlas.labels] + [s.labels for s in subjects]:
        assert set(np.unique(labels)) == {0, 1, 2}
        assert _centroid_x(labels, 1) < _centroid_x(labels, 2)  # left ventricle on the left (axis 2 L -> R)
        assert np.argwhere(labels > 0)[:, 0].mean() > (labels.shape[0] - 1) / 2  # superior half (axis 0 I -> S)
    for s in subjects:
        assert s.image.shape == (24, 32, 24) and 0 <= s.mask.min() and s.mask.max() <= 1
        assert s.acquired.any() and (s.mask[s.acquired] > 0).all()
        assert 5 <= s.slice_mm <= 7 and s.lesion_load == 0.0
        assert s.dense[s.labels > 0].mean() < 0.6 * np.median(s.dense[s.dense > 0.1])  # thin: partial volume
    _, one = load_dataset("neurite_oasis", spacing_mm=2.0, shape=(24, 32, 24), limit=1, seed=0, check=False)
    assert len(one) == 1 and np.array_equal(one[0].image, subjects[0].image)


def test_ventricle_ids_and_orientation_fallback(oasis, tmp_path):
    assert _ventricle_ids(oasis) == (3, 22)
    assert _ventricle_ids(tmp_path / "nowhere") == (4, 43)  # FreeSurfer's numbers without a colour table
    arr = np.random.default_rng(1).random((4, 5, 6)).astype(np.float32)
    coded = nib.Nifti1Image(arr, LIA)
    uncoded = nib.Nifti1Image(arr, np.eye(4))
    uncoded.header.set_sform(None, code=0)
    uncoded.header.set_qform(None, code=0)
    a, zooms = _to_sar(arr, coded)
    b, _ = _to_sar(arr, uncoded)  # no orientation in the header: FreeSurfer's LIA is assumed
    assert a.shape == (5, 6, 4) and zooms == (1.0, 1.0, 1.0) and np.array_equal(a, b)
    assert np.array_equal(a, arr[::-1, ::-1, :].transpose(1, 2, 0))  # L->R, I->S flipped; (S, A, R) order
    scaled = nib.Nifti1Image(arr, LIA @ np.diag([1.0, 2.0, 3.0, 1.0]))  # 1 mm LR, 2 mm IS, 3 mm AP voxels
    assert _to_sar(arr, scaled)[1] == (2.0, 3.0, 1.0)


def test_load_dataset_missing_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    for check in (True, False):
        with pytest.raises(LayoutError, match="companion data fetch neurite_oasis"):
            load_dataset("neurite_oasis", spacing_mm=2.0, shape=(24, 32, 24), limit=1, seed=0, check=check)


# --- dipy's thick-slice scan ------------------------------------------------------------------------------------------
def test_aniso_example():
    ex = aniso_example()
    assert ex["image"].shape == (24, 58, 58) and ex["spacing"] == (5.0, 4.0, 4.0)
    assert ex["linear"].shape == ex["nearest"].shape == (116, 58, 58) and ex["upsampled_spacing"] == (1.0, 4.0, 4.0)
    assert 0.0 <= ex["image"].min() and ex["image"].max() == 1.0
    assert np.array_equal(ex["linear"][::5], ex["image"]) and np.array_equal(ex["nearest"][::5], ex["image"])
    assert np.allclose(ex["linear"][2], 0.6 * ex["image"][0] + 0.4 * ex["image"][1])
    assert np.array_equal(ex["nearest"][3], ex["image"][1])
    assert "aniso_vox" in ex["source"] and "/" not in ex["source"]
