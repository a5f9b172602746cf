"""Cerebral-like vessel maps with inserted pathologies: the offline stand-in for INSTED (healthy / stenosis / aneurysm).

The VAEsselSparse paper classifies binary vessel segmentations of INSTED into three classes (healthy, stenosis,
aneurysm; 160 samples).  Offline, this module makes binary ``grid**3`` maps of the same three classes from the
procedural trees of :mod:`companion.data.vessels`.  Public entry points: :func:`generate_pathology_set`,
:func:`generate_pathology` (one sample), :func:`pathology_tree`, :func:`insert_stenosis`, :func:`insert_aneurysm`,
:func:`redraw` and :func:`tree_segments`.

What is taken from the paper (facts)
    three classes named healthy / stenosis / aneurysm and 160 samples in the real set.

What is ours (choices, not from the paper)
    * The class split: INSTED's split is not given in the paper, so the default is balanced (``n // 3`` per class,
      the remainder going to the first classes).
    * The trees: the ``"cerebral"`` preset with :data:`TREE_OVERRIDES`.  The preset's own root radius (0.025 of the
      grid, 1.2 voxels at grid 48) is too thin for a visible stenosis, so the roots are 0.05 of the grid (2.4 voxels
      at grid 48, 1.6 at grid 32) and the trees stop at generation 5 (keeps generation fast; the pathologies sit on
      the thick proximal vessels anyway).  Every sample grows its own tree (its own seed), so tree shape varies in
      all classes.
    * One rasteriser for every class: :func:`redraw` re-draws the tree's centerline capsules (per-end radii, drawn at
      least at ``_DRAW_MIN_RADIUS`` like the generator does); a healthy redraw is voxel-identical to
      ``tree.volume``.  Healthy maps are redraws too, so a classifier cannot key on a rasteriser difference.
    * Stenosis: on one segment (a tree branch, not a root stub nor a communicating segment, with radius at least
      :func:`min_pathology_radius`, i.e. ``max(1, 0.025 * grid)`` voxels, and length at least ``6 R``; drawn with
      probability proportional to ``R**2``, so thick proximal vessels are preferred) the radius becomes
      ``R * (1 - s * exp(-(t - t0)**2 / (2 * w**2)))`` with ``t`` the arclength, ``s ~ U(0.3, 0.9)``,
      ``w ~ U(1, 2) * R`` (capped at ``L / 6`` on short segments) and ``t0 ~ U(2.5 w, L - 2.5 w)`` so that the
      narrowing has faded at the segment's junctions.  The narrowed radius is drawn *as is*, also below the draw
      minimum: a severe stenosis of a thin vessel may then leave a gap in the map -- which is also how a severe
      stenosis reads in a real segmentation.
    * Aneurysm (saccular): at a bifurcation whose parent radius ``rp`` is at least :func:`min_pathology_radius`, an
      ellipsoid with semi-axes ``R * (1, a, b)``, ``a, b ~ U(0.75, 1.25)``, a uniformly random orientation and
      ``R = k * rp``, ``k ~ U(1.5, 4)``.  Its centre lies beyond the bifurcation apex, along the parent direction
      plus the children's bisector (tilted by at most 15 degrees), at ``rp + neck_length + h`` from the junction
      (``h`` the ellipsoid's extent along that direction, ``neck_length ~ U(0.2, 0.5) * R``).  A neck capsule joins
      the junction region to the centre: radius ``U(0.5, 0.7) * R`` at the sac, clamped at the parent's drawn
      radius at its start inside the parent so that its rounded cap does not bulge back over the vessels.  Sac and
      neck are united with the healthy map (where the vessels cut a few stray voxels off the blob, only its largest
      26-connected piece is added); the whole sac keeps ``margin`` voxels from the faces of the box (other
      bifurcations or smaller ``k`` are tried when it does not fit).

Determinism: item ``i`` of :func:`generate_pathology_set` uses child ``i`` of ``np.random.SeedSequence(seed)``
(like :func:`companion.data.vessels.generate_dataset`); no global random state.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .labelled import check_grid, generate_labelled, resolve_class_sizes
from .vessels import _DRAW_MIN_RADIUS, VesselTree, generate_tree, rasterize_capsules

__all__ = [
    "CLASSES", "TREE_OVERRIDES", "PathologySample", "Segment", "default_class_sizes", "generate_pathology",
    "generate_pathology_set", "insert_aneurysm", "insert_stenosis", "min_pathology_radius", "pathology_tree",
    "redraw", "stenosis_profile", "tree_segments",
]

CLASSES: tuple[str, ...] = ("healthy", "stenosis", "aneurysm")

#: TreePreset overrides of the ``"cerebral"`` preset (our choice, see the module docstring)
TREE_OVERRIDES: dict[str, Any] = {"root_radius_frac": 0.05, "max_generation": 5}

STENOSIS_SEVERITY = (0.3, 0.9)  # s
STENOSIS_WIDTH = (1.0, 2.0)  # w / R
ANEURYSM_K = (1.5, 4.0)  # R / parent radius
ANEURYSM_AXES = (0.75, 1.25)  # a, b
ANEURYSM_NECK_RADIUS = (0.5, 0.7)  # neck radius / R
ANEURYSM_NECK_LENGTH = (0.2, 0.5)  # neck length / R
ANEURYSM_TILT_DEG = 15.0
MARGIN_VOX = 1.0

#: radius_fn(edge_ids, frac, base) -> radii: see :func:`redraw`
RadiusFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def min_pathology_radius(grid: int) -> float:
    """Smallest model radius (voxels) of a vessel that may carry a pathology: ``max(1, 0.025 * grid)``."""
    return max(1.0, 0.025 * float(grid))


def pathology_tree(grid: int, seed: int) -> VesselTree:
    """The healthy cerebral-like tree every sample starts from: ``generate_tree("cerebral", grid, seed,
    **TREE_OVERRIDES)``."""
    return generate_tree("cerebral", check_grid(grid), int(seed), **TREE_OVERRIDES)


# ---------------------------------------------------------------------------------------------------------------
# Segments of a tree and the common rasteriser
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Segment:
    """One segment of a :class:`VesselTree`: a run of consecutive edges with one radius."""

    edge_ids: np.ndarray  # int64 (m,) rows of tree.edges, in order
    node_ids: np.ndarray  # int64 (m + 1,) nodes along the segment
    arclength: np.ndarray  # float64 (m + 1,) cumulative arclength (voxels) at the nodes
    radius: float  # model radius (voxels)
    generation: int
    kind: int  # edge_kind: 0 root/branch, 1 ring, 2 anastomosis

    @property
    def length(self) -> float:
        return float(self.arclength[-1])

    @property
    def is_root(self) -> bool:
        return self.kind == 0 and self.generation == 1


def tree_segments(tree: VesselTree) -> list[Segment]:
    """Split ``tree.edges`` into segments.

    The generator appends each segment's edges consecutively; a new segment starts where an edge does not continue
    the previous one, at a node of degree other than 2 (a junction), or where generation, kind or radius change.
    """
    e = tree.edges
    E = len(e)
    if E == 0:
        return []
    deg = np.bincount(e.ravel(), minlength=len(tree.nodes))
    rad = tree.segment_radii()
    kind = tree.edge_kind if tree.edge_kind is not None else np.zeros(E, dtype=np.int8)
    gen = tree.edge_generation
    start = np.ones(E, dtype=bool)
    start[1:] = (
        (e[1:, 0] != e[:-1, 1]) | (deg[e[1:, 0]] != 2) | (gen[1:] != gen[:-1]) | (kind[1:] != kind[:-1])
        | (rad[1:] != rad[:-1])
    )
    bounds = np.append(np.nonzero(start)[0], E)
    lens = np.linalg.norm(tree.nodes[e[:, 1]] - tree.nodes[e[:, 0]], axis=1)
    out = []
    for i0, i1 in zip(bounds[:-1], bounds[1:]):
        ids = np.arange(i0, i1)
        out.append(Segment(
            edge_ids=ids,
            node_ids=np.append(e[ids, 0], e[ids[-1], 1]),
            arclength=np.concatenate([[0.0], np.cumsum(lens[ids])]),
            radius=float(rad[i0]),
            generation=int(gen[i0]),
            kind=int(kind[i0]),
        ))
    return out


def redraw(tree: VesselTree, radius_fn: RadiusFn | None = None, *, step: float = 0.5) -> np.ndarray:
    """Re-rasterise ``tree`` from its centerline capsules; returns a bool ``grid**3`` map.

    Every edge is a capsule of radius ``base = max(edge radius, _DRAW_MIN_RADIUS)`` (the generator's own drawing
    rule, so ``redraw(tree)`` reproduces ``tree.volume`` voxel for voxel).  With ``radius_fn`` every edge is cut into
    pieces at most ``step`` voxels long and each piece is a capsule with per-end radii
    ``radius_fn(edge_ids, frac, base)`` (``frac`` in [0, 1] the position along the edge, ``base`` the default radius
    of that edge); the returned radii are drawn as they are (not clamped), so a pathology may narrow a vessel below
    the draw minimum.  The union of the pieces of an unchanged edge is exactly that edge's capsule.
    """
    e = tree.edges
    g = int(tree.grid)
    if len(e) == 0:
        return np.zeros((g, g, g), dtype=bool)
    a, b = tree.nodes[e[:, 0]], tree.nodes[e[:, 1]]
    base = np.maximum(tree.segment_radii(), _DRAW_MIN_RADIUS)
    if radius_fn is None:
        return rasterize_capsules(g, a, b, base, base)[0]
    if not step > 0:
        raise ValueError(f"step must be positive, got {step}")
    m = np.maximum(1, np.ceil(np.linalg.norm(b - a, axis=1) / step).astype(np.int64))
    eid = np.repeat(np.arange(len(e)), m)
    k = np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m)
    mm = m[eid].astype(np.float64)
    f0, f1 = k / mm, (k + 1) / mm
    d = (b - a)[eid]
    p0 = a[eid] + f0[:, None] * d
    p1 = a[eid] + f1[:, None] * d
    last = k == m[eid] - 1
    p1[last] = b[eid[last]]  # exact edge ends
    r0 = np.asarray(radius_fn(eid, f0, base[eid]), dtype=np.float64)
    r1 = np.asarray(radius_fn(eid, f1, base[eid]), dtype=np.float64)
    return rasterize_capsules(g, p0, p1, np.maximum(r0, 0.0), np.maximum(r1, 0.0))[0]


# ---------------------------------------------------------------------------------------------------------------
# Stenosis
# ---------------------------------------------------------------------------------------------------------------


def stenosis_profile(t: np.ndarray, radius: float, s: float, t0: float, w: float) -> np.ndarray:
    """``radius * (1 - s * exp(-(t - t0)**2 / (2 * w**2)))``: the narrowed radius at arclength ``t``."""
    t = np.asarray(t, dtype=np.float64)
    return radius * (1.0 - s * np.exp(-((t - t0) ** 2) / (2.0 * w * w)))


def _stenosis_candidates(segs: list[Segment], grid: int) -> list[int]:
    rmin = min_pathology_radius(grid)
    ok = [i for i, sg in enumerate(segs) if sg.kind == 0 and not sg.is_root and sg.radius >= rmin
          and sg.length >= 6.0 * sg.radius]
    if not ok:  # fall back to the thickest non-root branches
        br = [i for i, sg in enumerate(segs) if sg.kind == 0 and not sg.is_root and sg.length > 3.0]
        if br:
            rtop = max(segs[i].radius for i in br)
            ok = [i for i in br if segs[i].radius >= 0.8 * rtop]
    return ok


def insert_stenosis(tree: VesselTree, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Narrow one segment of ``tree`` (see the module docstring); returns ``(volume, parameters)``.

    ``parameters``: ``segment`` (index into :func:`tree_segments`), ``first_node`` / ``last_node``, ``radius``,
    ``length``, ``s``, ``t0``, ``w``, ``min_radius`` (= ``radius * (1 - s)``), ``point`` (centerline point at
    ``t0``, voxel coordinates).
    """
    segs = tree_segments(tree)
    cand = _stenosis_candidates(segs, tree.grid)
    if not cand:
        raise RuntimeError(f"tree {tree!r} has no segment that can carry a stenosis")
    wts = np.array([segs[i].radius ** 2 for i in cand])
    si = int(cand[int(rng.choice(len(cand), p=wts / wts.sum()))])
    sg = segs[si]
    R, L = sg.radius, sg.length
    s = float(rng.uniform(*STENOSIS_SEVERITY))
    w = min(float(rng.uniform(*STENOSIS_WIDTH)) * R, L / 6.0)
    t0 = float(rng.uniform(2.5 * w, L - 2.5 * w))
    # arclength at the start of each edge of the segment; NaN elsewhere
    E = len(tree.edges)
    t_start = np.full(E, np.nan)
    t_start[sg.edge_ids] = sg.arclength[:-1]
    e_len = np.zeros(E)
    e_len[sg.edge_ids] = np.diff(sg.arclength)

    def radius_fn(eid: np.ndarray, frac: np.ndarray, base: np.ndarray) -> np.ndarray:
        t = t_start[eid] + frac * e_len[eid]
        on = ~np.isnan(t)
        out = base.copy()
        out[on] = stenosis_profile(t[on], R, s, t0, w)
        return out

    vol = redraw(tree, radius_fn)
    point = np.array([np.interp(t0, sg.arclength, tree.nodes[sg.node_ids, k]) for k in range(3)])
    params = {
        "segment": si, "first_node": int(sg.node_ids[0]), "last_node": int(sg.node_ids[-1]), "radius": R,
        "length": L, "generation": sg.generation, "s": s, "t0": t0, "w": w, "min_radius": R * (1.0 - s),
        "point": point,
    }
    return vol, params


# ---------------------------------------------------------------------------------------------------------------
# Aneurysm
# ---------------------------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (QR of a Gaussian matrix with the sign fix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def ellipsoid_mask(grid: int, centre: np.ndarray, axes: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Bool ``grid**3`` map of the voxels whose centres lie in the ellipsoid ``|diag(1/axes) rot.T (x - c)| <= 1``
    (``rot``'s columns are the axis directions)."""
    g = int(grid)
    out = np.zeros((g, g, g), dtype=bool)
    rmax = float(np.max(axes))
    lo = np.clip(np.floor(centre - rmax).astype(np.int64), 0, g - 1)
    hi = np.clip(np.ceil(centre + rmax).astype(np.int64), 0, g - 1)
    xs = [np.arange(lo[k], hi[k] + 1, dtype=np.float64) - centre[k] for k in range(3)]
    X, Y, Z = np.meshgrid(*xs, indexing="ij")
    q = np.zeros(X.shape)
    for i in range(3):
        proj = X * rot[0, i] + Y * rot[1, i] + Z * rot[2, i]
        q += (proj / axes[i]) ** 2
    out[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = q <= 1.0
    return out


def _bifurcation_frames(tree: VesselTree) -> list[tuple[int, int, np.ndarray, float]]:
    """For each bifurcation usable for an aneurysm: (row, junction node, apex direction, parent radius)."""
    e = tree.edges
    rad = tree.segment_radii()
    kind = tree.edge_kind if tree.edge_kind is not None else np.zeros(len(e), dtype=np.int8)
    rmin = min_pathology_radius(tree.grid)
    out = []
    for row, (J, c1, c2) in enumerate(tree.bifurcations):
        rp = float(tree.node_radius[J])
        if rp < rmin:
            continue
        inc = np.nonzero((e[:, 1] == J) & (kind == 0) & (np.abs(rad - rp) < 1e-9))[0]
        if len(inc) == 0:
            continue
        x = tree.nodes[J]
        u = _unit(x - tree.nodes[e[inc[0], 0]])
        d1, d2 = _unit(tree.nodes[c1] - x), _unit(tree.nodes[c2] - x)
        bis = d1 + d2
        bis = _unit(bis) if np.linalg.norm(bis) > 1e-6 else u
        out.append((row, int(J), _unit(u + bis), rp))
    return out


def insert_aneurysm(tree: VesselTree, rng: np.random.Generator, *,
                    margin: float = MARGIN_VOX) -> tuple[np.ndarray, dict[str, Any]]:
    """Add a saccular aneurysm at one bifurcation of ``tree`` (see the module docstring); returns
    ``(volume, parameters)``.

    ``parameters``: ``bifurcation`` (row of ``tree.bifurcations``), ``junction_node``, ``junction`` (position),
    ``parent_radius``, ``k``, ``R``, ``axes`` (the three semi-axes), ``rotation`` (3x3, columns = axis
    directions), ``direction`` (unit), ``centre``, ``neck_radius``, ``neck_length``, ``sac_voxels`` (voxels of the
    ellipsoid alone), ``added_voxels`` (voxels added to the healthy map), ``tries``.
    """
    g = int(tree.grid)
    frames = _bifurcation_frames(tree)
    if not frames:
        raise RuntimeError(f"tree {tree!r} has no bifurcation that can carry an aneurysm")
    tries = 0
    chosen = None
    for attempt in range(40):
        row, J, d0, rp = frames[int(rng.integers(len(frames)))]
        k = float(rng.uniform(*ANEURYSM_K))
        if attempt >= 20:  # hard to fit: smaller sacs
            k = ANEURYSM_K[0] + (k - ANEURYSM_K[0]) * (39 - attempt) / 20.0
        ab = rng.uniform(*ANEURYSM_AXES, size=2)
        rot = _random_rotation(rng)
        tilt = math.radians(float(rng.uniform(0.0, ANEURYSM_TILT_DEG)))
        perp = rng.normal(size=3)
        perp = _unit(perp - np.dot(perp, d0) * d0)
        direction = math.cos(tilt) * d0 + math.sin(tilt) * perp
        R = k * rp
        axes = R * np.array([1.0, ab[0], ab[1]])
        h = float(np.sqrt(((axes * (rot.T @ direction)) ** 2).sum()))  # extent along the direction
        neck_len = float(rng.uniform(*ANEURYSM_NECK_LENGTH)) * R
        neck_r = float(rng.uniform(*ANEURYSM_NECK_RADIUS)) * R
        x = tree.nodes[J]
        centre = x + direction * (rp + neck_len + h)
        tries += 1
        rmax = float(axes.max())
        if np.all(centre - rmax >= margin) and np.all(centre + rmax <= g - 1 - margin):
            chosen = (row, J, rp, k, R, ab, rot, direction, axes, centre, neck_len, neck_r, x)
            break
    if chosen is None:
        raise RuntimeError(f"no aneurysm fits inside the grid for tree {tree!r}")
    row, J, rp, k, R, ab, rot, direction, axes, centre, neck_len, neck_r, x = chosen
    sac = ellipsoid_mask(g, centre, axes, rot)
    start = x + direction * (0.5 * rp)
    r_start = min(neck_r, max(rp, _DRAW_MIN_RADIUS))
    neck = rasterize_capsules(g, start[None], centre[None], np.array([r_start]), np.array([neck_r]))[0]
    healthy = redraw(tree)
    added = (sac | neck) & ~healthy
    # the vessels may cut a few voxels of sac or neck off the blob; a saccular aneurysm is one sac: keep the
    # largest 26-connected piece of what is added
    import cc3d

    lab, n_pieces = cc3d.connected_components(added, connectivity=26, return_N=True)
    if n_pieces > 1:
        added = lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    vol = healthy | added
    params = {
        "bifurcation": int(row), "junction_node": int(J), "junction": x.copy(), "parent_radius": rp, "k": k,
        "R": R, "axes": axes, "rotation": rot, "direction": direction, "centre": centre,
        "neck_radius": neck_r, "neck_length": neck_len, "sac_voxels": int(sac.sum()),
        "added_voxels": int(added.sum()), "tries": tries,
    }
    return vol, params


# ---------------------------------------------------------------------------------------------------------------
# Samples and sets
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PathologySample:
    """One map: ``volume`` (bool ``grid**3``), ``label`` (index into :data:`CLASSES`), ``class_name``,
    ``parameters`` of the inserted pathology (empty for healthy; always holds ``tree_seed``), and ``seed``
    (the tree's seed; the pathology's random draws come from ``np.random.default_rng([seed, label])``)."""

    volume: np.ndarray
    label: int
    class_name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __repr__(self) -> str:
        return (f"PathologySample(class_name={self.class_name!r}, label={self.label}, seed={self.seed}, "
                f"grid={self.volume.shape[0]}, voxels={int(self.volume.sum())})")


def generate_pathology(class_name: str, grid: int, seed: int) -> PathologySample:
    """One sample of class ``class_name`` grown from tree seed ``seed``."""
    if class_name not in CLASSES:
        raise ValueError(f"unknown class {class_name!r}; valid classes: {', '.join(CLASSES)}")
    grid, seed = check_grid(grid), int(seed)
    label = CLASSES.index(class_name)
    tree = pathology_tree(grid, seed)
    rng = np.random.default_rng([seed, label])
    if class_name == "healthy":
        vol, params = redraw(tree), {}
    elif class_name == "stenosis":
        vol, params = insert_stenosis(tree, rng)
    else:
        vol, params = insert_aneurysm(tree, rng)
    params["tree_seed"] = seed
    return PathologySample(volume=vol, label=label, class_name=class_name, parameters=params, seed=seed)


def default_class_sizes(n: int) -> list[int]:
    """Balanced split of ``n`` over :data:`CLASSES` (our choice: INSTED's split is not in the paper)."""
    q, r = divmod(int(n), len(CLASSES))
    return [q + (1 if i < r else 0) for i in range(len(CLASSES))]


def _class_sizes(n: int, class_sizes: Sequence[int] | Mapping[str, int] | None) -> list[int]:
    return default_class_sizes(n) if class_sizes is None else resolve_class_sizes(n, class_sizes, CLASSES)


def generate_pathology_set(n: int, grid: int = 48, seed: int = 0,
                           class_sizes: Sequence[int] | Mapping[str, int] | None = None) -> list[PathologySample]:
    """``n`` samples over :data:`CLASSES`, in a seeded random order of the classes.

    ``class_sizes``: counts per class, as a sequence in :data:`CLASSES` order or a ``{class_name: count}`` mapping
    (default :func:`default_class_sizes`).  Item ``i`` grows its tree from child ``i`` of
    ``np.random.SeedSequence(seed).spawn(n + 1)`` (its first 63-bit state word is the sample's ``seed``); child
    ``n`` shuffles the order of the labels.  The same call gives identical arrays.
    """
    return generate_labelled(n, grid, seed, lambda k: _class_sizes(k, class_sizes), CLASSES,
                             lambda k, g, sd: generate_pathology(CLASSES[k], g, sd),
                             "pathology maps")
