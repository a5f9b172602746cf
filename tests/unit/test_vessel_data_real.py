"""Chapter 0's section on real maps: the loader, the table, the checks and the page's verdict paragraph -- with
the real data folder (skipped where it is absent) and without it (a clean skip, no crash)."""
import numpy as np
import pytest

from companion import chapter, morphometry as mm, vessel_data_real as vr
from companion.data.vessels import generate_dataset

ROOT = vr.data_root()
needs_data = pytest.mark.skipif(ROOT is None, reason="the real data folder (../shared/data or $COMPANION_MIRROR) "
                                                     "is not on this machine")


@pytest.fixture(scope="module")
def trees():
    return generate_dataset(3, grid=48, seed=0)  # one airway, one cerebral, one pulmonary tree


def test_data_root_absent_gives_none(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_MIRROR", str(tmp_path / "nowhere"))
    assert vr.data_root() is None
    (tmp_path / "here" / "vesselmnist3d").mkdir(parents=True)
    monkeypatch.setenv("COMPANION_MIRROR", str(tmp_path / "here"))
    assert vr.data_root() == tmp_path / "here"


def test_without_real_maps_the_checks_are_not_measured(tmp_path, trees):
    run = chapter.start("vessel_data", scale="ci", output_dir=tmp_path)
    rows = vr.measure_all([], trees, [trees[1].volume])
    assert not any(r["real"] for r in rows.values())
    assert vr.pair_results(rows).empty, "no real row, no pairing"
    vr.record_real_checks(run, None)
    recs = [run.results.records[f"real-{s}"] for s in vr.STATS]
    assert all(r["holds"] is None and r["reason"].startswith("not measured") for r in recs)
    assert "not on this machine" in vr.verdict_text(None)
    fig = vr.figure_real_beside_generated([], trees, [trees[1].volume])  # real panels say "not on this machine"
    assert len(fig.axes) == 12


def _fake_real(mask, group, spacing=None):
    return vr.RealMap(group, "fake", mask, spacing, "fake.npz", "sha256:0")


def test_a_stand_in_measured_as_its_own_reference_lies_inside(tmp_path, trees):
    """The cerebral tree held against itself as the 'real' TopCoW rows: every statistic inside (the check can
    hold), and against a much thicker copy of itself the radius falls outside (it can fail)."""
    from scipy import ndimage

    cer = next(t for t in trees if t.kind == "cerebral")
    same = [_fake_real(cer.volume, g, (0.5, 0.5, 0.5)) for g in ("TopCoW MRA", "TopCoW CTA")]
    rows = vr.measure_all(same, trees, [cer.volume])
    pairs = vr.pair_results(rows)
    mine = pairs[pairs["stand-in"] == "cerebral preset"]
    assert len(mine) == 9 and mine.inside.all(), mine
    thick = ndimage.binary_dilation(cer.volume, iterations=3)
    rows = vr.measure_all([_fake_real(thick, "TopCoW MRA", (0.5, 0.5, 0.5))], trees, [cer.volume])
    rows.setdefault("TopCoW CTA", rows["TopCoW MRA"])
    pairs = vr.pair_results(rows)
    radius = pairs[(pairs["stand-in"] == "cerebral preset") & (pairs.statistic == "radius")]
    assert radius.inside.tolist() == [False]
    run = chapter.start("vessel_data", scale="ci", output_dir=tmp_path)
    vr.record_real_checks(run, pairs)
    rec = run.results.records["real-radius"]
    assert rec["holds"] is False and "radius of the cerebral preset" in rec["reason"]
    assert "outside on" in vr.verdict_text(pairs)


def test_table_cells_are_readable(trees):
    rows = vr.measure_all([], trees, [trees[1].volume])
    t = vr.morphometry_table(rows)
    assert list(t.index) == ["airway preset", "cerebral preset", "pulmonary preset", "cerebral preset, in voxels",
                             "capillary bed (chapter 2 stand-in)"]
    text = t.to_csv()
    assert "nan" not in text and "e+" not in text and "(" in text and "[" in text
    assert t.loc["airway preset", "b0, b1, b2"] == "1; 0; 0"
    assert vr._fmt(0.0234) == "0.023" and vr._fmt(12.345) == "12.3" and vr._fmt(3.0) == "3"


@pytest.fixture()
def scratch_data(tmp_path, monkeypatch):
    """A scratch dataset cache: the official loader's copies from the data folder land there, not in the user's."""
    from companion.data.manifests import _load_all

    monkeypatch.setenv("COMPANION_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("COMPANION_MANIFESTS", raising=False)
    _load_all.cache_clear()
    return tmp_path / "data"


def _nifti(path):
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj) > 0, tuple(float(z) for z in img.header.get_zooms()[:3])


def _load_direct(root, per_class):
    """The same maps as `vr.load_real_maps`, read straight from the files in `root`: an independent reading the
    data layer's result is checked against."""
    out = []
    p = root / "vesselmnist3d" / "vesselmnist3d_64.npz"
    with np.load(p, allow_pickle=False) as d:
        x, y = d["test_images"], d["test_labels"].ravel()
    digest = vr._sha256(p)
    for label, what in ((0, "healthy"), (1, "aneurysm")):
        for i in np.flatnonzero(y == label)[:per_class]:
            out.append(vr.RealMap("VesselMNIST3D", f"test {i} ({what})", x[i] > 0, None, p.relative_to(root).as_posix(),
                               digest))
    for modality, group in (("mr", "TopCoW MRA"), ("ct", "TopCoW CTA")):
        for p in sorted((root / "topcow-roi").glob(f"topcow_{modality}_roi_*.nii.gz")):
            mask, sp = _nifti(p)
            out.append(vr.RealMap(group, p.name.split(".")[0], mask, sp, p.relative_to(root).as_posix(), vr._sha256(p)))
    p = root / "airquant-airway" / "github_demo_seg.nii.gz"
    mask, sp = _nifti(p)
    out.append(vr.RealMap("airway tree (AirQuant)", "github_demo_seg", mm.bbox_crop(mask, 1), sp,
                       p.relative_to(root).as_posix(), vr._sha256(p)))
    p = root / "vesselexpress-lightsheet" / "Binary_000.tif"
    import tifffile

    out.append(vr.RealMap("light-sheet mask (VesselExpress)", "Binary_000", tifffile.imread(str(p)) > 0, None,
                       p.relative_to(root).as_posix(), vr._sha256(p)))
    return out


@needs_data
def test_real_maps_load_with_their_spacing_and_without_the_flipped_fixtures(scratch_data):
    maps, how = vr.load_real_maps(ROOT, per_class=2)
    assert how == "companion.data.real", how
    assert (scratch_data / "topcow_roi").is_dir(), "copied from the data folder into the dataset cache"
    direct = _load_direct(ROOT, per_class=2)
    assert [m.name for m in direct] == [m.name for m in maps]
    assert all(np.array_equal(a.mask, b.mask) and a.sha256 == b.sha256 for a, b in zip(direct, maps))
    assert all(a.spacing == b.spacing or np.allclose(a.spacing, b.spacing) for a, b in zip(direct, maps))
    groups = [m.group for m in maps]
    assert groups.count("VesselMNIST3D") == 4 and groups.count("TopCoW MRA") == 3
    assert groups.count("TopCoW CTA") == 3 and groups.count("airway tree (AirQuant)") == 1
    assert not [m for m in maps if "flipped" in m.file]
    vm = [m for m in maps if m.group == "VesselMNIST3D"]
    assert [("healthy" in m.name) for m in vm] == [True, True, False, False] and vm[0].spacing is None
    aw = next(m for m in maps if m.group.startswith("airway"))
    assert np.allclose(aw.spacing, (0.664062, 0.664062, 3.0), atol=1e-5)
    assert aw.mask.shape[0] < 512 and int(aw.mask.sum()) == 51005, "cropped to the tree, no voxel lost"
    ls = next(m for m in maps if m.group.startswith("light-sheet"))
    assert ls.mask.shape == (100, 100, 100) and int(ls.mask.sum()) == 66323 and ls.spacing is None
    assert all(m.sha256.startswith("sha256:") for m in maps)
    mr = [m.spacing for m in maps if m.group == "TopCoW MRA"]  # the voxel sizes the text quotes
    ct = [m.spacing for m in maps if m.group == "TopCoW CTA"]
    assert np.allclose(mr, [(0.296875, 0.296875, 0.6)] * 3, atol=1e-5)
    assert 0.41 < min(s[0] for s in ct) and max(s[0] for s in ct) < 0.56 and all(0.69 < s[2] < 0.76 for s in ct)
    assert round(aw.spacing[2] / aw.spacing[0], 1) == 4.5


@needs_data
def test_real_airway_is_a_tree_in_mm():
    aw = next(m for m in _load_direct(ROOT, per_class=0) if m.group.startswith("airway"))
    r = mm.measure(aw.mask, aw.spacing)
    assert r.betti == (1, 0, 0) and r.bifurcations > 10
    assert 1.0 < np.median(r.radii) < 5.0, "airway radii of millimetres, measured in mm"


def test_a_median_just_outside_never_reads_equal_to_the_bound():
    med, lo, hi = vr._fmt_against(1.17994, 1.18012, 1.48)
    assert med != lo and float(med) < float(lo), (med, lo)
    assert vr._fmt_against(1.3, 1.18, 1.48) == ("1.30", "1.18", "1.48"), "inside: the usual digits"


def test_without_a_data_folder_unfetched_data_is_refused_with_the_command(scratch_data):
    """No silent fallback: the real maps come through the data layer or not at all."""
    from companion.data.integrity import DataAccessError

    assert not vr.fetched()
    with pytest.raises(DataAccessError, match="companion data fetch vesselmnist3d"):
        vr.load_real_maps(None, per_class=1)
