"""The consolidation recipe of the VAEsselSparse paper (Section 4, "Datasets"): one training set of binary vessel
maps built from seven public collections.

The paper's recipe, step by step, and the function here that does each step:

1. Sources (:data:`SOURCES`): airway trees from ATM'22, AIIB23 and AeroPath; cerebral vessels from COSTA; pulmonary
   vessels from HiPaS, PARSE 2022 and "Pulmonary-AV".  Every one is a dataset manifest in ``data_manifests/``;
   :func:`check_sources` says, before anything is computed, which of them cannot be read on this machine and what
   to run to fix it.
2. Every label map becomes a vessel mask: any label > 0 (:func:`binarize`).
3. Every mask is resampled to 0.5 mm isotropic voxels (:func:`resample_isotropic`).
4. Every mask is centre-padded into one common cube (:func:`center_pad`; the cube's size did not survive in the
   paper's text as we have it, so the default, 512^3, is ours).  A mask larger
   than the cube along an axis is cropped around its foreground, and the voxels lost are counted, not hidden.
5. The cases are split train / val / test 80 / 10 / 10 (:func:`split_cases`; the paper reports 971 / 122 / 126).
   The split is stratified by source dataset and deterministic for a seed.

:func:`consolidate` runs the whole recipe and writes, under ``out_dir``::

    <split>/<dataset>__<case>.npz   coords (N, 3) active voxel indices (uint16, int32 for cubes over 65535),
                                    shape (3,), spacing_mm (3,), plus dataset, case, original_shape,
                                    original_spacing_mm for provenance
    index.csv                       one row per case (see INDEX_COLUMNS)

Sparse models read ``coords`` directly (:func:`load_coords`); :func:`load_consolidated` gives dense masks back.
Every file is written to a temporary name and moved into place with ``os.replace``; when anything fails, the files
this call created are removed, so ``out_dir`` never holds a half-written case or index.
"""
from __future__ import annotations

import csv
import math
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from .download import DataAccessError, dataset_dir, verify
from .manifests import Manifest, load_manifests

# dataset id -> vessel kind, in the order the paper lists them (VAEsselSparse, Sec. 4)
SOURCES: dict[str, str] = {
    "atm22": "airway",
    "aiib23": "airway",
    "aeropath": "airway",
    "costa": "cerebral",
    "hipas": "pulmonary",
    "parse2022": "pulmonary",
    "pulmonary_av": "pulmonary",
}
SPLITS = ("train", "val", "test")
PAPER_FRACTIONS = (0.8, 0.1, 0.1)
DEFAULT_SHAPE = 512  # our default cube; the paper's cube size is not in the text we have
PAPER_SPACING_MM = 0.5
INDEX_COLUMNS = ["dataset", "kind", "case", "split", "original_shape", "original_spacing", "occupancy",
                 "active_voxels", "lost_voxels", "file"]
INDEX_FILE = "index.csv"


# ----------------------------------------------------------------------------------------------- sources
def _fetch_hint(m: Manifest) -> str:
    """The command (and, for gated data, the manual step) that makes dataset `m` readable."""
    if m.downloadable:
        unhashed = any(not rf.hashes for rf in m.files)
        cmd = f"companion data fetch {m.id}" + (" --allow-unverified" if unhashed else "")
        note = " (the manifest records no checksum, hence --allow-unverified)" if unhashed else ""
        first = f"register as {m.path.name} explains (`manual`), then " if m.access != "open" else ""
        return f"{first}run `{cmd}` (or `python -m {cmd}`){note}"
    if m.access in ("registration", "request"):
        return (f"access is '{m.access}': obtain the archive(s) as {m.path.name} explains (`manual`), place them "
                f"in {dataset_dir(m.id) / 'raw'}, then run `companion data fetch {m.id}` "
                f"(or `python -m companion data fetch {m.id}`)")
    return f"access is '{m.access}': it cannot be obtained; leave {m.id} out of the ids"


def check_sources(ids: Iterable[str], *, check: bool = True) -> list[str]:
    """Everything that stops :func:`consolidate` from reading the datasets `ids`; an empty list means all can be read.

    For every id, each of: not one of the paper's sources (:data:`SOURCES`) or no manifest at all; a manifest with
    ``loader: none`` (no reader for its files yet: aiib23, parse2022, pulmonary_av); data not on this machine (with
    `check`, :func:`companion.data.download.verify` must pass; without it, the dataset folder must at least exist and
    be non-empty).  Each data problem names the command that fixes it, e.g. ``companion data fetch hipas``.
    """
    ids = list(ids)
    if not ids:
        return ["no dataset ids given; the paper's sources are: " + ", ".join(SOURCES)]
    manifests = load_manifests()
    problems: list[str] = []
    for i in ids:
        if i not in SOURCES:
            what = "has a manifest but is not" if i in manifests else "is unknown (no manifest) and not"
            problems.append(f"{i}: {what} one of the paper's consolidation sources ({', '.join(SOURCES)})")
            continue
        if i not in manifests:
            problems.append(f"{i}: no manifest {i}.yaml in the manifest folder")
            continue
        m = manifests[i]
        if m.loader == "none":
            problems.append(
                f"{i}: manifest {m.path.name} says `loader: none`: the file layout of this dataset is not verified, "
                f"so no reader exists for it yet. Once the data are obtained, set `loader` and `loader_args` in "
                f"{m.path}, or leave {i} out of the ids.")
        if check:
            found = verify(i)
            if found and m.access in ("private", "unidentified"):  # verify's placement advice does not apply
                problems.append(f"{i}: data not available; {_fetch_hint(m)}. {' '.join((m.manual or '').split())}")
            elif found:
                details = "\n    ".join(p.strip().replace("\n", "\n    ") for p in found)
                problems.append(f"{i}: data not downloaded or not verified; {_fetch_hint(m)}.\n    {details}")
        else:
            root = dataset_dir(i)
            if not root.is_dir() or not any(root.iterdir()):
                problems.append(f"{i}: data not downloaded ({root} is missing or empty); {_fetch_hint(m)}.")
    return problems


# ----------------------------------------------------------------------------------------------- per-case steps
def binarize(target: Any) -> np.ndarray:
    """Label map -> boolean vessel mask: every voxel with a label > 0 is vessel (Sec. 4: all structures of a label
    map, e.g. artery and vein, or trachea and bronchi, count as one tree)."""
    if target is None or np.ndim(target) == 0:
        raise ValueError(f"expected a label map (an array), got {type(target).__name__}; the dataset's manifest "
                         f"must give loader_args.label_sub so that each image has a label file")
    return np.asarray(target) > 0


def _check_spacing(spacing: Any) -> tuple[float, float, float]:
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"spacing must be 3 numbers in mm, got {spacing!r}") from exc
    if len(values) != 3:
        raise ValueError(f"spacing must be 3 numbers in mm (one per axis), got {len(values)}: {spacing!r}")
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be positive and finite (mm), got {spacing!r}; check the file's header")
    return values  # type: ignore[return-value]


def _check_target_mm(target_mm: Any) -> float:
    t = float(target_mm)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"target spacing must be a positive number of mm, got {target_mm!r}")
    return t


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target_mm: float = PAPER_SPACING_MM
                    ) -> tuple[int, ...]:
    """``round(shape * spacing / target_mm)`` per axis (halves round up), at least 1."""
    spacing = _check_spacing(spacing)
    target_mm = _check_target_mm(target_mm)
    return tuple(max(1, int(math.floor(n * s / target_mm + 0.5))) for n, s in zip(shape, spacing))


def resample_isotropic(mask: np.ndarray, spacing: Sequence[float], target_mm: float = PAPER_SPACING_MM
                       ) -> np.ndarray:
    """Resample a binary mask with voxel size `spacing` (mm, per array axis) to `target_mm` isotropic (Sec. 4: 0.5 mm).

    Output shape is ``round(shape * spacing / target_mm)``.  The mask is interpolated as a float (trilinear,
    ``scipy.ndimage.zoom`` with ``order=1``) and thresholded at 0.5.  Voxels are treated as cells
    (``grid_mode=True``): output voxel ``j`` samples the physical point ``(j + 0.5) * target_mm``, so a structure
    stays where it is in millimetres; beyond the border the edge value is repeated (``mode="nearest"``), so vessels
    that leave the field of view are not eroded there.
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {mask.shape}")
    spacing = _check_spacing(spacing)
    target_mm = _check_target_mm(target_mm)
    out_shape = resampled_shape(mask.shape, spacing, target_mm)
    if out_shape == mask.shape and all(math.isclose(s, target_mm) for s in spacing):
        return mask.astype(bool, copy=True)
    factors = [o / n for o, n in zip(out_shape, mask.shape)]
    zoomed = ndimage.zoom(mask.astype(np.float32), factors, order=1, mode="nearest", grid_mode=True)
    if zoomed.shape != out_shape:  # zoom rounds shape * factor itself; guard against a floating-point surprise
        raise RuntimeError(f"resampling gave shape {zoomed.shape}, expected {out_shape}")
    return zoomed >= 0.5


def _cube(shape: int | Sequence[int]) -> tuple[int, int, int]:
    dims = (shape,) * 3 if isinstance(shape, (int, np.integer)) else tuple(shape)
    if len(dims) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims):
        raise ValueError(f"cube shape must be a positive int or 3 positive ints, got {shape!r}")
    return tuple(int(d) for d in dims)  # type: ignore[return-value]


def center_pad(mask: np.ndarray, shape: int | Sequence[int]) -> tuple[np.ndarray, int]:
    """Centre `mask` in an array of `shape` (Sec. 4: every map is centre-padded to one common cube).

    Per axis: when the mask is smaller, it is padded with background on both sides (an odd difference puts the extra
    voxel after it).  When it is larger, a window of the target length is cut out, centred on the foreground's
    bounding box along that axis (on the middle of the axis when there is no foreground) and kept inside the array.
    Returns ``(padded, lost_voxels)``: the foreground voxels that fell outside the window (0 when nothing was cropped).
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise ValueError(f"expected a 3-D mask, got shape {mask.shape}")
    target = _cube(shape)
    src, dst = [], []
    for axis, (n, t) in enumerate(zip(mask.shape, target)):
        if n <= t:
            before = (t - n) // 2
            src.append(slice(0, n))
            dst.append(slice(before, before + n))
            continue
        profile = mask.any(axis=tuple(a for a in range(3) if a != axis))
        hits = np.flatnonzero(profile)
        centre = (hits[0] + hits[-1] + 1) / 2 if hits.size else n / 2
        start = min(max(int(math.floor(centre - t / 2)), 0), n - t)
        src.append(slice(start, start + t))
        dst.append(slice(0, t))
    out = np.zeros(target, bool)
    out[tuple(dst)] = mask[tuple(src)]
    lost = int(np.count_nonzero(mask)) - int(np.count_nonzero(out))
    return out, lost


# ----------------------------------------------------------------------------------------------- split
def _record_key(r: Any) -> tuple[str, str]:
    if isinstance(r, Mapping):
        return str(r["dataset"]), str(r["case"])
    dataset, case = r
    return str(dataset), str(case)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    f = tuple(float(x) for x in fractions)
    if len(f) != len(SPLITS):
        raise ValueError(f"fractions must be {len(SPLITS)} numbers ({'/'.join(SPLITS)}), got {fractions!r}")
    if not all(math.isfinite(x) and x >= 0 for x in f):
        raise ValueError(f"fractions must be non-negative, got {fractions!r}")
    if not math.isclose(sum(f), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(f):g})")
    return f


def _apportion(n: int, fractions: Sequence[float]) -> list[int]:
    """Split n items by `fractions` (largest remainder: floors first, leftovers to the largest remainders, ties to
    the earlier split). The counts sum to n."""
    exact = [n * f for f in fractions]
    counts = [int(math.floor(e + 1e-9)) for e in exact]
    order = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_cases(records: Iterable[Any], fractions: Sequence[float] = PAPER_FRACTIONS, seed: int = 0) -> list[str]:
    """Assign every case to exactly one of train / val / test (Sec. 4: 80 / 10 / 10), stratified by source dataset.

    `records`: a DataFrame with ``dataset`` and ``case`` columns (e.g. the index), mappings with those keys, or
    ``(dataset, case)`` pairs.  Returns the
    split names in the order of `records`.  Within each dataset the cases are sorted, shuffled with a generator seeded
    by ``(seed, crc32(dataset))`` and cut by the largest-remainder counts of `fractions`; so the result depends only
    on the seed and on the set of cases of that dataset, not on the input order or on the other datasets.
    """
    fractions = _check_fractions(fractions)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(records, pd.DataFrame):
        records = records[["dataset", "case"]].itertuples(index=False, name=None)
    keys = [_record_key(r) for r in records]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"duplicate cases (each case must be in exactly one split): {dup[:5]}")
    by_dataset: dict[str, list[str]] = {}
    for dataset, case in keys:
        by_dataset.setdefault(dataset, []).append(case)
    assigned: dict[tuple[str, str], str] = {}
    for dataset, cases in by_dataset.items():
        rng = np.random.default_rng([int(seed), zlib.crc32(dataset.encode())])
        order = [sorted(cases)[i] for i in rng.permutation(len(cases))]
        start = 0
        for split, count in zip(SPLITS, _apportion(len(order), fractions)):
            for case in order[start:start + count]:
                assigned[(dataset, case)] = split
            start += count
    return [assigned[k] for k in keys]


# ----------------------------------------------------------------------------------------------- files
def _safe_name(case: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case).strip("._") or "case"


def _coords_dtype(shape: Sequence[int]) -> type:
    return np.uint16 if max(shape) - 1 <= np.iinfo(np.uint16).max else np.int32


def _write_case(path: Path, mask: np.ndarray, spacing_mm: float, dataset: str, case: str,
                original_shape: Sequence[int], original_spacing: Sequence[float]) -> int:
    """Write one case's active voxel coordinates to `path` (the caller moves it into place). Returns N."""
    coords = np.argwhere(mask).astype(_coords_dtype(mask.shape))
    with open(path, "wb") as fh:  # a file object: numpy does not append ".npz" to the name
        np.savez_compressed(
            fh, coords=coords, shape=np.asarray(mask.shape, np.int32),
            spacing_mm=np.full(3, spacing_mm, np.float64), dataset=np.asarray(dataset), case=np.asarray(case),
            original_shape=np.asarray(original_shape, np.int32),
            original_spacing_mm=np.asarray(original_spacing, np.float64))
    return len(coords)


def _write_index(df: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _indexed_files(out: Path) -> set[str]:
    """Files listed by an existing index.csv (so that a new run can remove the ones it no longer lists)."""
    index = out / INDEX_FILE
    if not index.exists():
        return set()
    with open(index, newline="") as fh:
        return {row["file"] for row in csv.DictReader(fh) if row.get("file")}


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def consolidate(ids: Iterable[str] | None, out_dir: str | Path, *, shape: int | Sequence[int] = DEFAULT_SHAPE,
                target_mm: float = PAPER_SPACING_MM, seed: int = 0, limit: int | None = None,
                check: bool = True) -> pd.DataFrame:
    """Run the paper's consolidation recipe (Sec. 4) on the datasets `ids` (None: all of :data:`SOURCES`).

    Each case of each dataset is binarized, resampled to `target_mm` isotropic, centre-padded into the `shape` cube
    and written as ``out_dir/<split>/<dataset>__<case>.npz`` (active voxel coordinates, see the module docstring);
    ``out_dir/index.csv`` lists them all.  `limit` caps the cases read per dataset; `check` verifies each dataset
    against its manifest first; `seed` fixes the split.

    :func:`check_sources` runs first: if any dataset cannot be read, :class:`DataAccessError` lists every problem of
    every id, and nothing is read or written.  The cases are staged in a hidden folder inside `out_dir` and moved
    into their split folders only when all are done; on any error the staged and moved files are removed (and
    files of an earlier run that they replaced are put back), so `out_dir` is left as it was.  Files
    listed by an earlier ``index.csv`` in `out_dir` but not by the new one are removed after the new index is in
    place.  Returns the index as a DataFrame (columns :data:`INDEX_COLUMNS`).
    """
    from .loaders import iter_samples

    ids = list(SOURCES) if ids is None else list(dict.fromkeys(ids))
    cube = _cube(shape)
    target_mm = _check_target_mm(target_mm)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of cases per dataset, got {limit!r}")
    problems = check_sources(ids, check=check)
    if problems:
        ready = [i for i in ids if not any(p.startswith(f"{i}:") for p in problems)]
        hint = (f"\nTo consolidate only what is readable now, pass ids {','.join(ready)}." if ready else "")
        raise DataAccessError(f"cannot consolidate {', '.join(ids)}: {len(problems)} problem(s):\n- "
                              + "\n- ".join(problems) + hint)

    out = Path(out_dir)
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".consolidate-", dir=out))
    moved: list[Path] = []
    replaced: list[tuple[Path, Path]] = []
    try:
        rows: list[dict[str, Any]] = []
        names: set[str] = set()
        for dataset in ids:
            for sample in iter_samples(dataset, limit=limit, check=check):
                try:
                    mask = binarize(sample.target)
                    iso = resample_isotropic(mask, sample.spacing, target_mm)
                    padded, lost = center_pad(iso, cube)
                except ValueError as exc:
                    raise ValueError(f"{dataset} case {sample.case} ({sample.path}): {exc}") from exc
                name = f"{dataset}__{_safe_name(sample.case)}.npz"
                if name in names:
                    raise ValueError(f"{dataset}: two cases map to the file name {name}; check loader_args.case in "
                                     f"its manifest")
                names.add(name)
                n = _write_case(staging / name, padded, target_mm, dataset, sample.case, mask.shape, sample.spacing)
                rows.append({"dataset": dataset, "kind": SOURCES[dataset], "case": sample.case,
                             "original_shape": _fmt(mask.shape), "original_spacing": _fmt(sample.spacing),
                             "occupancy": n / float(np.prod(cube)), "active_voxels": n, "lost_voxels": lost,
                             "file": name})
        for row, split in zip(rows, split_cases(rows, seed=seed)):
            row["split"] = split
            row["file"] = f"{split}/{row['file']}"
        old_files = _indexed_files(out)
        backup = staging / "replaced"
        backup.mkdir()
        for row in rows:
            dest = out / row["file"]
            dest.parent.mkdir(exist_ok=True)
            if dest.exists():  # a file of an earlier run: kept aside until the new index is in place
                kept = backup / row["file"].replace("/", "__")
                os.replace(dest, kept)
                replaced.append((kept, dest))
            os.replace(staging / Path(row["file"]).name, dest)
            moved.append(dest)
        df = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        _write_index(df, out / INDEX_FILE)
    except BaseException:
        for p in moved:
            p.unlink(missing_ok=True)
        for kept, dest in replaced:
            os.replace(kept, dest)
        shutil.rmtree(staging, ignore_errors=True)
        for d in [out / s for s in SPLITS] + created:
            try:
                d.rmdir()  # only folders left empty
            except OSError:
                pass
        raise
    shutil.rmtree(staging, ignore_errors=True)
    for f in old_files - set(df["file"]):
        p = (out / f).resolve()
        if p.suffix == ".npz" and p.parent.parent == out.resolve() and p.parent.name in SPLITS:
            p.unlink(missing_ok=True)
    return df


# ----------------------------------------------------------------------------------------------- reading back
def load_coords(path: str | Path) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``(coords, shape)`` of one consolidated case: the active voxel indices as an ``(N, 3)`` int32 array (what
    sparse-convolution libraries take) and the cube shape."""
    with np.load(path) as z:
        coords = z["coords"].astype(np.int32)
        shape = tuple(int(s) for s in z["shape"])
    if coords.ndim != 2 or coords.shape[1] != 3 or len(shape) != 3:
        raise ValueError(f"{path}: coords must be (N, 3) and shape 3 numbers, got {coords.shape} and {shape}")
    if coords.size and (coords.min() < 0 or np.any(coords.max(axis=0) >= np.asarray(shape))):
        raise ValueError(f"{path}: coordinates outside the cube {shape}")
    return coords, shape  # type: ignore[return-value]


def load_consolidated(out_dir: str | Path, split: str) -> Iterator[tuple[str, np.ndarray]]:
    """``(case_id, mask)`` for every case of `split` in a consolidated folder, in index order; `case_id` is the file
    stem ``<dataset>__<case>`` and `mask` a dense boolean cube rebuilt from the stored coordinates."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} unknown; choose {', '.join(SPLITS)}")
    out = Path(out_dir)
    index = out / INDEX_FILE
    if not index.exists():
        raise FileNotFoundError(f"{index} not found; run `companion data consolidate --out {out}` first")
    df = pd.read_csv(index, dtype={"case": str, "file": str, "split": str})
    for f in df.loc[df["split"] == split, "file"]:
        coords, shape = load_coords(out / f)
        mask = np.zeros(shape, bool)
        mask[tuple(coords.T)] = True
        yield Path(f).stem, mask
