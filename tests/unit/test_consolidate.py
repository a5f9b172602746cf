"""The VAEsselSparse consolidation recipe (Sec. 4) on tiny fixture volumes written in each readable dataset's layout
(as its manifest's loader_args read it), with anisotropic voxel sizes."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from companion.cli import main
from companion.data import consolidate as C
from companion.data.download import DataAccessError

SHAPE = 16  # the common cube of these tests


def _nii(path, arr, zooms):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, np.diag([*zooms, 1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


def _blob(shape, box, value=1):
    a = np.zeros(shape, np.uint8)
    a[box] = value
    return a


@pytest.fixture()
def data(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("COMPANION_DATA", str(root))
    return root


# the ATM'22 case whose blob position is checked: 6 x 6 x 3 voxels of 1 x 1 x 2 mm, blob at voxels [2:4, 2:4, 1],
# i.e. the cube 2-4 mm on every axis. At 0.5 mm: 12^3 voxels, the blob inside [4:8]^3 (trilinear interpolation
# thresholded at 0.5 rounds off its edges: what stays is the union of three orthogonal 2 x 2 x 4 bars through its
# centre, 32 voxels); centre-padded into 16^3 (offset 2 on every axis): inside [6:10]^3.
ATM_BLOB = (slice(2, 4), slice(2, 4), slice(1, 2))


def blob_after_recipe(offset):
    out = np.zeros((12 + 2 * offset,) * 3, bool)
    lo, mid, hi = 4 + offset, 5 + offset, 8 + offset
    for axis in range(3):
        box = [slice(mid, mid + 2)] * 3
        box[axis] = slice(lo, hi)
        out[tuple(box)] = True
    return out


def write_atm22(data, n=10):
    for i in range(1, n + 1):
        batch = "TrainBatch1" if i <= n // 2 else "TrainBatch2"
        box = ATM_BLOB if i == 1 else (slice(1, 5), slice(i % 4, i % 4 + 2), slice(0, 3))
        image, label = _blob((6, 6, 3), box, 100).astype(np.float32), _blob((6, 6, 3), box)
        for sub, arr in (("imagesTr", image), ("labelsTr", label)):
            _nii(data / "atm22" / batch / sub / f"ATM_{i:03d}_0000.nii.gz", arr, (1.0, 1.0, 2.0))
    return [f"ATM_{i:03d}_0000" for i in range(1, n + 1)]


def write_aeropath(data, n=5):
    for i in range(1, n + 1):  # 3 x 6 x 6 voxels of 2 x 1 x 1 mm -> 12^3 at 0.5 mm
        d = data / "aeropath" / "AeroPath" / str(i)
        _nii(d / f"{i}_CT_HR.nii.gz", np.zeros((3, 6, 6), np.float32), (2.0, 1.0, 1.0))
        _nii(d / f"{i}_CT_HR_label_airways.nii.gz", _blob((3, 6, 6), (1, slice(1, 5), slice(2, 4))), (2.0, 1.0, 1.0))
        _nii(d / f"{i}_CT_HR_label_lungs.nii.gz", np.ones((3, 6, 6), np.uint8), (2.0, 1.0, 1.0))
    return [str(i) for i in range(1, n + 1)]


def write_costa(data, n=3):
    # nnU-Net task folder; labels with two classes (any label > 0 is vessel); 10 x 10 x 4 voxels of 0.7 x 0.7 x 1.25
    # mm -> 14 x 14 x 10 at 0.5 mm
    for i in range(1, n + 1):
        t = data / "costa" / "Task101_COSTA"
        _nii(t / "imagesTr" / f"COSTA_{i:03d}.nii.gz", np.zeros((10, 10, 4), np.float32), (0.7, 0.7, 1.25))
        lab = _blob((10, 10, 4), (slice(2, 8), slice(4, 6), slice(1, 3)))
        lab[4:6, 2:8, 1:3] = 2
        _nii(t / "labelsTr" / f"COSTA_{i:03d}.nii.gz", lab, (0.7, 0.7, 1.25))
    return [f"COSTA_{i:03d}" for i in range(1, n + 1)]


def write_hipas(data, n=2):
    # npz arrays under key "data"; the loader reports 1 mm voxels for npz files -> 5 x 6 x 7 becomes 10 x 12 x 14
    for i in range(1, n + 1):
        for sub, arr in (("ct_scan", np.zeros((5, 6, 7), np.int16)),
                         ("annotation/artery", _blob((5, 6, 7), (slice(1, 4), 2, slice(0, 7)))),
                         ("annotation/vein", _blob((5, 6, 7), (slice(1, 4), 4, slice(0, 7))))):
            (data / "hipas" / sub).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(data / "hipas" / sub / f"{i:03d}.npz", data=arr)
    return [f"{i:03d}" for i in range(1, n + 1)]


@pytest.fixture()
def four(data):
    return {"atm22": write_atm22(data), "aeropath": write_aeropath(data), "costa": write_costa(data),
            "hipas": write_hipas(data)}


# ----------------------------------------------------------------------------------------------- per-case steps
def test_sources_are_the_papers_seven():
    assert C.SOURCES == {"atm22": "airway", "aiib23": "airway", "aeropath": "airway", "costa": "cerebral",
                         "hipas": "pulmonary", "parse2022": "pulmonary", "pulmonary_av": "pulmonary"}


def test_binarize():
    lab = np.array([[[0, 1], [2, 7]]], np.int16)
    assert C.binarize(lab).tolist() == [[[False, True], [True, True]]] and C.binarize(lab).dtype == bool
    assert not C.binarize(np.array([[[-1, 0]]])).any()
    with pytest.raises(ValueError, match="label map"):
        C.binarize(None)
    with pytest.raises(ValueError, match="label map"):
        C.binarize(3)


def test_resample_shapes_and_position():
    mask = _blob((6, 6, 3), ATM_BLOB).astype(bool)
    iso = C.resample_isotropic(mask, (1.0, 1.0, 2.0), 0.5)
    assert iso.shape == (12, 12, 12) and iso.dtype == bool
    assert np.array_equal(np.argwhere(iso).min(0), [4, 4, 4]) and np.array_equal(np.argwhere(iso).max(0), [7, 7, 7])
    assert np.array_equal(iso, blob_after_recipe(0)) and iso.sum() == 32
    line = np.zeros((4, 4, 4), bool)
    line[1, 2, :] = True  # a one-voxel-thin vessel at 1 mm stays connected and two voxels thick at 0.5 mm
    assert np.array_equal(np.argwhere(C.resample_isotropic(line, (1, 1, 1)).any(2)), [[2, 4], [2, 5], [3, 4], [3, 5]])
    assert C.resample_isotropic(np.zeros((4, 5, 6), bool), (1, 1, 2)).shape == (8, 10, 24)
    assert C.resample_isotropic(np.zeros((10, 10, 4), bool), (0.7, 0.7, 1.25)).shape == (14, 14, 10)
    assert C.resample_isotropic(np.zeros((8, 8, 8), bool), (1, 1, 1), target_mm=2.0).shape == (4, 4, 4)
    assert C.resample_isotropic(np.ones((2, 2, 3), bool), (1, 1, 2)).all()  # no erosion at the array border
    same = np.random.default_rng(0).random((5, 6, 7)) > 0.5
    assert np.array_equal(C.resample_isotropic(same, (0.5, 0.5, 0.5)), same)  # already isotropic: unchanged


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1, 1, 1, 1), (1.0, 0.0, 1.0), (1.0, -2.0, 1.0),
                                     (float("nan"), 1, 1), "abc", None])
def test_bad_spacing_is_a_value_error(spacing):
    with pytest.raises(ValueError, match="spacing"):
        C.resample_isotropic(np.zeros((4, 4, 4), bool), spacing)


def test_bad_target_and_dims():
    with pytest.raises(ValueError, match="target spacing"):
        C.resample_isotropic(np.zeros((4, 4, 4), bool), (1, 1, 1), target_mm=0)
    with pytest.raises(ValueError, match="3-D"):
        C.resample_isotropic(np.zeros((4, 4), bool), (1, 1, 1))


def test_center_pad_places_mask_in_the_middle():
    mask = np.zeros((4, 5, 6), bool)
    mask[0, 0, 0] = mask[3, 4, 5] = True
    out, lost = C.center_pad(mask, 10)
    assert out.shape == (10, 10, 10) and lost == 0
    assert out[3, 2, 2] and out[6, 6, 7] and out.sum() == 2  # offsets (10-4)//2, (10-5)//2, (10-6)//2
    out, lost = C.center_pad(mask, (4, 7, 8))
    assert out.shape == (4, 7, 8) and out[0, 1, 1] and out[3, 5, 6]


def test_center_pad_crops_around_the_foreground_and_counts_the_loss():
    mask = np.zeros((20, 4, 4), bool)
    mask[10:18, 1, 1] = True  # foreground bounding box 10..17 along axis 0, centre 14
    out, lost = C.center_pad(mask, (4, 4, 4))  # window 12..15: loses 10, 11, 16, 17
    assert lost == 4 and out[:, 1, 1].all() and out.sum() == 4
    out, lost = C.center_pad(mask, (8, 4, 4))  # window 10..17: nothing lost
    assert lost == 0 and out.sum() == 8
    edge = np.zeros((20, 4, 4), bool)
    edge[0:3, 0, 0] = True  # window clamped inside the array
    out, lost = C.center_pad(edge, (6, 4, 4))
    assert lost == 0 and out[0:3, 0, 0].all()
    out, lost = C.center_pad(np.zeros((9, 9, 9), bool), 4)  # no foreground: centre crop, nothing lost
    assert out.shape == (4, 4, 4) and lost == 0
    with pytest.raises(ValueError, match="cube shape"):
        C.center_pad(mask, (4, 4))


# ----------------------------------------------------------------------------------------------- split
def _records():
    return [("A", f"a{i:02d}") for i in range(50)] + [("B", f"b{i}") for i in range(20)] + \
        [("C", f"c{i}") for i in range(7)]


def test_split_is_stratified_deterministic_disjoint_and_complete():
    recs = _records()
    s = C.split_cases(recs, seed=3)
    assert len(s) == len(recs) and set(s) <= set(C.SPLITS)
    df = pd.DataFrame({"dataset": [r[0] for r in recs], "split": s})
    counts = df.groupby(["dataset", "split"]).size().unstack(fill_value=0)
    assert counts.loc["A"].to_dict() == {"train": 40, "val": 5, "test": 5}
    assert counts.loc["B"].to_dict() == {"train": 16, "val": 2, "test": 2}
    assert counts.loc["C"].to_dict() == {"train": 5, "val": 1, "test": 1}
    assert C.split_cases(recs, seed=3) == s  # deterministic
    assert C.split_cases(recs, seed=4) != s  # and the seed matters
    # independent of the input order, of the record type, and of the other datasets
    shuffled = [recs[i] for i in np.random.default_rng(1).permutation(len(recs))]
    assert dict(zip(shuffled, C.split_cases(shuffled, seed=3))) == dict(zip(recs, s))
    dicts = [{"dataset": d, "case": c} for d, c in recs]
    assert C.split_cases(dicts, seed=3) == s
    only_b = [r for r in recs if r[0] == "B"]
    assert C.split_cases(only_b, seed=3) == [x for r, x in zip(recs, s) if r[0] == "B"]


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.2), (0.5, 0.5), (1.1, -0.05, -0.05), (0.8, 0.1, float("nan"))])
def test_split_validates_fractions(fractions):
    with pytest.raises(ValueError, match="fractions"):
        C.split_cases(_records(), fractions=fractions)


def test_split_refuses_duplicates_and_bad_seed():
    with pytest.raises(ValueError, match="duplicate"):
        C.split_cases([("A", "1"), ("A", "1")])
    with pytest.raises(ValueError, match="seed"):
        C.split_cases([("A", "1")], seed=-1)
    assert C.split_cases([("A", "1"), ("B", "1")], fractions=(0, 1, 0)) == ["val", "val"]


# ----------------------------------------------------------------------------------------------- whole recipe
def test_consolidate_writes_sparse_cases_and_index(data, four, tmp_path):
    out = tmp_path / "out"
    df = C.consolidate(["atm22", "aeropath", "costa", "hipas"], out, shape=SHAPE, seed=0, check=False)
    assert list(df.columns) == C.INDEX_COLUMNS
    assert len(df) == sum(len(v) for v in four.values())
    for d, cases in four.items():
        assert df.loc[df.dataset == d, "case"].tolist() == cases
    assert set(df.kind) == {"airway", "cerebral", "pulmonary"}
    atm = df.set_index("case").loc["ATM_001_0000"]
    assert atm.original_shape == "6x6x3" and atm.original_spacing == "1x1x2"
    assert df.set_index("case").loc["COSTA_001"].original_spacing == "0.7x0.7x1.25"
    # stratified, deterministic per seed: ten ATM cases -> 8/1/1, five AeroPath -> 4/1/0
    assert df[df.dataset == "atm22"].split.value_counts().to_dict() == {"train": 8, "val": 1, "test": 1}
    assert df[df.dataset == "aeropath"].split.value_counts().to_dict() == {"train": 4, "val": 1}
    assert df.split.tolist() == C.split_cases(df, seed=0)

    # files: one per case, in its split folder, every case in exactly one split; nothing else left behind
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(df.file) | {"index.csv"}
    folders = {split: {p.name for p in (out / split).glob("*.npz")} for split in C.SPLITS}
    assert sum(len(v) for v in folders.values()) == len(df)  # disjoint and complete
    for row in df.itertuples():
        assert row.file == f"{row.split}/{row.dataset}__{row.case}.npz" and Path(row.file).name in folders[row.split]
    assert not list(out.glob(".*"))
    index = pd.read_csv(out / "index.csv", dtype={"case": str})
    assert index.case.tolist() == df.case.tolist() and index.file.tolist() == df.file.tolist()

    # what the npz files hold
    path = out / atm.file
    with np.load(path) as z:
        assert z["coords"].dtype == np.uint16 and z["coords"].shape == (32, 3)
        assert z["shape"].tolist() == [SHAPE] * 3 and z["spacing_mm"].tolist() == [0.5] * 3
        assert str(z["dataset"]) == "atm22" and str(z["case"]) == "ATM_001_0000"
    coords, shape = C.load_coords(path)
    assert shape == (SHAPE,) * 3 and coords.dtype == np.int32
    expected = blob_after_recipe(2)  # the known blob, resampled and centre-padded into the 16^3 cube
    assert expected.shape == (SHAPE,) * 3
    assert np.array_equal(np.sort(coords, axis=0), np.sort(np.argwhere(expected), axis=0))

    # every case round-trips through load_consolidated, and the index's statistics describe it
    seen = {}
    for split in C.SPLITS:
        for case_id, mask in C.load_consolidated(out, split):
            assert mask.shape == (SHAPE,) * 3 and mask.dtype == bool and case_id not in seen
            seen[case_id] = (split, mask)
    assert set(seen) == {f"{d}__{c}" for d, c in zip(df.dataset, df.case)}
    assert np.array_equal(seen["atm22__ATM_001_0000"][1], expected)
    for row in df.itertuples():
        split, mask = seen[f"{row.dataset}__{row.case}"]
        assert split == row.split and mask.sum() == row.active_voxels > 0 and row.lost_voxels == 0
        assert row.occupancy == pytest.approx(row.active_voxels / SHAPE ** 3)
    # costa labels 1 and 2 both count; hipas reads the artery mask (loader_args.label_sub)
    costa = seen["costa__COSTA_001"][1]
    assert costa.sum() == df.set_index("case").loc["COSTA_001"].active_voxels
    hipas_iso = C.resample_isotropic(_blob((5, 6, 7), (slice(1, 4), 2, slice(0, 7))).astype(bool), (1, 1, 1))
    assert np.array_equal(seen["hipas__001"][1], C.center_pad(hipas_iso, SHAPE)[0])

    # same seed: same result; a re-run replaces the old one and removes the files its index no longer lists
    again = C.consolidate(["atm22", "aeropath", "costa", "hipas"], out, shape=SHAPE, seed=0, check=False)
    pd.testing.assert_frame_equal(again, df)
    fewer = C.consolidate(["atm22"], out, shape=SHAPE, seed=0, check=False, limit=2)
    assert len(fewer) == 2
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.npz")} == set(fewer.file)


def test_cropping_is_reported_in_the_index(data, tmp_path):
    write_atm22(data, n=2)
    df = C.consolidate(["atm22"], tmp_path / "out", shape=(6, 12, 12), check=False)
    for row in df.itertuples():
        lab = nib.load(str(data / "atm22" / ("TrainBatch1" if row.case.endswith("1_0000") else "TrainBatch2") /
                           "labelsTr" / f"{row.case}.nii.gz")).get_fdata() > 0
        iso = C.resample_isotropic(lab, (1, 1, 2))
        assert row.lost_voxels == iso.sum() - row.active_voxels
    assert df.set_index("case").loc["ATM_002_0000"].lost_voxels > 0  # its blob spans 8 voxels on axis 0 at 0.5 mm
    assert df.set_index("case").loc["ATM_001_0000"].lost_voxels == 0  # 4 voxels: fits in the cropped window


def test_missing_and_unreadable_sources_fail_before_anything_is_written(data, tmp_path, monkeypatch):
    write_atm22(data, n=2)  # present; the others are not downloaded, or have no loader, or are not sources
    out = tmp_path / "out"
    called = []
    monkeypatch.setattr("companion.data.loaders.iter_samples", lambda *a, **k: called.append(a) or iter(()))
    ids = ["atm22", "aiib23", "parse2022", "pulmonary_av", "hipas", "costa", "topcow2024", "nope"]
    with pytest.raises(DataAccessError) as err:
        C.consolidate(ids, out, shape=SHAPE, check=False)
    msg = str(err.value)
    for i in ids[1:]:
        assert f"- {i}:" in msg, i
    assert "- atm22:" not in msg  # present: no problem with check=False
    assert "companion data fetch hipas --allow-unverified" in msg
    assert "companion data fetch costa" in msg and "companion data fetch aiib23" in msg
    assert msg.count("loader: none") == 3  # aiib23, parse2022, pulmonary_av
    assert "cannot be obtained" in msg  # pulmonary_av (unidentified)
    assert "pass ids atm22" in msg
    assert not out.exists() and not called


def test_check_verifies_against_the_manifest(data, tmp_path):
    write_atm22(data, n=2)  # files present, but never fetched: no raw archive, no completion marker
    problems = C.check_sources(["atm22", "aeropath"])
    assert len(problems) == 2
    assert problems[0].startswith("atm22: data not downloaded or not verified")
    assert "companion data fetch atm22" in problems[0] and "companion data fetch aeropath" in problems[1]
    assert C.check_sources(["atm22"], check=False) == []
    # a dataset placed and marked complete as `companion data fetch` leaves it passes the check
    (data / "atm22" / "raw").mkdir()
    for name in ("TrainBatch1.rar", "TrainBatch2.rar"):
        (data / "atm22" / "raw" / name).write_bytes(b"x")
    (data / "atm22" / ".companion-complete.json").write_text(json.dumps({"id": "atm22", "files": {}}))
    assert C.check_sources(["atm22"]) == []
    assert len(C.consolidate(["atm22"], tmp_path / "out", shape=SHAPE)) == 2
    assert C.check_sources([]) and "no dataset ids" in C.check_sources([])[0]


def test_a_failure_midway_leaves_nothing(data, tmp_path):
    write_atm22(data, n=2)
    write_costa(data, n=2)
    (data / "costa" / "Task101_COSTA" / "labelsTr" / "COSTA_002.nii.gz").unlink()  # second costa case: no label
    out = tmp_path / "deep" / "out"
    with pytest.raises(FileNotFoundError, match="COSTA_002"):
        C.consolidate(["atm22", "costa"], out, shape=SHAPE, check=False)
    assert not (tmp_path / "deep").exists()
    # an existing output folder keeps what it had and gets nothing new
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileNotFoundError):
        C.consolidate(["atm22", "costa"], out, shape=SHAPE, check=False)
    assert [p.name for p in out.rglob("*")] == ["keep.txt"]


def test_a_failure_while_moving_into_place_restores_the_earlier_run(data, tmp_path, monkeypatch):
    write_atm22(data, n=4)
    out = tmp_path / "out"
    first = C.consolidate(["atm22"], out, shape=SHAPE, check=False, limit=2)
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert set(before) == set(first.file) | {"index.csv"}

    def broken(df, path):
        raise OSError("disk full")

    monkeypatch.setattr(C, "_write_index", broken)  # fails after every case has been moved into its split folder
    with pytest.raises(OSError, match="disk full"):
        C.consolidate(["atm22"], out, shape=(SHAPE, SHAPE, 14), check=False)
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and not list(out.glob(".*"))


def test_bad_spacing_in_a_file_names_the_case(data, tmp_path, monkeypatch):
    write_atm22(data, n=1)
    from companion.data import loaders

    real = loaders.iter_samples

    def zero_spacing(*a, **k):
        for s in real(*a, **k):
            yield loaders.Sample(s.case, s.image, s.target, (1.0, 0.0, 2.0), s.path)

    monkeypatch.setattr(loaders, "iter_samples", zero_spacing)
    with pytest.raises(ValueError, match="ATM_001_0000.*spacing"):
        C.consolidate(["atm22"], tmp_path / "out", shape=SHAPE, check=False)
    assert not (tmp_path / "out").exists()


def test_load_consolidated_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="consolidate"):
        next(C.load_consolidated(tmp_path, "train"))
    with pytest.raises(ValueError, match="split"):
        next(C.load_consolidated(tmp_path, "dev"))


def test_cli_consolidate(data, four, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "consolidate", "--out", str(out), "--shape", str(SHAPE), "--ids", "atm22,aeropath",
                 "--no-check", "--seed", "0"]) == 0
    text = capsys.readouterr().out
    assert "train: 12  val: 2  test: 1" in text and "atm22" in text and "aeropath" in text
    assert len(pd.read_csv(out / "index.csv")) == 15
    assert main(["data", "consolidate", "--out", str(tmp_path / "x"), "--ids", "atm22,aiib23"]) == 1
    err = capsys.readouterr().err
    assert "aiib23" in err and "companion data fetch atm22" in err and not (tmp_path / "x").exists()
    assert main(["data", "consolidate"]) == 2
    assert main(["data", "consolidate", "--out", str(out), "--ids", "atm22", "--no-check", "--spacing", "0"]) == 1
