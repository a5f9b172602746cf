"""Chapter 0, "Vessel segmentation maps as data": the statistics, figures and checks of the chapter notebook
``notebooks/00_vessel_data.ipynb``.  Every table and figure of the chapter is made by one function here.
"""
from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd

from . import metrics
from .chapter import ChapterRun
from .data import download
from .data.manifests import load_manifests
from .data.vessels import KINDS, VesselTree, generate_dataset, generate_tree
from .results import readable_number
from .results.verdict import property_verdict, threshold_verdict

NOMINAL_SPACING_MM = 0.5  # VAEsselSparse consolidates all its datasets at 0.5 mm isotropic
REAL_VOLUMES = "real MRI shipped in PyPI packages (nilearn MNI152, dipy aniso_vox, nibabel anatomical.nii)"
MANIFESTS = "dataset manifests (data_manifests/), facts as published"

#: Column and index names of the chapter's tables as a reader sees them (the data frames keep short names).
LABELS = {
    "tree": "tree", "kind": "preset", "grid": "grid (voxels per side)", "active_voxels": "vessel voxels",
    "occupancy_pct": "occupancy (%)", "b0": "b0 (components)", "b1": "b1 (loops)", "b2": "b2 (cavities)",
    "skeleton_voxels": "skeleton length (voxels)", "anastomoses": "anastomoses added",
    "centerline_mm": "centerline length (mm)", "bifurcations": "bifurcations",
    "radius_mean_vox": "mean segment radius (voxels)", "radius_max_vox": "largest segment radius (voxels)",
    "max_generation": "deepest generation", "n": "trees",
}


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its column and index names replaced by :data:`LABELS` (for display and the results CSVs)."""
    out = df.rename(columns=LABELS)  # every level of a MultiIndex
    out.index = out.index.set_names([LABELS.get(n, n) for n in out.index.names])
    return out


def volumes_checksum(trees: list[VesselTree]) -> str:
    h = hashlib.sha256()
    for t in trees:
        h.update(np.packbits(t.volume).tobytes())
    return "sha256:" + h.hexdigest()


def glue_scale(run: ChapterRun) -> None:
    """Hand the run's scale and grid to the book page, whose figure captions quote them (myst-nb ``glue``, keys
    ``ch0-scale`` and ``ch0-grid``).  Does nothing where myst-nb is not installed (the notebook outside the book)."""
    try:
        from myst_nb import glue
    except ImportError:
        return
    glue("ch0-scale", run.scale, display=False)
    glue("ch0-grid", run.cfg["grid"], display=False)


def generate(run: ChapterRun) -> list[VesselTree]:
    """The chapter's offline data set: `trees_per_kind` trees of each preset at the scale's grid."""
    cfg = run.cfg
    t0 = time.perf_counter()
    trees = generate_dataset(cfg["trees_per_kind"] * len(KINDS), grid=cfg["grid"], seed=run.seed)
    run.results.add_source("procedural vessel trees", "offline stand-in (companion.data.vessels)",
                           checksum=volumes_checksum(trees), n=len(trees), grid=cfg["grid"], kinds=list(KINDS),
                           seconds=round(time.perf_counter() - t0, 2))
    return trees


def map_statistics(mask: np.ndarray) -> dict:
    """Statistics of any binary vessel map (generated or real): active voxels, occupancy, Betti numbers and
    skeleton length (voxels, Lee et al. 1994 thinning)."""
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, bool)
    b0, b1, b2 = metrics.betti_numbers(mask)
    return {"active_voxels": int(mask.sum()), "occupancy_pct": 100.0 * float(mask.mean()), "b0": b0, "b1": b1,
            "b2": b2, "skeleton_voxels": int(skeletonize(mask).sum())}


def tree_statistics(trees: list[VesselTree]) -> pd.DataFrame:
    """One row per tree: :func:`map_statistics` plus what the generator knows (centerline, radii, loops)."""
    from .progress import progress

    rows = []
    for i, t in enumerate(progress(trees, desc="tree statistics", disable=len(trees) <= 8)):
        r = t.segment_radii()
        rows.append({
            "tree": i, "kind": t.kind, "grid": t.grid, **map_statistics(t.volume), "anastomoses": t.n_loops,
            "centerline_mm": t.centerline_length() * NOMINAL_SPACING_MM, "bifurcations": len(t.bifurcations),
            "radius_mean_vox": float(r.mean()), "radius_max_vox": float(r.max()),
            "max_generation": int(t.label.max()),
        })
    return pd.DataFrame(rows).set_index("tree")


def mean_sd(mean: float, sd: float) -> str:
    """``mean ± sd`` with the sd to two significant digits and the mean to the same decimal place:
    ``2210 ± 99``, ``0.7900 ± 0.0011``, ``1 ± 0``."""
    if not sd > 0:
        return f"{readable_number(float(mean))} ± 0"
    decimals = max(0, 1 - int(np.floor(np.log10(sd))))
    return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def summary_by_kind(stats: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd of each statistic per preset."""
    cols = ["occupancy_pct", "b0", "b1", "skeleton_voxels", "centerline_mm", "bifurcations", "radius_mean_vox",
            "max_generation"]
    g = stats.groupby("kind")[cols]
    mean, sd = g.mean(), g.std(ddof=0)
    out = pd.DataFrame(index=mean.index)
    for c in cols:
        out[c] = [mean_sd(m, s) for m, s in zip(mean[c], sd[c])]
    out.insert(0, "n", g.size())
    return out


def murray_max_error(trees: list[VesselTree]) -> float:
    """Largest relative Murray's-law error |r0^3 - r1^3 - r2^3| / r0^3 over every bifurcation of every tree."""
    worst = 0.0
    for t in trees:
        if len(t.bifurcations) == 0:
            continue
        r = t.node_radius[t.bifurcations]
        err = np.abs(r[:, 0] ** 3 - r[:, 1] ** 3 - r[:, 2] ** 3) / r[:, 0] ** 3
        worst = max(worst, float(err.max()))
    return worst


# ----------------------------------------------------------------------------------------------- figures
def figure_renders(run: ChapterRun, trees: list[VesselTree]):
    """One tree of each preset: 3D surface coloured by radius (top; no axes: a perspective view) and
    maximum-intensity projections along y (bottom, axes in voxels)."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from .render import mip, show_volume

    picks = [next(t for t in trees if t.kind == k) for k in KINDS]
    fig, axes = plt.subplots(2, len(picks), figsize=(4.2 * len(picks), 8.4))
    for j, t in enumerate(picks):
        rmax = float(t.radius.max())
        show_volume(axes[0, j], t.volume, t.radius, title=f"{t.kind} (grid {t.grid}³), colour = radius",
                    size=run.cfg["render_size"], cmap="plasma", clim=(0.0, rmax))
        fig.colorbar(ScalarMappable(Normalize(0.0, rmax), "plasma"), ax=axes[0, j], fraction=0.035, pad=0.01,
                     label="radius (voxels)")
        axes[1, j].imshow(mip(t.volume, axis=1).T, cmap="gray_r", origin="lower")
        axes[1, j].set_title(f"MIP along y, occupancy {100 * t.occupancy:.2f} %", fontsize=9)
        axes[1, j].set_xlabel("x (voxels)")
        axes[1, j].set_ylabel("z (voxels)")
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return fig


def figure_radius_histograms(trees: list[VesselTree]):
    """Distribution of centerline segment radii per preset (log counts), with half a voxel and the generator's
    smallest radius marked."""
    import matplotlib.pyplot as plt

    from .data.vessels import PRESETS

    fig, axes = plt.subplots(1, len(KINDS), figsize=(4.2 * len(KINDS), 3.2), sharey=True)
    for ax, k in zip(axes, KINDS):
        r = np.concatenate([t.segment_radii() for t in trees if t.kind == k])
        ax.hist(r, bins=30, color="#2c7fb8")
        ax.axvline(0.5, color="k", ls="--", lw=0.8, label="half a voxel")
        ax.axvline(PRESETS[k].min_radius_vox, color="#d95f02", ls=":", lw=1.2, label="smallest radius grown")
        ax.set_yscale("log")
        ax.set_title(k, fontsize=10)
        ax.set_xlabel("segment radius (voxels)")
    axes[0].set_ylabel("centerline pieces (log scale)")
    axes[0].legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def figure_topology(stats: pd.DataFrame):
    """Occupancy and loop count of every tree, by preset."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for k in KINDS:
        s = stats[stats.kind == k]
        axes[0].scatter(s.skeleton_voxels, s.occupancy_pct, label=k, s=18)
        axes[1].scatter(s.anastomoses, s.b1, label=k, s=40, alpha=0.4)
    axes[0].set_xlabel("skeleton length (voxels)")
    axes[0].set_ylabel("occupancy (%)")
    axes[1].set_xlabel("anastomoses added by the generator")
    axes[1].set_ylabel("loops b1 measured on the map")
    for axis in (axes[1].xaxis, axes[1].yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    lim = max(1, int(stats.b1.max()), int(stats.anastomoses.max())) + 0.5
    axes[1].plot([0, lim], [0, lim], "k--", lw=0.7)
    axes[0].legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def figure_real_volumes():
    """Mid slices of the real volumes that ship inside PyPI packages (offline), at their own voxel spacing."""
    import matplotlib.pyplot as plt

    from .data import packaged

    vols = [packaged.load("mni152", "t1"), packaged.load("mni152", "gm"), packaged.load("dipy_aniso_vox"),
            packaged.load("nibabel_anatomical")]
    fig, axes = plt.subplots(1, len(vols), figsize=(3.4 * len(vols), 4.0), layout="constrained")
    for ax, v in zip(axes, vols):
        sl = v.array[:, v.array.shape[1] // 2, :]
        nx, nz = sl.shape
        # extent in mm: every voxel drawn at its own spacing, so anisotropic voxels keep their true shape
        ax.imshow(sl.T, cmap="gray", origin="lower", extent=(0, nx * v.spacing[0], 0, nz * v.spacing[2]))
        ax.set_title(f"{v.name}\n{' × '.join(map(str, v.array.shape))} voxels of "
                     f"{' × '.join(f'{s:g}' for s in v.spacing)} mm", fontsize=8)
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("z (mm)")
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.9))  # (left, bottom, width, height)
    return fig, vols


def real_grid_table(vols, spacing_mm: float = NOMINAL_SPACING_MM) -> pd.DataFrame:
    """Each real volume's field of view in mm and the grid it would need at `spacing_mm` (VAEsselSparse's 0.5 mm),
    for comparison with the stand-in grids."""
    rows = {}
    for v in vols:
        fov = [n * s for n, s in zip(v.array.shape, v.spacing)]
        rows[v.name] = {"voxels": " × ".join(map(str, v.array.shape)),
                        "voxel size (mm)": " × ".join(f"{s:g}" for s in v.spacing),
                        "field of view (mm)": " × ".join(f"{f:g}" for f in fov),
                        f"grid at {spacing_mm:g} mm (voxels)": " × ".join(f"{round(f / spacing_mm)}" for f in fov)}
    out = pd.DataFrame(rows).T
    out.index.name = "volume"
    return out


def record_real_sources(run: ChapterRun, vols) -> None:
    """Provenance of the packaged real volumes: where each came from and a checksum of its voxel data."""
    for v in vols:
        digest = hashlib.sha256(np.ascontiguousarray(v.array).tobytes()).hexdigest()
        run.results.add_source(v.name, "real MRI shipped in a PyPI package", checksum=f"sha256:{digest}",
                               source=v.source, shape=list(v.array.shape), spacing_mm=list(v.spacing))


# ----------------------------------------------------------------------------------------------- tables
def preset_table() -> pd.DataFrame:
    """The main knobs of each generator preset."""
    from .data.vessels import PRESETS

    def span(lo_hi) -> str:
        return " – ".join(readable_number(float(x)) for x in lo_hi)

    rows = {}
    for k, p in PRESETS.items():
        rows[k] = {"roots": len(p.roots), "root radius (fraction of the grid side)": p.root_radius_frac,
                   "segment length / radius": span(p.length_ratio),
                   "asymmetry: thinner / thicker child radius": span(p.asymmetry),
                   "branching angle (degrees)": span(p.branch_angle_deg),
                   "tortuosity: wiggle sd / segment length": p.tortuosity,
                   "deepest generation allowed": p.max_generation, "smallest radius (voxels)": p.min_radius_vox,
                   "loops (anastomoses) by default": p.loops}
    out = pd.DataFrame(rows)
    out.index.name = "knob"
    return out


_STAT_NAMES = {"n_used_by_paper": "used by the paper", "n_pairs_challenge_total": "pairs in the whole challenge",
               "in_plane_resolution_mm": "in-plane resolution (mm)", "voxel_size_um": "voxel size (µm)",
               "volume_size_reported_by_paper": "volume size reported by the paper"}


def _stat_name(key: str) -> str:
    """A manifest's statistic key as words: ``n_cases`` -> ``cases``, ``voxel_spacing_mm`` -> ``voxel spacing
    (mm)``."""
    if key in _STAT_NAMES:
        return _STAT_NAMES[key]
    words = key.split("_")
    if words[0] == "n" and len(words) > 1:
        words = words[1:]
    unit = f" ({words.pop()})" if words[-1] in ("mm", "um") and len(words) > 1 else ""
    return " ".join(words).replace("vessap", "VesSAP") + unit.replace("um", "µm")


def published_statistics() -> pd.DataFrame:
    """What the manifests publish about each real dataset (facts as published, with their source)."""
    rows = []
    for m in sorted(load_manifests().values(), key=lambda m: m.id):
        st = dict(m.published_stats)
        if not st:
            continue
        src = st.pop("source", None)
        rows.append({"dataset": m.id, "modality": m.modality or "–", "chapters": ", ".join(m.chapters),
                     "published": "; ".join(f"{_stat_name(k)}: {v}" for k, v in st.items()),
                     "source": src or "–"})
    return pd.DataFrame(rows).set_index("dataset") if rows else pd.DataFrame()


def access_table() -> pd.DataFrame:
    """Every dataset of the book with its access level, license and status on this machine."""
    ms = load_manifests()
    rows = [{"dataset": s.id, "chapters": ", ".join(ms[s.id].chapters),
             "access": s.access, "license": s.license or "not stated", "on this machine": s.state}
            for s in download.status()]
    return pd.DataFrame(rows).set_index("dataset")


# ----------------------------------------------------------------------------------------------- exercises
def murray_area_ratios(tree: VesselTree) -> np.ndarray:
    """Total child cross-section over parent cross-section, (r1² + r2²) / r0², at every bifurcation of `tree`.
    Under Murray's law it lies in (1, 2^(1/3)]: 2^(1/3) for a symmetric split, towards 1 as the split gets lopsided."""
    r = tree.node_radius[tree.bifurcations]
    return (r[:, 1] ** 2 + r[:, 2] ** 2) / r[:, 0] ** 2


def tube_voxels(grid: int, radius_vox: float, length_frac: float = 0.75) -> np.ndarray:
    """A straight tube of `radius_vox` voxels along x through the centre of a `grid`³ volume, `length_frac` of the
    side long, rasterised as the generator rasterises segments (:func:`companion.data.vessels.rasterize_capsules`)."""
    from .data.vessels import rasterize_capsules

    c = (grid - 1) / 2
    half = length_frac * grid / 2
    vol, _, _ = rasterize_capsules(grid, np.array([[c - half, c, c]]), np.array([[c + half, c, c]]),
                                   np.array([radius_vox]), np.array([radius_vox]))
    return vol


def surface_voxels(mask: np.ndarray) -> int:
    """Vessel voxels with at least one background face neighbour (6-neighbourhood): the map's boundary layer."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    return int((mask & ~ndimage.binary_erosion(mask, border_value=0)).sum())


def tube_cost(grids=(64, 128, 256), radius_frac: float = 0.06, thin_radius_vox: float = 1.2) -> pd.DataFrame:
    """Voxel counts of two straight tubes as the grid is refined over the same box: a *resolved* tube whose radius
    is a fixed fraction of the box side (`radius_frac`: 3.8 voxels at 64³), and a *thin* tube that
    stays `thin_radius_vox` voxels wide at every grid (the thinnest vessels a grid shows).  The ratio columns divide
    each count by the one of the previous grid (each grid doubles the last)."""
    rows = []
    for g in grids:
        thick, thin = tube_voxels(g, radius_frac * g), tube_voxels(g, thin_radius_vox)
        rows.append({"grid (voxels per side)": g, "all voxels (dense cost)": g ** 3,
                     "resolved tube: voxels": int(thick.sum()), "resolved tube: surface voxels": surface_voxels(thick),
                     "resolved tube: occupancy (%)": 100 * float(thick.mean()),
                     "thin tube: voxels": int(thin.sum()), "thin tube: occupancy (%)": 100 * float(thin.mean())})
    out = pd.DataFrame(rows).set_index("grid (voxels per side)")
    for c in ("all voxels (dense cost)", "resolved tube: voxels", "resolved tube: surface voxels", "thin tube: voxels"):
        out.insert(out.columns.get_loc(c) + 1, f"{c.split(' (')[0]}: × previous grid", out[c] / out[c].shift(1))
    return out


def with_decimals(df: pd.DataFrame, columns, digits: int = 4) -> pd.DataFrame:
    """A copy of `df` with `columns` written as text with `digits` decimals, for scores close to 1 that three
    significant digits would round to "1" (0.9995 is not a perfect score)."""
    out = df.copy()
    for c in columns:
        out[c] = [f"{float(x):.{digits}f}" for x in out[c]]
    return out


def range_over_trees(df: pd.DataFrame, level: str) -> pd.DataFrame:
    """Per value of index `level`, each column's range over the trees as text: ``"19 – 22"``, or one value when
    all trees agree (numbers as :func:`companion.results.readable_number` writes them)."""
    def span(col: pd.Series) -> str:
        lo, hi = readable_number(col.min()), readable_number(col.max())
        return lo if lo == hi else f"{lo} – {hi}"

    out = df.groupby(level=level).agg(span)
    out.insert(0, "maps", df.groupby(level=level).size())
    out.index = pd.Index([readable_number(v) for v in out.index], name=level)
    return out


def per_tree(df: pd.DataFrame) -> pd.DataFrame:
    """A (tree, setting) table of :func:`dilation_topology` or :func:`blur_topology` with one row per tree: each
    quantity becomes a group of columns, one per setting."""
    setting = df.index.names[-1]
    out = df.unstack(setting)
    out.columns = pd.MultiIndex.from_tuples([(q, readable_number(v)) for q, v in out.columns], names=["", setting])
    return out


def dilation_topology(trees: list[VesselTree], iterations=(0, 1, 2), kind: str = "cerebral") -> pd.DataFrame:
    """Betti numbers and occupancy of every `kind` map dilated by each number of voxels in `iterations`
    (``scipy.ndimage.binary_dilation``, 6-neighbour structuring element; 0 = the map itself)."""
    from scipy import ndimage

    rows = []
    for i, t in enumerate(trees):
        if t.kind != kind:
            continue
        for it in iterations:
            v = ndimage.binary_dilation(t.volume, iterations=it) if it else t.volume
            b0, b1, b2 = metrics.betti_numbers(v)
            rows.append({"tree": i, "dilated by (voxels)": it, "b0 (components)": b0, "b1 (loops)": b1,
                         "b2 (cavities)": b2, "occupancy (%)": 100 * float(v.mean())})
    return pd.DataFrame(rows).set_index(["tree", "dilated by (voxels)"])


def blur_threshold(volume: np.ndarray, sigma: float, level: float = 0.5) -> np.ndarray:
    """The map blurred by a Gaussian of standard deviation `sigma` voxels and thresholded at `level`: a crude model
    of an output that averages each voxel with its neighbours before deciding."""
    from scipy import ndimage

    return ndimage.gaussian_filter(np.asarray(volume, np.float32), sigma, mode="constant") > level


def vanishing_radius(sigma: float, level: float = 0.5) -> float:
    """Radius below which an infinitely long straight tube disappears under :func:`blur_threshold`: the blurred
    value on its axis is 1 - exp(-r² / 2σ²), which reaches `level` at r = σ·sqrt(-2 ln(1 - level))
    (σ·sqrt(2 ln 2) ≈ 1.18 σ for level 0.5)."""
    return float(sigma * np.sqrt(-2.0 * np.log(1.0 - level)))


def blur_topology(trees: list[VesselTree], sigmas=(0.7, 1.0), kind: str = "cerebral") -> pd.DataFrame:
    """Every `kind` map before and after :func:`blur_threshold` at each σ: Betti numbers, kept volume, Dice and
    clDice against the original map."""
    rows = []
    for i, t in enumerate(trees):
        if t.kind != kind:
            continue
        for s in (0.0, *sigmas):
            v = blur_threshold(t.volume, s) if s else t.volume
            b0, b1, b2 = metrics.betti_numbers(v)
            rows.append({"tree": i, "blur σ (voxels)": s, "b0 (components)": b0, "b1 (loops)": b1,
                         "b2 (cavities)": b2, "volume kept (%)": 100 * float(v.sum()) / float(t.volume.sum()),
                         "Dice": metrics.dice(v, t.volume), "clDice": metrics.cldice(v, t.volume)})
    return pd.DataFrame(rows).set_index(["tree", "blur σ (voxels)"])


def _ball(shape, centre, radius: float) -> np.ndarray:
    x, y, z = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius ** 2


def _farthest_spots(vol: np.ndarray, n: int, margin: int) -> list[tuple[int, int, int]]:
    """`n` background voxels chosen one by one, each the farthest from the vessels and from the spots chosen
    before it, at least `margin` voxels inside the box (ties: the first in C order)."""
    from scipy import ndimage

    far = ndimage.distance_transform_edt(~np.asarray(vol, bool))
    keep = np.zeros(far.shape, bool)
    keep[margin:-margin, margin:-margin, margin:-margin] = True
    far = np.where(keep, far, 0.0)
    idx = np.indices(far.shape, dtype=np.float32)
    spots = []
    for _ in range(n):
        spot = tuple(int(c) for c in np.unravel_index(int(np.argmax(far)), far.shape))
        spots.append(spot)
        d = np.sqrt(sum((idx[k] - spot[k]) ** 2 for k in range(3)))
        far = np.minimum(far, d)
    return spots


def controlled_errors(tree: VesselTree, generation: int = 3, margin: float = 1.5, specks: int = 8):
    """Three controlled errors on `tree`'s map, each a few per cent of its voxels or less.

    * *break*: the vessel voxels within ``r + margin`` voxels of the middle of the first tree segment of generation
      `generation` (r = its radius) are removed, which cuts that branch through;
    * *blob*: a ball with about as many voxels as the break removed, where the background is farthest from every
      vessel and from the faces of the box;
    * *specks*: `specks` cubes of 2 × 2 × 2 voxels at the next farthest background spots (thinning deletes such
      a cube entirely: its skeleton is empty).

    Returns ``({name: map}, info)``."""
    vol = np.asarray(tree.volume, bool)
    tree_edges = np.flatnonzero((tree.edge_generation == generation) & (tree.edge_kind == 0))
    if len(tree_edges) == 0:
        raise ValueError(f"tree has no segment of generation {generation}")
    # the first segment of that generation: its edges are consecutive and chained end to start
    run = [int(tree_edges[0])]
    while run[-1] + 1 < len(tree.edges) and tree.edge_generation[run[-1] + 1] == generation and \
            tree.edges[run[-1] + 1, 0] == tree.edges[run[-1], 1]:
        run.append(run[-1] + 1)
    e = tree.edges[run[len(run) // 2]]
    centre = (tree.nodes[e[0]] + tree.nodes[e[1]]) / 2
    cut = _ball(vol.shape, centre, max(float(tree.edge_radius[run[0]]), np.sqrt(3) / 2) + margin) & vol
    removed = int(cut.sum())
    blob_radius = (3 * removed / (4 * np.pi)) ** (1 / 3)
    spots = _farthest_spots(vol, 1 + specks, margin=int(np.ceil(blob_radius)) + 2)
    blob = _ball(vol.shape, spots[0], blob_radius) & ~vol
    speck = np.zeros_like(vol)
    for x, y, z in spots[1:]:
        speck[x:x + 2, y:y + 2, z:z + 2] = True
    speck &= ~vol
    maps = {"one branch cut through": vol & ~cut, "one blob added": vol | blob, f"{specks} specks added": vol | speck}
    info = {"voxels changed": {"one branch cut through": removed, "one blob added": int(blob.sum()),
                               f"{specks} specks added": int(speck.sum())},
            "generation": generation, "break centre": tuple(float(c) for c in np.round(centre, 1)),
            "blob centre": spots[0]}
    return maps, info


def metric_sensitivity(tree: VesselTree, generation: int = 3, specks: int = 8) -> pd.DataFrame:
    """Dice, clDice (Shit et al.), the book's kept-blobs clDice and Betti errors of each error of
    :func:`controlled_errors` against the intact map."""
    maps, info = controlled_errors(tree, generation, specks=specks)
    rows = {}
    for name, pred in maps.items():
        be = metrics.betti_errors(pred, tree.volume)
        changed = info["voxels changed"][name]
        rows[name] = {"voxels changed": changed, "voxels changed (% of the map)": 100 * changed / tree.volume.sum(),
                      "Dice": metrics.dice(pred, tree.volume), "clDice": metrics.cldice(pred, tree.volume),
                      "clDice, kept blobs (book's variant)": metrics.cldice_kept_blobs(pred, tree.volume),
                      "b0 error": be["b0_error"], "b1 error": be["b1_error"], "b2 error": be["b2_error"]}
    out = pd.DataFrame(rows).T
    out.index.name = "error made"
    return out.astype({c: int for c in ("voxels changed", "b0 error", "b1 error", "b2 error")})


# ----------------------------------------------------------------------------------------------- checks
def torus(grid: int = 48, R: float = 14.0, r: float = 5.0) -> np.ndarray:
    """A solid torus in the (x, y) plane, centred in a `grid`³ volume."""
    x, y, z = np.indices((grid,) * 3) - (grid - 1) / 2
    return (np.sqrt(x ** 2 + y ** 2) - R) ** 2 + z ** 2 <= r ** 2


EPS = float(np.finfo(np.float64).eps)  # 2.2 × 10⁻¹⁶: the relative rounding error of one float64 operation
MURRAY_TOLERANCE_EPS = 100  # a few operations' rounding (about 2 × 10⁻¹⁴), far below any modelling error


def record_checks(run: ChapterRun, trees: list[VesselTree], stats: pd.DataFrame) -> pd.DataFrame:
    """Evaluate the chapter's claims (its own checks) with the shared verdict rules and record them."""
    res = run.results
    occ = float(stats.occupancy_pct.max())
    res.record("sparse-occupancy", reproduced={"largest occupancy (%)": occ},
               verdict=threshold_verdict(occ, "<", 5.0, what="largest occupancy (%)", n=len(stats)))
    err = murray_max_error(trees) / EPS  # in units of the float64 rounding error, so the table reads "2.6", not 6e-16
    res.record("murray-law", reproduced={"largest relative error (machine epsilons)": err},
               verdict=threshold_verdict(err, "<", MURRAY_TOLERANCE_EPS, n=len(trees),
                                         what="largest relative error of r0³ = r1³ + r2³, in machine epsilons"))
    loopfree = stats[stats.anastomoses == 0]
    bad = loopfree[(loopfree.b0 != 1) | (loopfree.b1 != 0)]
    res.record("trees-are-trees", reproduced={"maps": len(loopfree), "violations": len(bad)},
               verdict=property_verdict(bad.empty if len(loopfree) else None, n=len(loopfree),
                                        test="(b0, b1) = (1, 0) for every loop-free map", effect=len(bad),
                                        failure=f"trees {', '.join(map(str, bad.index))} have (b0, b1) other than "
                                                f"(1, 0)" if len(bad) else "not measured: no loop-free map "
                                                                           "generated"))
    looped = stats[stats.anastomoses > 0]
    mism = looped[looped.b1 != looped.anastomoses]
    res.record("loops-are-counted", reproduced={"maps": len(looped), "mismatches": len(mism)},
               verdict=property_verdict(mism.empty if len(looped) else None, n=len(looped), effect=len(mism),
                                        test="b1 = loop-closing segments added, for every map with loops",
                                        failure=f"trees {', '.join(map(str, mism.index))}: b1 differs from the "
                                                f"anastomoses added (vessels touching or a loop lost in "
                                                f"rasterisation)" if len(mism) else "not measured: no map with "
                                                                                    "anastomoses at this scale"))
    betti = metrics.betti_numbers(torus())
    res.record("topology-selftest", reproduced={"b0, b1, b2": list(betti)},
               verdict=property_verdict(tuple(betti) == (1, 1, 0), test="Betti numbers of a solid torus = (1, 1, 0)",
                                        failure="the Betti numbers of the torus are wrong", effect=list(betti)))
    t0 = trees[0]
    again = generate_tree(t0.kind, grid=t0.grid, seed=t0.seed)
    same = bool(np.array_equal(again.volume, t0.volume))
    res.record("deterministic", reproduced={"identical": same},
               verdict=property_verdict(same, test="the same seed regenerates a bit-identical map",
                                        failure="the regenerated map differs"))
    return res.scoreboard()
