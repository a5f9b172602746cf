"""Morphometry of binary vessel maps: the same statistics for any map, real or generated, in physical units where
the voxel spacing is known (and in voxels otherwise: pass ``spacing=(1, 1, 1)``).

:func:`measure` takes a boolean 3D mask and its voxel spacing and returns one :class:`Morphometry`:

* **occupancy** of the structure's bounding box (vessel voxels / voxels of the smallest box holding them), so that
  the empty margin around a map does not count;
* **radii**: the Euclidean distance transform of the mask (``scipy.ndimage.distance_transform_edt`` with
  ``sampling=spacing``) sampled on the skeleton (``skimage.morphology.skeletonize``, Lee's 3D thinning), one value
  per skeleton voxel.  The transform measures to the centre of the nearest background voxel, which for a digital
  tube of radius r lies just beyond r (a tube one voxel wide reads 1 voxel).  Thinning can delete a component
  whose cross-section is perfectly symmetric with an even width (a tube centred between voxel rows); such a
  component has no skeleton and contributes no radius or segment;
* the **skeleton graph** (:func:`skeleton_graph`; no skeleton-graph library such as ``skan`` or ``kimimaro`` is
  installed, so a compact builder over the 26-connected skeleton voxels): skeleton voxels with two skeleton
  neighbours form the *segments*, the others are *nodes* (one neighbour: an end; three or more: a junction, and
  touching junction voxels form one junction).  Terminal segments shorter than the radius at their junction are
  spurs of the thinning (surface noise), removed before the graph is rebuilt;
* per segment: **length** (path length along its voxels, in units of the spacing), **tortuosity** (path length /
  chord between its two end nodes, for segments whose chord is at least :data:`MIN_CHORD_VOXELS` of the largest
  voxel side) and **radius** (median radius over its voxels outside the balls of its junctions);
* **bifurcations per unit length**: junctions with exactly three segments, divided by the total segment length;
* **Betti numbers** ``(b0, b1, b2)`` from :func:`companion.metrics.betti_numbers`;
* **Murray's exponent** at each bifurcation: with the thickest of its three segments taken as the parent (a
  skeleton has no flow direction) and radii ``r_p > r_1 >= r_2``, the root ``x`` of ``r_p^x = r_1^x + r_2^x``;
  bifurcations where a daughter is as thick as the parent have no root, and those with a daughter thinner than
  ``min_murray_radius_vox`` voxels are left out (discretisation dominates there).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Morphometry", "SkeletonGraph", "bbox_crop", "measure", "murray_exponent", "skeleton_graph"]

#: segments with a chord shorter than this many (largest) voxel sides get no tortuosity: a few voxels of staircase
#: make path / chord meaningless
MIN_CHORD_VOXELS = 3.0
#: daughters thinner than this many (smallest) voxel sides give no Murray exponent
MIN_MURRAY_RADIUS_VOX = 1.0

# the 13 "forward" neighbour offsets of the 26-neighbourhood: each adjacent pair is listed once
_OFFSETS = np.array([(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
                     if (dx, dy, dz) > (0, 0, 0)], dtype=np.int64)


@dataclass
class SkeletonGraph:
    """Segments of a skeleton.  ``points`` (V, 3) are the skeleton voxels' indices; for segment ``s``:
    ``length[s]`` (path length, spacing units), ``chord[s]`` (distance between its end nodes; NaN where it does
    not end at two nodes), ``ends[s]`` (node ids of its two ends, -1 where none), ``voxels[s]`` (indices into
    ``points`` of its interior voxels).  ``node_degree[n]`` counts the segment ends at node ``n``;
    ``node_kind[n]`` is 1 for an end, 3 for a junction."""
    points: np.ndarray
    length: np.ndarray
    chord: np.ndarray
    ends: np.ndarray
    voxels: list[np.ndarray]
    node_degree: np.ndarray
    node_kind: np.ndarray
    node_voxels: list[np.ndarray]

    @property
    def n_segments(self) -> int:
        return int(len(self.length))

    def junctions(self, degree: int | None = None) -> np.ndarray:
        """Ids of the junction nodes (with exactly `degree` segment ends, if given)."""
        j = self.node_kind == 3
        if degree is not None:
            j &= self.node_degree == degree
        return np.flatnonzero(j)


@dataclass
class Morphometry:
    """What :func:`measure` returns for one structure (lengths in the units of the spacing it was given)."""
    occupancy_pct: float
    betti: tuple[int, int, int]
    radii: np.ndarray  # one per skeleton voxel
    segment_length: np.ndarray
    segment_radius: np.ndarray
    tortuosity: np.ndarray  # segments with a long enough chord only
    bifurcations: int
    total_length: float
    murray: np.ndarray  # one exponent per usable bifurcation
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    graph: SkeletonGraph | None = field(default=None, repr=False)

    @property
    def bifurcations_per_length(self) -> float:
        return self.bifurcations / self.total_length if self.total_length > 0 else float("nan")

    def scaled(self, factor: float) -> "Morphometry":
        """The same measurement with every length multiplied by `factor` (e.g. mm -> voxels of 0.5 mm: 2); what
        has no unit (occupancy, tortuosity, Betti numbers, Murray's exponent) is unchanged."""
        return dataclasses.replace(self, radii=self.radii * factor, segment_length=self.segment_length * factor,
                                   segment_radius=self.segment_radius * factor, total_length=self.total_length * factor,
                                   spacing=tuple(s * factor for s in self.spacing), graph=None)


def bbox_crop(mask: np.ndarray, margin: int = 1) -> np.ndarray:
    """`mask` cropped to the bounding box of its foreground, `margin` voxels of background around it."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi))]
    return np.pad(crop, margin) if margin else crop


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label of each of `n` vertices joined by the edges (a[i], b[i])."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)[1]


def _groups(items: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """`items` split by `labels`, one array per distinct label in increasing label order."""
    if len(items) == 0:
        return []
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return np.split(items[order], cuts)


def _build(skel: np.ndarray, spacing: np.ndarray) -> SkeletonGraph:
    pts = np.argwhere(skel)
    n = len(pts)
    lookup = np.full(skel.shape, -1, np.int64)
    lookup[tuple(pts.T)] = np.arange(n)
    shape = np.array(skel.shape)
    ea, eb = [], []
    for off in _OFFSETS:  # every 26-adjacent pair of skeleton voxels, once
        q = pts + off
        ok = np.all((q >= 0) & (q < shape), axis=1)
        j = np.full(n, -1, np.int64)
        j[ok] = lookup[tuple(q[ok].T)]
        keep = j >= 0
        ea.append(np.flatnonzero(keep))
        eb.append(j[keep])
    ea, eb = (np.concatenate(ea), np.concatenate(eb)) if ea else (np.zeros(0, np.int64),) * 2
    elen = np.sqrt((((pts[ea] - pts[eb]) * spacing) ** 2).sum(1))
    deg = np.bincount(np.concatenate([ea, eb]), minlength=n)
    chain = deg == 2
    # nodes: every end voxel alone, touching junction voxels together
    junc = deg >= 3
    jj = junc[ea] & junc[eb]
    jlab = _components(n, ea[jj], eb[jj])
    node_of = np.full(n, -1, np.int64)
    node_voxels: list[np.ndarray] = []
    node_kind: list[int] = []
    for vox in _groups(np.flatnonzero(junc), jlab[junc]):
        node_of[vox] = len(node_voxels)
        node_voxels.append(vox)
        node_kind.append(3)
    for v in np.flatnonzero(deg == 1):
        node_of[v] = len(node_voxels)
        node_voxels.append(np.array([v]))
        node_kind.append(1)
    # segments: chains of two-neighbour voxels, plus direct links between two different nodes
    cc = chain[ea] & chain[eb]
    clab = _components(n, ea[cc], eb[cc])
    chains = np.unique(clab[chain])
    seg_of_chain = {int(c): i for i, c in enumerate(chains)}
    n_chain = len(chains)
    length = np.zeros(n_chain)
    np.add.at(length, [seg_of_chain[int(c)] for c in clab[ea[cc]]], elen[cc])
    ends_pts: list[list[np.ndarray]] = [[] for _ in range(n_chain)]
    ends: list[list[int]] = [[] for _ in range(n_chain)]
    extra_len, extra_ends, extra_pts = [], [], []
    for a, b, L in zip(ea[~cc], eb[~cc], elen[~cc]):
        if chain[a] or chain[b]:  # a chain meets a node
            c, v = (a, b) if chain[a] else (b, a)
            s = seg_of_chain[int(clab[c])]
            length[s] += L
            ends[s].append(int(node_of[v]))
            ends_pts[s].append(pts[v])
        elif node_of[a] != node_of[b]:  # two nodes side by side: a segment without interior voxels
            extra_len.append(L)
            extra_ends.append([int(node_of[a]), int(node_of[b])])
            extra_pts.append([pts[a], pts[b]])
    seg_len = list(length) + extra_len
    seg_ends, chord = [], []
    for e, p in list(zip(ends, ends_pts)) + list(zip(extra_ends, extra_pts)):
        e = (e + [-1, -1])[:2]
        seg_ends.append(e)
        chord.append(float(np.sqrt((((p[0] - p[1]) * spacing) ** 2).sum())) if len(p) == 2 and e[0] != e[1]
                     else float("nan"))
    voxels = _groups(np.flatnonzero(chain), clab[chain]) + [np.zeros(0, np.int64)] * len(extra_len)
    seg_ends_a = np.array(seg_ends, np.int64).reshape(-1, 2)
    node_degree = np.bincount(seg_ends_a[seg_ends_a >= 0].ravel(), minlength=len(node_voxels))
    return SkeletonGraph(pts, np.array(seg_len, float), np.array(chord, float), seg_ends_a, voxels,
                         node_degree, np.array(node_kind, np.int64), node_voxels)


def skeleton_graph(skel: np.ndarray, spacing=(1.0, 1.0, 1.0), radius: np.ndarray | None = None,
                   prune: bool = True) -> SkeletonGraph:
    """The graph of a 3D skeleton (see the module docstring).  With `radius` (the radius map of the mask) and
    `prune`, terminal segments shorter than the radius at their junction are removed (twice at most) and the graph
    is rebuilt, which merges the segments a removed spur had split."""
    skel = np.asarray(skel, bool).copy()
    sp = np.asarray(spacing, float)
    g = _build(skel, sp)
    for _ in range(2 if (prune and radius is not None) else 0):
        drop = []
        for s in range(g.n_segments):
            a, b = g.ends[s]
            if a < 0 or b < 0:
                continue
            kinds = g.node_kind[[a, b]]
            if sorted(kinds) != [1, 3]:
                continue
            j = a if kinds[0] == 3 else b
            e = b if j == a else a
            r_j = float(radius[tuple(g.points[g.node_voxels[j]].T)].max())
            if g.length[s] < r_j:
                drop.append(np.concatenate([g.voxels[s], g.node_voxels[e]]))
        if not drop:
            break
        idx = np.concatenate(drop)
        skel[tuple(g.points[idx].T)] = False
        g = _build(skel, sp)
    return g


def murray_exponent(r_parent, r1, r2, lo: float = 0.05, hi: float = 60.0, iterations: int = 80) -> np.ndarray:
    """The root x of r_p^x = r_1^x + r_2^x per bifurcation (bisection; vectorised).  NaN where a daughter is not
    strictly thinner than the parent (no root) or the root lies outside [lo, hi]."""
    rp, a, b = (np.asarray(v, float) for v in (r_parent, r1, r2))
    ok = (a < rp) & (b < rp) & (a > 0) & (b > 0)
    u, w = np.where(ok, a / rp, 0.5), np.where(ok, b / rp, 0.5)
    f = lambda x: u ** x + w ** x - 1.0  # noqa: E731  decreasing in x
    left, right = np.full(u.shape, lo), np.full(u.shape, hi)
    ok &= (f(left) > 0) & (f(right) < 0)
    for _ in range(iterations):
        mid = (left + right) / 2
        pos = f(mid) > 0
        left, right = np.where(pos, mid, left), np.where(pos, right, mid)
    return np.where(ok, (left + right) / 2, np.nan)


def measure(mask: np.ndarray, spacing=(1.0, 1.0, 1.0), *, keep_graph: bool = False,
            min_murray_radius_vox: float = MIN_MURRAY_RADIUS_VOX) -> Morphometry:
    """Every statistic of the module docstring for one binary 3D map with voxel `spacing` (lengths come back in
    the spacing's unit)."""
    from scipy import ndimage
    from scipy.spatial import cKDTree
    from skimage.morphology import skeletonize

    from . import metrics

    sp = tuple(float(s) for s in spacing)
    m = bbox_crop(mask, margin=1)
    if not m.any():
        empty = np.zeros(0)
        return Morphometry(0.0, (0, 0, 0), empty, empty, empty, empty, 0, 0.0, empty, sp, tuple(m.shape))
    core = m[1:-1, 1:-1, 1:-1]
    occupancy = 100.0 * float(core.mean())
    betti = metrics.betti_numbers(m)
    radius = ndimage.distance_transform_edt(m, sampling=sp)
    skel = skeletonize(m)
    g = skeleton_graph(skel, sp, radius=radius)
    radii = radius[skel]
    # segment radius: median over its voxels outside the balls of its junctions
    jv = [g.node_voxels[j] for j in g.junctions()]
    near_tree = cKDTree(g.points[np.concatenate(jv)] * np.asarray(sp)) if jv else None
    seg_r = np.full(g.n_segments, np.nan)
    for s in range(g.n_segments):
        vox = g.voxels[s]
        ends = [e for e in g.ends[s] if e >= 0]
        if len(vox) == 0:
            vox = np.concatenate([g.node_voxels[e] for e in ends]) if ends else vox
        if len(vox) == 0:
            continue
        p = tuple(g.points[vox].T)
        r = radius[p]
        d = near_tree.query(g.points[vox] * np.asarray(sp))[0] if near_tree is not None else np.full(len(r), np.inf)
        outside = d > r
        seg_r[s] = float(np.median(r[outside] if outside.any() else r))
    tort_ok = np.isfinite(g.chord) & (g.chord >= MIN_CHORD_VOXELS * max(sp))
    tort = g.length[tort_ok] / g.chord[tort_ok]
    # Murray's exponent at every junction of exactly three segments
    bif = g.junctions(degree=3)
    seg_at = {int(j): [] for j in bif}
    for s, (a, b) in enumerate(g.ends):
        for e in {int(a), int(b)}:
            if e in seg_at:
                seg_at[e].append(s)
    trip = np.array([sorted(seg_r[v], reverse=True) for v in seg_at.values() if len(v) == 3], float).reshape(-1, 3)
    usable = np.all(np.isfinite(trip), axis=1) & (trip[:, 2] >= min_murray_radius_vox * min(sp))
    murray = murray_exponent(trip[usable, 0], trip[usable, 1], trip[usable, 2])
    return Morphometry(occupancy, tuple(int(b) for b in betti), radii, g.length, seg_r, tort, int(len(bif)),
                       float(g.length.sum()), murray[np.isfinite(murray)], sp, tuple(m.shape),
                       g if keep_graph else None)
