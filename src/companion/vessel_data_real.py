"""Chapter 0, section "Real maps beside generated ones": real public vessel maps read from the local data folder,
measured with :func:`companion.morphometry.measure` next to the generator's presets, one table, one figure and one
check per statistic.

The real files are not part of the repository (their licences differ): they are read through the data layer
(:mod:`companion.data.real`, every file checked against its manifest), fetched earlier with ``companion data fetch``
or copied now from ``../shared/data`` beside the repository root, or from ``$COMPANION_MIRROR``, used as a mirror.
Where neither is on the machine the section says so and the checks are recorded as not measured.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import morphometry
from .chapter import ChapterRun
from .data.vessels import VesselTree
from .results.verdict import Verdict, all_of, property_verdict

NOMINAL_MM = 0.5  # the stand-ins' nominal voxel (chapter 0's convention: VAEsselSparse's 0.5 mm)
REPO = Path(__file__).resolve().parents[2]
DATA_LABEL = ("public vessel maps read from the local data folder (VesselMNIST3D, TopCoW, AirQuant, VesselExpress) "
              "beside the offline stand-ins")
FLIPPED = ("LPS_ACA_flipped.nii.gz", "LPS_ICA_PCA_flipped.nii.gz")  # constructed L/R test fixtures: left out


@dataclass
class RealMap:
    """One real binary map: its row of the table, a name, the mask, the voxel spacing (None: unknown) and the
    file it came from (name relative to the data folder) with its sha256."""
    group: str
    name: str
    mask: np.ndarray
    spacing: tuple[float, float, float] | None
    file: str
    sha256: str


def data_root() -> Path | None:
    """The folder of the real public files: the first folder of ``$COMPANION_MIRROR`` (folders separated by
    ``os.pathsep``) that holds them, else ``../shared/data`` beside the repository root; None when none does."""
    from .data.mirror import mirror_roots

    for root in mirror_roots() or [REPO.parent / "shared" / "data"]:
        if (root / "vesselmnist3d").is_dir():
            return root
    return None


#: dataset id of the manifests (companion.data.real) -> the files of this section
DATASETS = {"vesselmnist3d": ("vesselmnist3d_64.npz",),
            "topcow_roi": tuple(f"topcow_{m}_roi_{c}.nii.gz" for m in ("mr", "ct") for c in ("003", "014", "023")),
            "airquant_airway": ("github_demo_seg.nii.gz",),
            "vesselexpress_lightsheet": ("Binary_000.tif",)}


def _ready(dataset_id: str, root: Path | None) -> None:
    """Make `dataset_id` readable by :mod:`companion.data.real`: nothing to do when it is fetched already, else
    ``companion.data.download.fetch`` from the folder `root` used as a mirror (a verified copy into
    ``$COMPANION_DATA``, no network) when that folder holds every file of the manifest; raises
    :class:`companion.data.integrity.DataAccessError` otherwise."""
    from .data import download, mirror
    from .data.integrity import DataAccessError
    from .data.manifests import get_manifest

    if not download.verify(dataset_id):
        return
    if root is None:
        raise DataAccessError(f"{dataset_id}: not fetched; run `companion data fetch {dataset_id}` (add --mirror DIR "
                              f"for a local copy)")
    m = get_manifest(dataset_id)
    folders = mirror.dataset_folders(m, [root])
    missing = [rf.name for rf in m.local_files() if not folders or mirror.find(rf, folders) is None]
    if missing:
        raise DataAccessError(f"{dataset_id}: not fetched, and the data folder lacks {', '.join(missing)}")
    download.fetch(dataset_id, progress=False, mirror=root)


def _load_official(root: Path | None, per_class: int) -> list[RealMap]:
    """:func:`load_real_maps` through the official loader, :mod:`companion.data.real` (datasets fetched, or
    fetched now from the data folder as a mirror)."""
    from .data import download, real
    from .data.manifests import get_manifest

    for d in DATASETS:
        _ready(d, root)

    def digest(dataset_id, name):
        return _sha256(download.local_path(get_manifest(dataset_id), name))

    out = []
    x, y = real.load_vesselmnist3d(size=64, split="test")
    sha = digest("vesselmnist3d", "vesselmnist3d_64.npz")
    for label, what in ((0, "healthy"), (1, "aneurysm")):
        for i in np.flatnonzero(y == label)[:per_class]:
            out.append(RealMap("VesselMNIST3D", f"test {i} ({what})", x[i], None,
                               "vesselmnist3d/vesselmnist3d_64.npz", sha))
    for name in DATASETS["topcow_roi"]:
        v = real.load("topcow_roi", name)
        group = "TopCoW MRA" if "_mr_" in name else "TopCoW CTA"
        out.append(RealMap(group, name.split(".")[0], v.array > 0, tuple(v.spacing), v.source,
                           digest("topcow_roi", name)))
    v = real.load("airquant_airway", "github_demo_seg.nii.gz")
    out.append(RealMap("airway tree (AirQuant)", "github_demo_seg", morphometry.bbox_crop(v.array, 1),
                       tuple(v.spacing), v.source, digest("airquant_airway", "github_demo_seg.nii.gz")))
    v = real.load("vesselexpress_lightsheet", "Binary_000.tif")
    out.append(RealMap("light-sheet mask (VesselExpress)", "Binary_000", np.asarray(v.array, bool), v.spacing,
                       v.source, digest("vesselexpress_lightsheet", "Binary_000.tif")))
    return out


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def load_real_maps(root: Path | None, per_class: int) -> tuple[list[RealMap], str]:
    """The section's real maps from the data folder `root`:

    * VesselMNIST3D (64³, values 0/255): the first `per_class` healthy (label 0) and the first `per_class`
      aneurysm (label 1) segments of the test split, in file order; no voxel size is stored (voxels);
    * TopCoW: the six circle-of-Willis crops (3 MRA, 3 CTA), binarised (label > 0), spacing from the NIfTI header
      (mm); the two ``*_flipped`` files are constructed left/right test fixtures, not anatomy, and are left out;
    * AirQuant: the airway tree mask, 512 × 512 × 130 at 0.66 × 0.66 × 3 mm, cropped to its bounding box;
    * VesselExpress: the light-sheet vessel mask ``Binary_000.tif`` (100³; no voxel size recorded, origin of the
      mask not stated: voxels).

    Read through :mod:`companion.data.real` only, so every file is checked against its manifest: datasets already
    fetched are used as they are, the others are fetched from `root` used as a mirror (None: no mirror, and a
    dataset not fetched raises :class:`companion.data.integrity.DataAccessError` with the command that fetches it).
    Returns the maps and how they were read."""
    return _load_official(root, per_class), "companion.data.real"


def fetched() -> bool:
    """Every dataset of this section is fetched and verified in ``$COMPANION_DATA`` (no data folder needed)."""
    from .data import download

    return all(not download.verify(d) for d in DATASETS)


def record_sources(run: ChapterRun, maps: list[RealMap]) -> None:
    seen = set()
    for m in maps:
        if m.file in seen:
            continue
        seen.add(m.file)
        run.results.add_source(m.file, "real vessel map (local copy of public data, not in the repository)",
                               checksum=m.sha256, spacing=list(m.spacing) if m.spacing else "not recorded",
                               maps=sum(1 for x in maps if x.file == m.file))


# ----------------------------------------------------------------------------------------------- measuring
#: The rows of the table in order: (row, real?, units)
MM, VOX, NOMINAL = "mm", "voxels", f"mm (nominal {NOMINAL_MM:g} mm voxel)"


def measure_all(real: list[RealMap], trees: list[VesselTree], beds: list[np.ndarray]) -> dict[str, dict]:
    """Every map measured, grouped by row: ``{row: {"real": bool, "units": str, "maps": [Morphometry, ...]}}``.
    Real maps with a known spacing are measured in mm, the others in voxels; the chapter's trees in mm at the nominal
    voxel (and the cerebral ones also in voxels, to set beside VesselMNIST3D); chapter 2's capillary beds in
    voxels."""
    rows: dict[str, dict] = {}

    def add(row, is_real, units, measured):
        rows.setdefault(row, {"real": is_real, "units": units, "maps": []})["maps"].append(measured)

    for m in real:
        add(m.group, True, MM if m.spacing else VOX, morphometry.measure(m.mask, m.spacing or (1.0, 1.0, 1.0)))
    cerebral = []
    for kind in ("airway", "cerebral", "pulmonary"):
        for t in trees:
            if t.kind == kind:
                add(f"{kind} preset", False, NOMINAL, morphometry.measure(t.volume, (NOMINAL_MM,) * 3))
                if kind == "cerebral":
                    cerebral.append(rows["cerebral preset"]["maps"][-1])
    for c in cerebral:  # the same trees in voxels: every length divided by the nominal voxel
        add("cerebral preset, in voxels", False, VOX, c.scaled(1.0 / NOMINAL_MM))
    for b in beds:
        add("capillary bed (chapter 2 stand-in)", False, VOX, morphometry.measure(b, (1.0, 1.0, 1.0)))
    return rows


#: statistic -> (column, how it is pooled: "dist" = pooled over the row's segments / voxels, "map" = one per map)
LABEL = {"occupancy": "occupancy", "radius": "radius", "segment-length": "segment length",
         "bifurcation-density": "bifurcations per length", "tortuosity": "tortuosity", "murray": "Murray exponent",
         "b0": "b0", "b1": "b1", "b2": "b2"}
STATS = {
    "occupancy": ("occupancy of the bounding box (%)", "map"),
    "radius": ("radius", "dist"),
    "segment-length": ("segment length", "dist"),
    "bifurcation-density": ("bifurcations per unit length", "map"),
    "tortuosity": ("tortuosity (path / chord)", "dist"),
    "betti": ("b0, b1, b2", "map"),
    "murray": ("Murray exponent", "dist"),
}


def values(row: dict, stat: str) -> np.ndarray:
    """The row's values of one statistic: pooled over all its maps for a distribution, one per map otherwise
    (for "betti": an array of shape (maps, 3))."""
    ms = row["maps"]
    if stat == "occupancy":
        return np.array([m.occupancy_pct for m in ms])
    if stat == "bifurcation-density":
        return np.array([m.bifurcations_per_length for m in ms])
    if stat == "betti":
        return np.array([m.betti for m in ms]).reshape(-1, 3)
    attr = {"radius": "radii", "segment-length": "segment_length", "tortuosity": "tortuosity", "murray": "murray"}[stat]
    return np.concatenate([getattr(m, attr) for m in ms]) if ms else np.zeros(0)


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    a = abs(x)
    if a == 0 or float(x).is_integer() and a < 1e4:
        return str(int(x))
    return f"{x:.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 1 else f"{x:.2g}"


def _fmt_against(med: float, lo: float, hi: float) -> tuple[str, str, str]:
    """The stand-in's median and the real bounds as text, with more digits where rounding would make the median
    look equal to a bound it lies outside of (1.1799 against 1.1801 must not read "1.18 outside [1.18, ...]")."""
    for digits in (None, 4, 6):
        f = _fmt if digits is None else (lambda x, d=digits: "–" if not np.isfinite(x) else f"{x:.{d}g}")
        out = f(med), f(lo), f(hi)
        inside = lo <= med <= hi
        if inside or (out[0] != out[1] and out[0] != out[2]):
            return out
    return out


def _dist_cell(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return "–"
    q1, q2, q3 = np.percentile(v, [25, 50, 75])
    return f"{_fmt(q2)} [{_fmt(q1)}, {_fmt(q3)}]"


def _map_cell(v: np.ndarray) -> str:
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return "–"
    if len(v) == 1 or v.min() == v.max():
        return _fmt(float(v[0]))
    return f"{_fmt(float(np.median(v)))} ({_fmt(float(v.min()))}–{_fmt(float(v.max()))})"


def morphometry_table(rows: dict[str, dict]) -> pd.DataFrame:
    """The section's table: one row per real data set and per generator preset, each statistic as median
    [quartiles] of its pooled distribution, or median (range over maps) of a per-map value."""
    out = []
    for name, row in rows.items():
        r = {"maps": name, "real or generated": "real" if row["real"] else "generated", "units": row["units"],
             "n maps": len(row["maps"])}
        for stat, (col, how) in STATS.items():
            v = values(row, stat)
            if stat == "betti":
                r[col] = "; ".join(_map_cell(v[:, k].astype(float)) for k in range(3))
            else:
                r[col] = _dist_cell(v) if how == "dist" else _map_cell(v)
        r["segments"] = int(sum(m.segment_length.size for m in row["maps"]))
        r["bifurcations fitted"] = int(sum(m.murray.size for m in row["maps"]))
        out.append(r)
    return pd.DataFrame(out).set_index("maps")


# ----------------------------------------------------------------------------------------------- checks
#: (stand-in row, real rows pooled as its reference, the chapters whose verdicts lean on the pairing)
PAIRS = (
    ("cerebral preset", ("TopCoW MRA", "TopCoW CTA"), "chapter 1 (VAEsselSparse)"),
    ("cerebral preset, in voxels", ("VesselMNIST3D",), "chapters 1 and 1b (VAEsselSparse)"),
    ("airway preset", ("airway tree (AirQuant)",), "chapter 1 (VAEsselSparse)"),
    ("capillary bed (chapter 2 stand-in)", ("light-sheet mask (VesselExpress)",), "chapter 2 (VpbSD)"),
)
BAND = 2.0  # per-map statistics: the real range widened by this factor each way


def interval(real_rows: list[dict], stat: str, k: int | None = None) -> tuple[float, float]:
    """The real interval a stand-in is held against: the quartiles [Q1, Q3] of a pooled distribution, or the range
    [min / 2, 2 max] of a per-map value over the real maps (`k`: which Betti number)."""
    how = STATS[stat][1]
    v = np.concatenate([values(r, stat) if k is None else values(r, stat)[:, k] for r in real_rows]).astype(float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    if how == "dist":
        q1, q3 = np.percentile(v, [25, 75])
        return float(q1), float(q3)
    return float(v.min()) / BAND, float(v.max()) * BAND


def _median(row: dict, stat: str, k: int | None = None) -> float:
    v = values(row, stat) if k is None else values(row, stat)[:, k]
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else float("nan")


def pair_results(rows: dict[str, dict]) -> pd.DataFrame:
    """For every statistic and pairing of :data:`PAIRS`: the stand-in's median, the real interval, inside or not."""
    out = []
    for stat, (col, how) in STATS.items():
        for stand_in, reals, chapters in PAIRS:
            if stand_in not in rows or not all(r in rows for r in reals):
                continue
            ks = (0, 1, 2) if stat == "betti" else (None,)
            for k in ks:
                lo, hi = interval([rows[r] for r in reals], stat, k)
                med = _median(rows[stand_in], stat, k)
                ok = None if not (np.isfinite(lo) and np.isfinite(med)) else bool(lo <= med <= hi)
                out.append({"statistic": LABEL[stat if k is None else f"b{k}"], "check": stat, "stand-in": stand_in,
                            "real": " + ".join(reals), "units": rows[stand_in]["units"], "stand-in median": med,
                            "real low": lo, "real high": hi, "inside": ok, "chapters": chapters,
                            "rule": "median inside the real quartiles" if how == "dist" else
                                    f"median inside [min / {BAND:g}, {BAND:g} max] of the real maps"})
    return pd.DataFrame(out)


def _verdict(p: pd.Series) -> Verdict:
    what = f"{p['statistic']} of the {p['stand-in']} against {p['real']}"
    med, lo, hi = _fmt_against(p["stand-in median"], p["real low"], p["real high"])
    where = f"[{lo}, {hi}]"
    return property_verdict(p["inside"], n=1, effect=float(p["stand-in median"]),
                            test=f"{what}: {p['rule']} {where}",
                            failure=f"not measured: {what}" if p["inside"] is None else
                            f"{what}: median {med} outside {where}")


def record_real_checks(run: ChapterRun, pairs: pd.DataFrame | None) -> None:
    """One check per statistic in the scoreboard: it holds when every pairing's stand-in median lies inside its
    real interval.  Without the data folder every check is recorded as not measured."""
    for stat in STATS:
        cid = f"real-{stat}"
        if pairs is None or pairs.empty:
            run.results.record(cid, reproduced=None, reason="not measured: the real data folder is not on this "
                                                            "machine")
            continue
        sub = pairs[pairs.check == stat]
        v = all_of([_verdict(p) for _, p in sub.iterrows()])
        reproduced = {}
        for _, p in sub.iterrows():
            med, lo, hi = _fmt_against(p["stand-in median"], p["real low"], p["real high"])
            where = "inside" if p["inside"] else "outside" if p["inside"] is False else "not measured"
            reproduced[f"{p['statistic']}, {p['stand-in']}"] = f"{med} ({where} [{lo}, {hi}])"
        run.results.record(cid, reproduced=reproduced, verdict=Verdict(v.holds, v.reason,
                                                                       {**v.evidence, "n": len(sub)}))


def pairs_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairings of the checks as a readable table."""
    t = pairs.copy()
    texts = [_fmt_against(m, a, b) for m, a, b in zip(t["stand-in median"], t["real low"], t["real high"])]
    t["real interval"] = [f"[{a}, {b}]" for _, a, b in texts]
    t["stand-in median"] = [m for m, _, _ in texts]
    t["inside"] = t["inside"].map({True: "inside", False: "outside", None: "not measured"})
    return t[["statistic", "stand-in", "real", "units", "stand-in median", "real interval", "inside",
              "chapters"]].set_index(["statistic", "stand-in"])


def verdict_text(pairs: pd.DataFrame | None) -> str:
    """The paragraph of the page that says which statistics fall outside and whose verdicts that weakens (glued
    into the text, so it follows the run)."""
    if pairs is None or pairs.empty:
        return ("The real data folder is not on this machine, so nothing was measured here and no check was "
                "decided; the text above describes the measurements, not their outcome.")
    lines = []
    for stand_in, reals, chapters in PAIRS:
        sub = pairs[pairs["stand-in"] == stand_in]
        if sub.empty:
            continue
        out = sub[sub.inside == False]  # noqa: E712
        ins = sub[sub.inside == True]  # noqa: E712
        unit = sub["units"].iloc[0]
        name = f"the {stand_in}" + ("" if stand_in.endswith("in voxels") else
                                    " in mm at the nominal voxel" if unit == NOMINAL else f", in {unit}")
        against = " and ".join(reals)
        if out.empty:
            lines.append(f"* {name[0].upper() + name[1:]} lies inside the {against} interval on all "
                         f"{len(ins)} statistics.")
        else:
            what = ", ".join("{} ({} against [{}, {}])".format(s, *_fmt_against(m, a, b)) for s, m, a, b in
                             zip(out.statistic, out["stand-in median"], out["real low"], out["real high"]))
            inside = ", ".join(ins.statistic) or "none"
            lines.append(f"* {name[0].upper() + name[1:]}, against {against}: outside on {len(out)} of {len(sub)} "
                         f"statistics: {what}; inside on {inside}. This weakens {chapters} as far as its "
                         f"verdicts depend on these properties of the stand-in.")
    return "\n".join(lines)


def glue_real(rows: dict[str, dict] | None, pairs: pd.DataFrame | None, run: ChapterRun) -> None:
    """Hand the section's computed numbers and its verdict paragraph to the page (myst-nb ``glue``); every key
    exists whether or not the data folder was found."""
    try:
        from IPython.display import Markdown
        from myst_nb import glue
    except ImportError:
        return
    glue("ch0-real-verdicts", Markdown(verdict_text(pairs)), display=False)
    n = {"VesselMNIST3D": 0, "TopCoW MRA": 0, "TopCoW CTA": 0}
    if rows:
        n.update({k: len(v["maps"]) for k, v in rows.items() if k in n})
    glue("ch0-real-vmnist-n", str(n["VesselMNIST3D"]), display=False)
    glue("ch0-real-vmnist-per-class", str(run.cfg["real_per_class"]), display=False)
    glue("ch0-real-beds", str(run.cfg["capillary_beds"]), display=False)
    held = "–" if pairs is None or pairs.empty else str(sum(
        1 for s in STATS if pairs[pairs.check == s]["inside"].eq(True).all()))
    glue("ch0-real-checks-held", held, display=False)
    glue("ch0-real-checks", str(len(STATS)), display=False)
    med = lambda row, stat: _fmt(_median(rows[row], stat)) if rows and row in rows else "–"  # noqa: E731
    for key, row, stat in (("topcow-radius", "TopCoW MRA", "radius"), ("cerebral-radius", "cerebral preset", "radius"),
                           ("airway-radius", "airway tree (AirQuant)", "radius"),
                           ("airway-preset-radius", "airway preset", "radius"),
                           ("topcow-murray", "TopCoW MRA", "murray"), ("cerebral-murray", "cerebral preset", "murray"),
                           ("airway-murray", "airway tree (AirQuant)", "murray"),
                           ("preset-murray", "airway preset", "murray")):
        glue(f"ch0-real-{key}", med(row, stat), display=False)


# ----------------------------------------------------------------------------------------------- figure
def _panel(ax, mask, spacing, axis, title, extent_max, bar, unit, slab=None):
    """One MIP along `axis` drawn in physical units (or voxels) on a square of side `extent_max`, with a scale bar
    of length `bar` under it; `slab` (voxels) projects only that many central planes (dense beds)."""
    from .render import mip

    sp = spacing or (1.0, 1.0, 1.0)
    if slab and mask.shape[axis] > slab:
        lo = (mask.shape[axis] - slab) // 2
        mask = np.take(mask, np.arange(lo, lo + slab), axis=axis)
    img = mip(mask, axis=axis)
    keep = [i for i in range(3) if i != axis]
    w, h = img.shape[0] * sp[keep[0]], img.shape[1] * sp[keep[1]]
    ax.imshow(img.T, cmap="gray_r", origin="lower", extent=(0, w, 0, h), interpolation="nearest")
    ax.set_xlim(0, extent_max)
    ax.set_ylim(-0.14 * extent_max, extent_max)
    ax.set_aspect("equal")
    ax.plot([0.02 * extent_max, 0.02 * extent_max + bar], [-0.07 * extent_max] * 2, color="#d95f02", lw=3,
            solid_capstyle="butt")
    ax.text(0.04 * extent_max + bar, -0.07 * extent_max, f"{bar:g} {unit}", color="#d95f02", fontsize=8,
            va="center")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _bar(extent: float) -> float:
    """A round scale-bar length about a fifth of `extent`."""
    target = extent / 5
    p = 10 ** np.floor(np.log10(target))
    return float(max(m * p for m in (1, 2, 5) if m * p <= target))


SLAB = 16  # voxels: the dense beds are projected over a central slab only (a full MIP is nearly all black)


def figure_real_beside_generated(real: list[RealMap], trees: list[VesselTree], beds: list[np.ndarray]):
    """Maximum-intensity projections of real and generated maps, three rows each drawn at one scale: brain
    arteries (mm), lung trees (mm), maps without a voxel size (voxels).  Stand-ins in mm at the nominal voxel."""
    import matplotlib.pyplot as plt

    def first(group):
        return next((m for m in real if m.group == group), None)

    def tree(kind):
        return next(t for t in trees if t.kind == kind)

    vm = [m for m in real if m.group == "VesselMNIST3D"]
    vm = [next((m for m in vm if "healthy" in m.name), None), next((m for m in vm if "aneurysm" in m.name), None)]
    nom = (NOMINAL_MM,) * 3
    ls = first("light-sheet mask (VesselExpress)")
    mr, ct, aw = first("TopCoW MRA"), first("TopCoW CTA"), first("airway tree (AirQuant)")
    # (panel title, mask or None when the real data is absent, spacing, projection axis)
    rows = [
        ("mm", [(f"TopCoW MRA {mr.name[-3:]}" if mr else "TopCoW MRA", mr and mr.mask, mr and mr.spacing, 2),
                (f"TopCoW CTA {ct.name[-3:]}" if ct else "TopCoW CTA", ct and ct.mask, ct and ct.spacing, 2),
                ("cerebral preset (top view)", tree("cerebral").volume, nom, 2)]),
        ("mm", [("airway tree (AirQuant), coronal", aw and aw.mask, aw and aw.spacing, 1),
                ("airway preset", tree("airway").volume, nom, 1), ("pulmonary preset", tree("pulmonary").volume,
                                                                   nom, 1)]),
        ("voxels", [(f"VesselMNIST3D {vm[0].name}" if vm[0] else "VesselMNIST3D healthy", vm[0] and vm[0].mask,
                     None, 2),
                    (f"VesselMNIST3D {vm[1].name}" if vm[1] else "VesselMNIST3D aneurysm", vm[1] and vm[1].mask,
                     None, 2),
                    (f"light-sheet mask (VesselExpress), {SLAB}-voxel slab", ls and ls.mask, None, 2),
                    (f"capillary bed (chapter 2 stand-in), {SLAB}-voxel slab", beds[0], None, 2)]),
    ]
    ncol = max(len(r[1]) for r in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(3.0 * ncol, 3.25 * len(rows)))
    for i, (unit, panels) in enumerate(rows):
        ext = max(max(s * n for s, n, a in zip(sp or (1, 1, 1), m.shape, range(3)) if a != ax)
                  for _, m, sp, ax in panels if m is not None)
        for j in range(ncol):
            a = axes[i, j]
            if j >= len(panels):
                a.set_axis_off()
                continue
            title, m, sp, axis = panels[j]
            if m is None:
                a.text(0.5, 0.5, "real data folder\nnot on this machine", ha="center", va="center", fontsize=9)
                a.set_title(title, fontsize=8)
                a.set_axis_off()
                continue
            _panel(a, m, sp, axis, title, ext, _bar(ext), unit, slab=SLAB if "slab" in title else None)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig
