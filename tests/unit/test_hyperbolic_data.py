"""Chapter 3 data: the synthetic hierarchical volumes (levels refine each other, every class appears, children sit in
their parents, deterministic, fast), the offline FLAIR-like brain stand-in, and the real-data path on fake MSD Task01
and BraTS 2019 releases."""
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from companion.data.loaders import LayoutError
from companion.hyperbolic.data import (CLASS_NAMES_L3, COARSEN, LEVEL_CLASSES, STANDIN_SOURCE, BrainVolume,
                                       brain_set, brain_standin, coarsen, derived_seed, load_brain_dataset,
                                       synthetic_set, synthetic_volume)

PARENT = {2: 1, 3: 1, 4: 2, 5: 3, 6: 1, 7: 0}  # level-3 class -> the level-3 class it is drawn inside


@pytest.fixture(scope="module")
def regular():
    return synthetic_set(10, size=50, seed=0)


@pytest.fixture(scope="module")
def irregular():
    return synthetic_set(10, size=50, seed=0, irregular=True)


def test_shapes_dtypes_and_class_tables(regular):
    assert LEVEL_CLASSES == (2, 4, 8) and len(CLASS_NAMES_L3) == 8
    v = regular[0]
    assert v.image.shape == (50, 50, 50) and v.image.dtype == np.float32
    assert v.levels.shape == (3, 50, 50, 50) and v.levels.dtype == np.uint8
    assert 0.0 <= v.image.min() and v.image.max() <= 1.0
    for k, n in enumerate(LEVEL_CLASSES, start=1):
        assert v.level(k).max() < n
    small = synthetic_volume(3, size=24)
    assert small.image.shape == (24,) * 3 and small.levels.shape == (3, 24, 24, 24)


def test_levels_are_a_strict_refinement(regular, irregular):
    assert COARSEN[3].tolist() == [0, 1, 2, 3, 2, 3, 1, 0] and COARSEN[2].tolist() == [0, 1, 1, 1]
    for v in regular + irregular:
        assert np.array_equal(v.levels[1], COARSEN[3][v.levels[2]])
        assert np.array_equal(v.levels[0], COARSEN[2][v.levels[1]])
        assert np.array_equal(coarsen(v.levels[2], 1), v.levels[0]) and np.array_equal(coarsen(v.levels[2], 3),
                                                                                         v.levels[2])
    with pytest.raises(ValueError):
        coarsen(regular[0].levels[2], 4)


@pytest.mark.parametrize("which", ["regular", "irregular"])
def test_every_class_present_and_cell_fraction(which, request):
    volumes = request.getfixturevalue(which)
    present = np.array([np.bincount(v.levels[2].ravel(), minlength=8) > 0 for v in volumes])
    assert (present.mean(axis=0) >= 0.8).all(), present.mean(axis=0)
    for v in volumes:
        assert 0.10 <= v.levels[0].mean() <= 0.70


@pytest.mark.parametrize("which", ["regular", "irregular"])
def test_children_sit_in_their_parents(which, request):
    """Each connected piece of a child class borders its parent class (it was painted over the parent)."""
    for v in request.getfixturevalue(which):
        l3 = v.levels[2]
        for child, parent in PARENT.items():
            pieces, n = ndi.label(l3 == child)
            for i in range(1, n + 1):
                ring = ndi.binary_dilation(pieces == i) & (pieces != i)
                assert (l3[ring] == parent).any(), (v.seed, child, i)


def test_classes_differ_in_texture_not_only_mean(regular):
    """A and B interiors: close means, different texture (A coarse, B fine): smoothing keeps more of A's spread."""
    l3 = np.concatenate([v.levels[2].ravel() for v in regular[:4]])
    img = np.concatenate([v.image.ravel() for v in regular[:4]])
    smooth = np.concatenate([ndi.uniform_filter(v.image, 3).ravel() for v in regular[:4]])
    a, b = (l3 == 2), (l3 == 3)
    assert abs(img[a].mean() - img[b].mean()) < 0.15
    assert smooth[a].std() > 1.3 * smooth[b].std()


def test_deterministic_and_irregular_differs():
    a, b = synthetic_volume(7), synthetic_volume(7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.levels, b.levels)
    c = synthetic_volume(8)
    assert not np.array_equal(a.levels, c.levels)
    irr = synthetic_volume(7, irregular=True)
    assert irr.irregular and not np.array_equal(irr.levels, a.levels)
    assert np.array_equal(irr.image, synthetic_volume(7, irregular=True).image)


def test_set_uses_derived_seeds(regular):
    assert len(regular) == 10
    assert np.array_equal(regular[3].levels, synthetic_volume(derived_seed(0, 3)).levels)
    assert len({v.seed for v in regular}) == 10
    assert not np.array_equal(synthetic_set(1, seed=1)[0].image, regular[0].image)


def test_one_volume_is_fast():
    t = time.perf_counter()
    synthetic_volume(12345, irregular=True)
    assert time.perf_counter() - t < 3.0


# --- brain stand-in ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def brains():
    return brain_set(4, size=48, seed=0)


def test_standin_shapes_and_nesting(brains):
    for b in brains:
        assert isinstance(b, BrainVolume) and b.source == STANDIN_SOURCE
        assert b.image.shape == b.labels.shape == b.tumour.shape == (48, 48, 48)
        assert b.image.dtype == np.float32 and b.labels.dtype == b.tumour.dtype == np.uint8
        assert 0.0 <= b.image.min() and b.image.max() <= 1.0
        assert np.array_equal(b.tumour > 0, b.labels == 2)
        assert set(np.unique(b.tumour)) == {0, 1, 2, 3}
        assert np.all(b.image[b.labels == 0] == 0)  # skull-stripped background
        assert 0.15 < (b.labels > 0).mean() < 0.8  # cropped to the brain


def test_standin_tumour_size_and_flair_contrast(brains):
    for b in brains:
        brain = b.labels > 0
        assert 0.005 <= (b.labels == 2).sum() / brain.sum() <= 0.10
        assert b.image[b.labels == 2].mean() > b.image[b.labels == 1].mean() + 0.1
        oedema, enhancing, necrosis = (b.image[b.tumour == k].mean() for k in (1, 2, 3))
        assert oedema > enhancing > necrosis


def test_standin_deterministic_and_varied(brains):
    again = brain_standin(derived_seed(0, 1))
    assert np.array_equal(again.image, brains[1].image) and np.array_equal(again.tumour, brains[1].tumour)
    assert not np.array_equal(brains[0].tumour, brains[1].tumour)
    assert brain_standin(5, size=32).image.shape == (32,) * 3


# --- real-data path on fake releases --------------------------------------------------------------------------------

SHAPE = (24, 28, 20)
CENTRE = (12, 14, 10)


def _nii(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))


def _case(seed, codes):
    """A box 'brain' inside a zero border, with a three-shell lesion; `codes` = labels for (shell, middle, centre)."""
    rng = np.random.default_rng(seed)
    flair = np.zeros(SHAPE, np.float32)
    flair[2:-2, 2:-2, 2:-2] = 100 + 5 * rng.standard_normal((20, 24, 16))
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.indices(SHAPE), CENTRE)))
    seg = np.zeros(SHAPE, np.uint8)
    seg[r <= 6], seg[r <= 4], seg[r <= 2] = codes
    flair[seg > 0] += 150
    return flair, seg


def _check(vols, n, size):
    assert len(vols) == n
    for v in vols:
        assert v.image.shape == v.labels.shape == v.tumour.shape == (size,) * 3
        assert v.image.dtype == np.float32 and 0 <= v.image.min() and v.image.max() <= 1
        assert np.array_equal(v.tumour > 0, v.labels == 2) and (v.labels == 1).any()
        assert (v.labels > 0).mean() > 0.95  # the zero border was cropped away
        assert v.image[v.labels == 2].mean() > v.image[v.labels == 1].mean() + 0.3  # the FLAIR channel
        centre = tuple(np.round(ndi.center_of_mass(v.labels == 2)).astype(int))
        assert v.tumour[centre] == 3  # necrotic / non-enhancing core
        assert (v.tumour == 1).sum() > (v.tumour == 2).sum() > (v.tumour == 3).sum() > 0


def test_msd_release_uses_flair_channel_and_maps_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    root = tmp_path / "msd_task01_braintumour" / "Task01_BrainTumour"
    for i in range(3):
        flair, seg = _case(i, (1, 3, 2))  # MSD: 1 oedema, 3 enhancing, 2 non-enhancing
        other = np.full(SHAPE, 500.0, np.float32)
        _nii(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz", np.stack([flair, other, other, other], axis=-1))
        _nii(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", seg)
    vols = load_brain_dataset("msd_task01_braintumour", size=16, limit=2, check=False)
    _check(vols, 2, 16)
    assert vols[0].case == "BRATS_000" and "FLAIR" in vols[0].source
    with pytest.raises(LayoutError, match="not ready"):  # no `companion data fetch` marker
        load_brain_dataset("msd_task01_braintumour")


def test_brats_release(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    for i in range(2):
        case = f"BraTS19_X_{i}_1"
        flair, seg = _case(i, (2, 4, 1))  # BraTS: 2 oedema, 4 enhancing, 1 NCR/NET
        _nii(tmp_path / "brats2019" / "HGG" / case / f"{case}_flair.nii.gz", flair)
        _nii(tmp_path / "brats2019" / "HGG" / case / f"{case}_seg.nii.gz", seg)
    _check(load_brain_dataset("brats2019", size=20, check=False), 2, 20)


def test_missing_data_raises_the_loaders_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_DATA", str(tmp_path))
    with pytest.raises(LayoutError, match="companion data fetch msd_task01_braintumour"):
        load_brain_dataset("msd_task01_braintumour")
    with pytest.raises(ValueError, match="unknown"):
        load_brain_dataset("brats2020")
