"""Procedural organ-level vessel trees rasterised to binary 3D maps (the book's offline stand-in data).

The generator grows a tree of *segments* (curved centerline polylines with one radius each) from one or several
roots, breadth first, and rasterises the union of the segments' capsules onto a cubic grid of ``grid**3`` voxels.
Three presets imitate three organs (see :data:`PRESETS`): an ``"airway"`` tree, ``"cerebral"`` arteries with a
circle-of-Willis ring, and a ``"pulmonary"`` artery tree.  Public entry points: :func:`generate_tree`,
:func:`generate_dataset` (and the helper :func:`rasterize_capsules`).  The recipe:

Radii -- Murray's law
    At every bifurcation the parent radius ``r0`` and the child radii ``r1 >= r2`` obey Murray's law
    ``r0**3 = r1**3 + r2**3`` (C. D. Murray, "The physiological principle of minimum work. I. The vascular system
    and the cost of blood volume", PNAS 12:207-214, 1926).  With an asymmetry ratio ``a = r2 / r1`` drawn uniformly
    from the preset's range, ``r1 = r0 * (1 + a**3) ** (-1/3)`` and ``r2 = a * r1``, which satisfies the law exactly.
    Root radii are fractions of the grid, so a preset looks alike at every grid size; branching stops where a split
    would make the children thinner than ``min_radius_vox`` voxels (finer grids resolve more generations).

Branching angles and planes
    The angle of each child to the parent axis starts from Murray's optimum for the minimum-work principle
    (C. D. Murray, "The physiological principle of minimum work applied to the angle of branching of arteries",
    J. Gen. Physiol. 9:835-841, 1926; see also M. Zamir, J. Gen. Physiol. 69:449-461, 1976)::

        cos(theta1) = (r0**4 + r1**4 - r2**4) / (2 * r0**2 * r1**2)
        cos(theta2) = (r0**4 + r2**4 - r1**4) / (2 * r0**2 * r2**2)

    which gives the larger angle to the thinner child (a symmetric split gives 37.5 degrees each).  Both angles are
    scaled by one common random factor and clipped to the preset's range.  The plane of a bifurcation is the
    parent's bifurcation plane rotated about the parent axis by an angle from the preset's range (about 90 degrees
    in bronchial trees; uniform for the cerebral arteries).

Space filling (supply territories)
    With ``territory_bias > 0`` each branch supplies a territory: a subset of random points filling the organ
    domain (a union of ellipsoids: two lungs, or the brain).  As in the space-filling airway model of H. Kitaoka,
    R. Takaki and B. Suki (J. Appl. Physiol. 87:2207-2217, 1999), the bifurcation plane splits the parent's
    territory in two, the thicker child takes the larger part, and each child is pulled towards the centroid of its
    part; only points ahead of the junction are kept, so trees radiate from their hilum.  The pulled direction is
    clipped back into the preset's angle range (the thinner child keeping the larger angle), and a segment is at
    most ``territory_reach`` times the distance to its centroid.  Several roots share the domain by nearest root.

Segment length and tortuosity
    A segment's length is its radius times a length/radius ratio drawn from the preset's range (Weibel's airway
    morphometry, "Morphometry of the Human Lung", 1963, gives length/diameter of about 3, i.e. length/radius about 6;
    arteries between branch points are longer).  The centerline is the chord plus a smooth perpendicular
    perturbation: a sum of sine modes ``sin(k*pi*t)/k`` (``k = 1 .. tortuosity_modes``) with Gaussian amplitudes of
    standard deviation ``tortuosity * length``, times a smoothstep envelope that vanishes with its slope at both
    ends, so that segments leave and reach their junctions along their chords.

Stopping and the domain
    A branch stops when even a symmetric split would give children thinner than ``min_radius_vox`` (when only the
    thinner child would be too thin, the asymmetry ratio is raised to the smallest value that keeps it at
    ``min_radius_vox``), when ``max_generation`` is reached, or when no placement passes the checks below within
    ``max_tries`` attempts.  Later attempts use other bifurcation planes, shorter segments and directions steered
    towards the organ's centre; a child that fits is kept while its sibling is tried again, and a sibling that never
    fits is dropped (that branch point is then not a bifurcation).  Every vessel keeps ``margin_vox`` voxels from
    the faces of the box (the roots enter through a face); generation 2 has to end inside the organ domain and from
    generation 3 on whole centerlines stay inside it.

No accidental contacts
    (1) Geometric clearance (the look): every centerline sample of a new segment stays at least
    ``r_a + r_b + clearance_vox`` (plus the sample spacing) away from every sample of every other segment, except
    close to a junction the two share; segments may not leave a junction at less than ``min_junction_angle_deg``
    from each other and may not fold back onto themselves.  (2) Exact digital topology: segments are rasterised
    one by one as they are accepted, and a segment is only accepted when the Euler characteristic of the map
    (26-connected foreground, 6-connected background; computed from the 2x2x2 blocks around the new voxels with the
    standard block look-up table) changes by the expected amount: +1 for a root, 0 for a branch attached at one
    end, -1 for a segment that joins two existing ends.  Every rasterised segment is 26-connected and overlaps the
    vessel it starts from, so a branch can neither close a loop nor merge with a foreign vessel: loop-free presets
    give Betti numbers (b0, b1, b2) = (1, 0, 0) and every loop-closing segment adds exactly one loop (this also
    removes the rare digital tunnels where thin tubes leave a junction at a narrow angle).

Loops (anastomoses)
    The cerebral preset joins the ends of its inflow roots by thin communicating segments (a circle of Willis):
    an open chain of ``n_roots - 1`` segments when ``loops=False`` (an "incomplete circle", a common anatomical
    variant; the map is then a tree), closed to a ring when ``loops=True`` (one loop).  With ``loops=True`` (any
    preset) up to ``n_anastomoses`` further thin segments join terminal ends of different subtrees that lie close
    together.  :attr:`VesselTree.n_loops` counts the loop-closing segments, i.e. the first Betti number of the map.

Rasterisation
    A voxel (centre at its integer index) is vessel when it lies in the union of capsules (cylinders with spherical
    caps) around the polyline pieces, with the radius drawn as ``max(r, sqrt(3)/2)``: every point of a centerline
    then has a voxel centre within the drawn radius, so each rasterised segment is 26-connected even where the
    model radius is below one voxel.  Each segment only evaluates the voxels of its pieces' bounding boxes,
    vectorised over its pieces.

Determinism: all randomness comes from one ``np.random.default_rng(seed)`` per tree; no global random state.

Why not a package
    ``svv`` (svVascularize 0.0.57 on PyPI) generates vascular trees by constrained constructive optimisation, but on
    Python 3.11 it requires ``numpy<2`` (this book pins numpy 2.3 for MONAI and torch), pulls in open3d, PySide6,
    tetgen and trimesh, and depends on ``sentry-sdk``; it also gives no topology guarantee on the rasterised map.
    A small generator with exact Murray radii, guaranteed Betti numbers and seeded determinism serves the book better.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

__all__ = ["TreePreset", "VesselTree", "PRESETS", "KINDS", "generate_tree", "generate_dataset", "rasterize_capsules"]

_DRAW_MIN_RADIUS = math.sqrt(3.0) / 2.0 + 1e-3  # smallest radius drawn (voxels); keeps each tube 26-connected
_SAMPLE_STEP = 0.75  # spacing (voxels) of the centerline samples used by the clearance test


# ---------------------------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------------------------

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class TreePreset:
    """Parameters of one organ-like vessel tree.  Positions and sizes ending in ``_frac`` are fractions of the grid.

    Coordinates are voxel coordinates ``(x, y, z)`` = array axes 0, 1, 2; ``z`` is "up" (the top of the volume is
    ``z = grid - 1``), ``x`` runs from the body's right to its left, ``y`` from front to back.
    """

    name: str
    description: str
    #: inflow roots: ``((x, y, z) start as grid fractions, (dx, dy, dz) initial direction)``
    roots: tuple[tuple[Vec3, Vec3], ...]
    #: radius of every root, as a fraction of the grid (clamped below at ``min_radius_vox``)
    root_radius_frac: float
    #: length of every root segment, as a fraction of the grid
    root_length_frac: float
    #: organ domain: union of ellipsoids ``((cx, cy, cz), (ax, ay, az))`` (centre, semi-axes), grid fractions
    domain: tuple[tuple[Vec3, Vec3], ...]
    #: segment length / radius ratio range
    length_ratio: tuple[float, float]
    #: asymmetry ratio r_thin / r_thick range at a bifurcation (1 = symmetric)
    asymmetry: tuple[float, float]
    #: range (degrees) of each child's angle to the parent axis
    branch_angle_deg: tuple[float, float]
    #: rotation (degrees) of a bifurcation plane about the parent axis relative to the parent's bifurcation plane
    plane_rotation_deg: tuple[float, float]
    #: standard deviation of the sine-mode amplitudes, as a fraction of the segment length
    tortuosity: float
    #: number of sine modes of the centerline perturbation (fewer on short segments, to avoid kinks)
    tortuosity_modes: int
    #: deepest generation (root = 1)
    max_generation: int
    #: normal of the first bifurcation plane at the end of each root (None: random), e.g. (0, 1, 0) = left/right split
    first_split_normal: Vec3 | None = None
    #: angle range (degrees) of the first split at a root end (None: ``branch_angle_deg``)
    first_split_angle_deg: tuple[float, float] | None = None
    #: asymmetry range of the first split at a root end (None: ``asymmetry``)
    first_split_asymmetry: tuple[float, float] | None = None
    #: length factor of the two segments of the first split at a root end (short: they reach a hilum)
    first_split_length_factor: float = 1.0
    #: weight of the pull of each child towards the centroid of its supply territory (0: off; see the module doc)
    territory_bias: float = 0.0
    #: with a territory, a segment is at most this fraction of the distance to its territory's centroid
    territory_reach: float = 1.0
    #: common random factor range applied to both Murray-optimal angles of a bifurcation
    angle_jitter: tuple[float, float] = (0.8, 1.25)
    #: branching stops below this radius (voxels)
    min_radius_vox: float = 0.7
    #: shortest segment (voxels)
    min_length_vox: float = 3.0
    #: empty margin (voxels) kept between every vessel and the faces of the box (roots enter through a face)
    margin_vox: float = 1.0
    #: smallest gap (voxels) between the surfaces of two vessels that do not share a junction
    clearance_vox: float = 1.0
    #: default of ``loops`` in :func:`generate_tree`
    loops: bool = False
    #: join the ends of the roots by communicating segments (a chain; closed to a ring when loops are on)
    ring: bool = False
    #: radius of a ring segment relative to the thinner of the two roots it joins
    ring_radius_factor: float = 0.55
    #: outward bulge of a ring segment, as a fraction of its chord
    ring_bulge: float = 0.25
    #: maximum number of extra anastomoses between terminal ends of different subtrees when loops are on
    n_anastomoses: int = 3
    #: longest anastomosis, as a fraction of the grid
    anastomosis_max_dist_frac: float = 0.15
    #: placement attempts per bifurcation before a child is dropped
    max_tries: int = 6
    #: smallest angle (degrees) between two segments leaving the same junction
    min_junction_angle_deg: float = 25.0


_LUNGS = (((0.285, 0.5, 0.42), (0.205, 0.3, 0.35)), ((0.715, 0.5, 0.42), (0.205, 0.3, 0.35)))

PRESETS: dict[str, TreePreset] = {
    "airway": TreePreset(
        name="airway",
        description=(
            "bronchial tree: one thick trachea entering from the top, quasi-dichotomous branching (asymmetry "
            "0.7-1) filling two lungs, length/radius 4-7, bifurcation planes rotated by about 90 degrees, low "
            "tortuosity, no loops"
        ),
        roots=(((0.5, 0.5, 1.0), (0.0, 0.0, -1.0)),),
        root_radius_frac=0.042,
        root_length_frac=0.3,
        domain=_LUNGS,
        length_ratio=(4.0, 7.0),
        asymmetry=(0.7, 1.0),
        branch_angle_deg=(20.0, 65.0),
        plane_rotation_deg=(60.0, 120.0),
        tortuosity=0.025,
        tortuosity_modes=2,
        max_generation=16,
        first_split_normal=(0.0, 1.0, 0.0),
        first_split_angle_deg=(30.0, 50.0),
        first_split_asymmetry=(0.8, 1.0),
        territory_bias=0.8,
        territory_reach=0.45,
    ),
    "cerebral": TreePreset(
        name="cerebral",
        description=(
            "cerebral arteries: three thin inflow roots (two carotids, basilar) from the bottom joined by a "
            "circle-of-Willis ring, each splitting into two wide branches, then asymmetric branching with long, "
            "strongly tortuous segments over the brain; loops on by default"
        ),
        roots=(
            ((0.4, 0.42, 0.0), (0.0, 0.0, 1.0)),
            ((0.6, 0.42, 0.0), (0.0, 0.0, 1.0)),
            ((0.5, 0.62, 0.0), (0.0, 0.0, 1.0)),
        ),
        root_radius_frac=0.025,
        root_length_frac=0.16,
        domain=(((0.5, 0.5, 0.54), (0.45, 0.46, 0.42)),),
        length_ratio=(8.0, 16.0),
        asymmetry=(0.5, 0.95),
        branch_angle_deg=(8.0, 80.0),
        plane_rotation_deg=(0.0, 360.0),
        tortuosity=0.12,
        tortuosity_modes=3,
        max_generation=14,
        first_split_angle_deg=(50.0, 80.0),
        first_split_asymmetry=(0.7, 1.0),
        min_length_vox=4.0,
        loops=True,
        ring=True,
        n_anastomoses=3,
        anastomosis_max_dist_frac=0.15,
        territory_bias=0.7,
        territory_reach=0.6,
    ),
    "pulmonary": TreePreset(
        name="pulmonary",
        description=(
            "pulmonary arteries: a thick trunk from the heart splitting at the central hilum into a left and a right "
            "tree, many generations of moderately asymmetric branching (0.6-1) radiating through both lungs, "
            "moderate tortuosity, no loops"
        ),
        roots=(((0.5, 0.32, 0.22), (0.0, 0.3, 1.0)),),
        root_radius_frac=0.04,
        root_length_frac=0.22,
        domain=_LUNGS,
        length_ratio=(4.0, 8.0),
        asymmetry=(0.6, 1.0),
        branch_angle_deg=(15.0, 60.0),
        plane_rotation_deg=(45.0, 135.0),
        tortuosity=0.04,
        tortuosity_modes=2,
        max_generation=20,
        first_split_normal=(0.0, 1.0, 0.0),
        first_split_angle_deg=(75.0, 95.0),
        first_split_asymmetry=(0.85, 1.0),
        first_split_length_factor=0.5,
        territory_bias=0.8,
        territory_reach=0.45,
    ),
}
KINDS: tuple[str, ...] = tuple(PRESETS)


# ---------------------------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class VesselTree:
    """A generated vessel tree: the rasterised maps and the centerline graph.

    ``bifurcations`` rows are ``(junction_node, child1_node, child2_node)``: the junction node is the last node of
    the parent segment (``node_radius`` = parent radius); ``child1_node`` / ``child2_node`` are the first nodes
    owned by the thicker / thinner child (their ``node_radius`` is that child's radius; each child's polyline starts
    at the junction node).  Murray's law reads ``node_radius[j]**3 == node_radius[c1]**3 + node_radius[c2]**3``.
    Only two-child bifurcations of the trees are listed: branch points that kept a single child are not, and
    segments added by the ring or by anastomoses are not children.
    """

    volume: np.ndarray  # bool (grid, grid, grid), True = vessel
    radius: np.ndarray  # float32, model radius (voxels) of the thickest segment covering the voxel, 0 outside
    label: np.ndarray  # int16, generation (1 = root) of that segment, 0 outside
    nodes: np.ndarray  # float64 (N, 3) centerline nodes, voxel coordinates (x, y, z) = axes 0, 1, 2
    node_radius: np.ndarray  # float64 (N,)
    edges: np.ndarray  # int64 (E, 2) (parent_node, child_node) along the polylines
    edge_generation: np.ndarray  # int64 (E,)
    bifurcations: np.ndarray  # int64 (B, 3) (junction_node, child1_node, child2_node), see the class docstring
    kind: str
    grid: int
    seed: int
    n_loops: int  # loop-closing segments (ring closure + anastomoses) = first Betti number of the map
    edge_radius: np.ndarray | None = None  # float64 (E,) radius of the segment that owns each edge
    edge_kind: np.ndarray | None = None  # int8 (E,) 0 tree branch/root, 1 ring, 2 anastomosis
    preset: TreePreset | None = field(default=None, repr=False)

    @property
    def occupancy(self) -> float:
        """Fraction of voxels that are vessel."""
        return float(np.count_nonzero(self.volume)) / float(self.volume.size)

    def centerline_length(self) -> float:
        """Total centerline length (voxels): sum of the edge lengths."""
        if len(self.edges) == 0:
            return 0.0
        d = self.nodes[self.edges[:, 1]] - self.nodes[self.edges[:, 0]]
        return float(np.sqrt((d * d).sum(axis=1)).sum())

    def segment_radii(self) -> np.ndarray:
        """Radius (voxels) of each centerline edge, i.e. of the segment that owns it (for radius histograms)."""
        if self.edge_radius is not None:
            return self.edge_radius.copy()
        return self.node_radius[self.edges[:, 1]].copy()

    def __repr__(self) -> str:  # the arrays are large; keep the repr short
        return (
            f"VesselTree(kind={self.kind!r}, grid={self.grid}, seed={self.seed}, nodes={len(self.nodes)}, "
            f"edges={len(self.edges)}, bifurcations={len(self.bifurcations)}, n_loops={self.n_loops}, "
            f"occupancy={self.occupancy:.4f})"
        )


# ---------------------------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(float(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _perpendicular(u: np.ndarray, hint: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A unit vector perpendicular to unit ``u``: ``hint`` projected off ``u`` if usable, else a random one."""
    if hint is not None:
        n = hint - np.dot(hint, u) * u
        if np.linalg.norm(n) > 1e-6:
            return _unit(n)
    while True:
        n = rng.normal(size=3)
        n -= np.dot(n, u) * u
        if np.linalg.norm(n) > 1e-6:
            return _unit(n)


def _arclength(pts: np.ndarray) -> np.ndarray:
    seg = np.sqrt(((pts[1:] - pts[:-1]) ** 2).sum(axis=1))
    return np.concatenate([[0.0], np.cumsum(seg)])


def _polyline_samples(pts: np.ndarray, step: float) -> np.ndarray:
    """Points along a polyline, spaced at most ``step`` apart, including both ends."""
    s = _arclength(pts)
    n = max(2, int(math.ceil(s[-1] / step)) + 1)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, pts[:, k]) for k in range(3)], axis=1)


def _capsule_inside(px, py, pz, a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """Whether points (arrays broadcast against ``(n, 1)``) lie in capsules ``a[i] -> b[i]``, radius ``ra -> rb``."""
    ab = b - a
    L2 = np.maximum((ab * ab).sum(axis=1), 1e-12)[:, None]
    ax, ay, az = px - a[:, 0:1], py - a[:, 1:2], pz - a[:, 2:3]
    bx, by, bz = ab[:, 0:1], ab[:, 1:2], ab[:, 2:3]
    t = np.clip((ax * bx + ay * by + az * bz) / L2, 0.0, 1.0)
    dx, dy, dz = ax - t * bx, ay - t * by, az - t * bz
    r = ra[:, None] + t * (rb - ra)[:, None]
    return dx * dx + dy * dy + dz * dz <= r * r


def _capsule_boxes(a, b, r_hi, lo_lim, hi_lim):
    lo = np.clip(np.floor(np.minimum(a, b) - r_hi[:, None]).astype(np.int64), lo_lim, hi_lim)
    hi = np.clip(np.ceil(np.maximum(a, b) + r_hi[:, None]).astype(np.int64), lo_lim, hi_lim)
    return lo, hi


_OFFSET_CACHE: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _offsets(ext: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened integer offsets of a box of extent ``ext``, each as a (1, K) row (cached)."""
    got = _OFFSET_CACHE.get(ext)
    if got is None:
        ox, oy, oz = np.meshgrid(np.arange(ext[0]), np.arange(ext[1]), np.arange(ext[2]), indexing="ij")
        got = (ox.reshape(1, -1), oy.reshape(1, -1), oz.reshape(1, -1))
        if len(_OFFSET_CACHE) < 4096:
            _OFFSET_CACHE[ext] = got
    return got


def _tube_mask(pts: np.ndarray, r: float, wlo: np.ndarray, whi: np.ndarray) -> np.ndarray:
    """Boolean mask, over the window ``[wlo, whi]`` (inclusive voxel indices), of the capsules along a polyline."""
    shape = tuple(int(v) for v in (whi - wlo + 1))
    mask = np.zeros(shape, dtype=bool)
    a, b = pts[:-1], pts[1:]
    n = len(a)
    rr = np.full(n, r)
    lo, hi = _capsule_boxes(a, b, rr, wlo, whi)
    ok = np.all(hi >= lo, axis=1)
    if not ok.any():
        return mask
    a, b, rr, lo, hi = a[ok], b[ok], rr[ok], lo[ok], hi[ok]
    ox, oy, oz = _offsets(tuple(int(e) for e in (hi - lo + 1).max(axis=0)))
    vx = lo[:, 0:1] + ox
    vy = lo[:, 1:2] + oy
    vz = lo[:, 2:3] + oz
    inb = (vx <= hi[:, 0:1]) & (vy <= hi[:, 1:2]) & (vz <= hi[:, 2:3])
    inside = inb & _capsule_inside(vx, vy, vz, a, b, rr, rr)
    mask[vx[inside] - wlo[0], vy[inside] - wlo[1], vz[inside] - wlo[2]] = True
    return mask


def _euler_lut() -> np.ndarray:
    """Euler characteristic contributions of the 256 configurations of a 2x2x2 block of voxels.

    The foreground is the union of closed unit cubes centred at the vessel voxels (which is 26-connectivity for
    the foreground and 6-connectivity for the background).  Every vertex, edge, face and cube of that complex is
    counted once, at its lowest corner: the block's centre ``c``, the edges ``c -> c + e_i``, the faces spanned by
    two of them and the cube ``c -> c + (1, 1, 1)``, each present when a voxel of the block containing it is set.
    Bit ``x + 2*y + 4*z`` of the configuration is the block voxel ``(x, y, z)``.
    """
    lut = np.zeros(256, dtype=np.int64)
    for code in range(256):
        v = np.array([(code >> b) & 1 for b in range(8)], dtype=bool).reshape(2, 2, 2, order="F")  # v[x, y, z]
        verts = int(v.any())
        edges = int(v[1].any()) + int(v[:, 1].any()) + int(v[:, :, 1].any())
        faces = int(v[1, 1].any()) + int(v[1, :, 1].any()) + int(v[:, 1, 1].any())
        lut[code] = verts - edges + faces - int(v[1, 1, 1])
    return lut


_EULER_LUT = _euler_lut()


def _euler26(v: np.ndarray) -> int:
    """Euler characteristic of a binary volume (26-connected foreground, 6-connected background)."""
    p = np.zeros(tuple(n + 2 for n in v.shape), dtype=np.uint8)
    p[1:-1, 1:-1, 1:-1] = v
    code = (p[:-1, :-1, :-1] | (p[1:, :-1, :-1] << 1) | (p[:-1, 1:, :-1] << 2) | (p[1:, 1:, :-1] << 3)
            | (p[:-1, :-1, 1:] << 4) | (p[1:, :-1, 1:] << 5) | (p[:-1, 1:, 1:] << 6) | (p[1:, 1:, 1:] << 7))
    return int(_EULER_LUT[code].sum())


_CELL_OFFSETS = np.array([(x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1)], dtype=np.int64)  # bit order
_BIT_WEIGHTS = (1 << np.arange(8)).astype(np.int64)


def _euler_change(before: np.ndarray, mask: np.ndarray) -> int:
    """Change of :func:`_euler26` when ``mask`` is added to ``before`` (same shape), from the 2x2x2 blocks that
    contain a changed voxel only."""
    new = mask & ~before
    if not new.any():
        return 0
    shape = np.array(before.shape) + 2
    pb = np.zeros(tuple(shape), dtype=np.uint8)
    pb[1:-1, 1:-1, 1:-1] = before
    pa = pb.copy()
    pa[1:-1, 1:-1, 1:-1] |= mask
    st = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    idx = np.argwhere(new) + 1  # padded coordinates of the changed voxels
    # blocks (by their lowest voxel) that contain a changed voxel
    cells = np.unique(((idx[:, None, :] - _CELL_OFFSETS[None, :, :]) @ st).ravel())
    gather = cells[:, None] + (_CELL_OFFSETS @ st)[None, :]
    cb = pb.ravel()[gather] @ _BIT_WEIGHTS
    ca = pa.ravel()[gather] @ _BIT_WEIGHTS
    return int(_EULER_LUT[ca].sum() - _EULER_LUT[cb].sum())


# ---------------------------------------------------------------------------------------------------------------
# Rasterisation of arbitrary capsules (public helper)
# ---------------------------------------------------------------------------------------------------------------

_LADDER = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192,
                    224, 256, 320, 384, 448, 512], dtype=np.int64)


def rasterize_capsules(
    grid: int,
    a: np.ndarray,
    b: np.ndarray,
    ra: np.ndarray,
    rb: np.ndarray,
    value: np.ndarray | None = None,
    tag: np.ndarray | None = None,
    *,
    max_batch_voxels: int = 1 << 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise the union of capsules onto a ``grid**3`` volume.

    Capsule ``i`` is the set of points ``p`` with ``dist(p, q(t)) <= ra[i] + t * (rb[i] - ra[i])``, where ``q(t)``
    is the closest point of the axis ``a[i] -> b[i]`` and ``t`` in [0, 1] its parameter (a cylinder with spherical
    caps and a linearly interpolated radius).  A voxel belongs to it when its centre (the integer index) does.
    Capsules are grouped by bounding-box size and evaluated in vectorised batches over their own boxes only.

    Returns ``(volume, value_map, tag_map)``: ``value_map`` (float32) holds, at every covered voxel, the largest
    ``value`` of the capsules covering it (default: the larger end radius) and ``tag_map`` (int16) the ``tag`` of that
    capsule (default 1; tags must lie in 1..32767).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 3)
    n = len(a)
    ra = np.ascontiguousarray(np.broadcast_to(np.asarray(ra, dtype=np.float64), (n,)))
    rb = np.ascontiguousarray(np.broadcast_to(np.asarray(rb, dtype=np.float64), (n,)))
    value = np.maximum(ra, rb) if value is None else np.broadcast_to(np.asarray(value, dtype=np.float64), (n,))
    tag = np.ones(n, dtype=np.int64) if tag is None else np.broadcast_to(np.asarray(tag, dtype=np.int64), (n,))
    g = int(grid)
    flat_val = np.zeros(g**3, dtype=np.float32)
    flat_tag = np.zeros(g**3, dtype=np.int16)
    if n:
        rmax = np.maximum(ra, rb)
        lo_f, hi_f = np.minimum(a, b) - rmax[:, None], np.maximum(a, b) + rmax[:, None]
        lo, hi = _capsule_boxes(a, b, rmax, 0, g - 1)
        keep = np.all(hi_f >= 0, axis=1) & np.all(lo_f <= g - 1, axis=1)
        cls = np.searchsorted(_LADDER, hi - lo + 1)
        key = np.where(keep, (cls[:, 0] * 64 + cls[:, 1]) * 64 + cls[:, 2], -1)
        for kv in np.unique(key[key >= 0]):
            idx = np.nonzero(key == kv)[0]
            kx, ky, kz = (int(_LADDER[c]) for c in cls[idx[0]])
            ox, oy, oz = np.meshgrid(np.arange(kx), np.arange(ky), np.arange(kz), indexing="ij")
            per = max(1, max_batch_voxels // (kx * ky * kz))
            for b0 in range(0, len(idx), per):
                sel = idx[b0 : b0 + per]
                vx = lo[sel, 0:1] + ox.ravel()[None, :]
                vy = lo[sel, 1:2] + oy.ravel()[None, :]
                vz = lo[sel, 2:3] + oz.ravel()[None, :]
                inb = (vx <= hi[sel, 0:1]) & (vy <= hi[sel, 1:2]) & (vz <= hi[sel, 2:3])
                inside = inb & _capsule_inside(vx, vy, vz, a[sel], b[sel], ra[sel], rb[sel])
                rows, cols = np.nonzero(inside)
                if len(rows) == 0:
                    continue
                lin = (vx[rows, cols] * g + vy[rows, cols]) * g + vz[rows, cols]
                val, tg = value[sel][rows], tag[sel][rows]
                order = np.lexsort((np.arange(len(lin)), val, lin))  # per voxel keep the largest value
                lin, val, tg = lin[order], val[order], tg[order]
                last = np.ones(len(lin), dtype=bool)
                last[:-1] = lin[1:] != lin[:-1]
                lin, val, tg = lin[last], val[last], tg[last]
                better = val > flat_val[lin]
                flat_val[lin[better]] = val[better]
                flat_tag[lin[better]] = tg[better]
    shape = (g, g, g)
    return flat_tag.reshape(shape) > 0, flat_val.reshape(shape), flat_tag.reshape(shape)


# ---------------------------------------------------------------------------------------------------------------
# Growth
# ---------------------------------------------------------------------------------------------------------------

_KIND_CODE = {"root": 0, "branch": 0, "ring": 1, "anastomosis": 2}
#: expected change of the Euler characteristic when a segment of this kind is added (see the module docstring)
_EXPECTED_DCHI = {"root": 1, "branch": 0, "ring": -1, "anastomosis": -1}


class _Segment:
    __slots__ = (
        "pts", "radius", "gen", "subtree", "parent", "children", "start_node", "end_node", "node_ids",
        "start_dir", "end_dir", "normal", "kind", "territory",
    )


class _Candidate:
    __slots__ = ("pts", "radius", "gen", "subtree", "parent", "start_node", "end_node", "normal", "kind", "_samples",
                 "mask", "territory", "full")

    def __init__(self, pts, radius, gen, subtree, parent, start_node, end_node, normal, kind):
        self.pts = pts
        self.radius = float(radius)
        self.gen = int(gen)
        self.subtree = int(subtree)
        self.parent = parent
        self.start_node = start_node
        self.end_node = end_node
        self.normal = normal
        self.kind = kind
        self._samples = None
        self.mask = None
        self.territory = None
        self.full = None

    @property
    def samples(self) -> np.ndarray:
        """Centerline points at most ``_SAMPLE_STEP`` apart (computed on first use)."""
        if self._samples is None:
            self._samples = _polyline_samples(self.pts, _SAMPLE_STEP)
        return self._samples


class _Builder:
    """Grows one tree.  All randomness comes from ``rng``; the order of operations is fixed (breadth first)."""

    def __init__(self, preset: TreePreset, grid: int, rng: np.random.Generator, loops: bool):
        self.p = preset
        self.G = grid
        self.rng = rng
        self.loops = loops
        self.rmin = float(preset.min_radius_vox)
        self.gap = float(preset.clearance_vox) + _SAMPLE_STEP  # clearance on samples (covers the sampling error)
        self.segments: list[_Segment] = []
        self.node_list: list[np.ndarray] = []
        self.node_rad: list[float] = []
        self.n_nodes = 0
        self.incidence: dict[int, list[tuple[int, np.ndarray, float]]] = {}
        # clearance-test store: centerline samples (position, drawn radius, segment) in per-segment blocks with
        # bounding boxes, found through a spatial hash
        self._cap = 4096
        self.s_pts = np.empty((self._cap, 3))
        self.s_rad = np.empty(self._cap)
        self.s_seg = np.empty(self._cap, dtype=np.int64)
        self.n_s = 0
        self._bcap = 256
        self.blk_lo = np.empty((self._bcap, 3))
        self.blk_hi = np.empty((self._bcap, 3))
        self.blk_range = np.empty((self._bcap, 2), dtype=np.int64)
        self._cell = 16.0  # spatial hash of the blocks: cell -> block ids (ascending)
        self.cells: dict[tuple[int, int, int], list[int]] = {}
        self.n_blk = 0
        # the maps, rasterised incrementally
        self.vol = np.zeros((grid,) * 3, dtype=bool)
        self.rad = np.zeros((grid,) * 3, dtype=np.float32)
        self.lab = np.zeros((grid,) * 3, dtype=np.int16)
        self.bifurcations: list[tuple[int, int, int]] = []
        self.n_loops = 0
        dom = preset.domain
        self.dom_c = np.array([d[0] for d in dom], dtype=np.float64) * (grid - 1)
        self.dom_a = np.array([d[1] for d in dom], dtype=np.float64) * (grid - 1)
        self.margin = float(preset.margin_vox)
        # supply territory: random points filling the organ domain, shared out among the branches
        self.terr_pts = self._domain_points(4000) if preset.territory_bias > 0 else None
        self.cos_min_angle = math.cos(math.radians(preset.min_junction_angle_deg))
        # a centerline can only fold back when its slope can reach ~1: pi * (3 sigma) * modes * tortuosity >= 1
        self.may_fold = 3.0 * math.pi * preset.tortuosity * preset.tortuosity_modes >= 1.0

    # --- geometry -------------------------------------------------------------------------------------------
    def _curve(self, start: np.ndarray, d: np.ndarray, length: float, radius: float, tort: float) -> np.ndarray:
        """Polyline from ``start`` along unit ``d``: chord plus a smooth random perpendicular perturbation."""
        rd = max(radius, _DRAW_MIN_RADIUS)
        step = min(max(1.5, 1.2 * rd), 8.0)
        n = int(min(24, max(2, math.ceil(length / step))))
        if tort > 0:
            n = max(n, min(24, 2 + 2 * self.p.tortuosity_modes))
        t = np.arange(n + 1) / n
        pts = start[None, :] + (t * length)[:, None] * d[None, :]
        if tort > 0:
            e1 = _perpendicular(d, None, self.rng)
            e2 = _cross(d, e1)
            u = np.minimum(np.minimum(t, 1.0 - t) * 4.0, 1.0)
            env = u * u * (3.0 - 2.0 * u)  # smoothstep: straight near both junctions
            # modes with a half-wavelength below ~2 diameters would kink thin tubes: drop them
            modes = max(1, min(self.p.tortuosity_modes, int(length / (4.0 * rd))))
            k = np.arange(1, modes + 1)
            c = self.rng.normal(size=(modes, 2)) * (tort * length)
            basis = np.sin(math.pi * k[None, :] * t[:, None]) / k[None, :]  # (n+1, modes)
            off = basis @ (c[:, 0:1] * e1[None, :] + c[:, 1:2] * e2[None, :])  # (n+1, 3)
            pts = pts + env[:, None] * off
        return pts

    def _in_box(self, pts: np.ndarray, r: float) -> bool:
        m = self.margin + max(r, _DRAW_MIN_RADIUS)
        return bool(np.all(pts >= m) and np.all(pts <= self.G - 1 - m))

    def _in_domain(self, pts: np.ndarray, shrink: float) -> np.ndarray:
        a = np.maximum(self.dom_a - shrink, 1.0)
        q = (((pts[:, None, :] - self.dom_c[None, :, :]) / a[None, :, :]) ** 2).sum(axis=2)
        return np.any(q <= 1.0, axis=1)

    def _domain_points(self, n: int) -> np.ndarray:
        lo = np.clip((self.dom_c - self.dom_a).min(axis=0), 0, self.G - 1)
        hi = np.clip((self.dom_c + self.dom_a).max(axis=0), 0, self.G - 1)
        out = []
        got = 0
        for _ in range(64):
            q = lo + self.rng.random((2 * n, 3)) * (hi - lo)
            q = q[self._in_domain(q, 0.0)]
            out.append(q)
            got += len(q)
            if got >= n:
                break
        return np.concatenate(out)[:n]

    def _domain_centre(self, x: np.ndarray) -> np.ndarray:
        q = (((x[None, :] - self.dom_c) / self.dom_a) ** 2).sum(axis=1)
        return self.dom_c[int(np.argmin(q))]

    # --- store ------------------------------------------------------------------------------------------------
    def _new_node(self, x: np.ndarray, r: float) -> int:
        self.node_list.append(np.asarray(x, dtype=np.float64))
        self.node_rad.append(float(r))
        self.n_nodes += 1
        return self.n_nodes - 1

    def _cells_of(self, lo: np.ndarray, hi: np.ndarray):
        a = np.floor(lo / self._cell).astype(int)
        b = np.floor(hi / self._cell).astype(int)
        for i in range(a[0], b[0] + 1):
            for j in range(a[1], b[1] + 1):
                for k in range(a[2], b[2] + 1):
                    yield (i, j, k)

    def _store(self, pts: np.ndarray, rad: float, sid: int) -> None:
        m = len(pts)
        while self.n_s + m > self._cap:
            self._cap *= 2
            for name in ("s_pts", "s_rad", "s_seg"):
                old = getattr(self, name)
                new = np.empty((self._cap,) + old.shape[1:], dtype=old.dtype)
                new[: self.n_s] = old[: self.n_s]
                setattr(self, name, new)
        if self.n_blk == self._bcap:
            self._bcap *= 2
            for name in ("blk_lo", "blk_hi", "blk_range"):
                old = getattr(self, name)
                new = np.empty((self._bcap,) + old.shape[1:], dtype=old.dtype)
                new[: self.n_blk] = old[: self.n_blk]
                setattr(self, name, new)
        self.s_pts[self.n_s : self.n_s + m] = pts
        self.s_rad[self.n_s : self.n_s + m] = rad
        self.s_seg[self.n_s : self.n_s + m] = sid
        lo = pts.min(axis=0) - rad
        hi = pts.max(axis=0) + rad
        self.blk_lo[self.n_blk] = lo
        self.blk_hi[self.n_blk] = hi
        self.blk_range[self.n_blk] = (self.n_s, self.n_s + m)
        for key in self._cells_of(lo, hi):
            self.cells.setdefault(key, []).append(self.n_blk)
        self.n_s += m
        self.n_blk += 1

    def _add(self, c: _Candidate) -> int:
        """Accept a candidate that passed :meth:`_valid` (which rasterised it into ``c.mask``)."""
        sid = len(self.segments)
        s = _Segment()
        s.pts, s.radius, s.gen, s.subtree, s.parent = c.pts, c.radius, c.gen, c.subtree, c.parent
        s.kind, s.normal, s.children, s.territory = c.kind, c.normal, [], c.territory
        ids = []
        npts = len(c.pts)
        for i in range(npts):
            if i == 0 and c.start_node is not None:
                ids.append(c.start_node)
            elif i == npts - 1 and c.end_node is not None:
                ids.append(c.end_node)
            else:
                ids.append(self._new_node(c.pts[i], c.radius))
        s.node_ids = ids
        s.start_node, s.end_node = ids[0], ids[-1]
        s.start_dir = _unit(c.pts[1] - c.pts[0])
        s.end_dir = _unit(c.pts[-2] - c.pts[-1])  # pointing away from the end junction, into the segment
        rd = max(c.radius, _DRAW_MIN_RADIUS)
        self._store(c.samples, rd, sid)
        self.incidence.setdefault(s.start_node, []).append((sid, s.start_dir, rd))
        self.incidence.setdefault(s.end_node, []).append((sid, s.end_dir, rd))
        if c.parent is not None:
            self.segments[c.parent].children.append(sid)
        # rasterise into the maps (the thickest covering segment wins radius and label)
        wlo, whi = self._full_window(c)
        if c.mask is None:
            c.mask = _tube_mask(c.pts, rd, wlo, whi)
        sl = tuple(slice(int(l), int(h) + 1) for l, h in zip(wlo, whi))
        vol_w, rad_w, lab_w = self.vol[sl], self.rad[sl], self.lab[sl]
        vol_w |= c.mask
        upd = c.mask & (rad_w < c.radius)
        rad_w[upd] = c.radius
        lab_w[upd] = c.gen
        self.segments.append(s)
        return sid

    # --- checks -------------------------------------------------------------------------------------------------
    def _too_close(self, c: _Candidate) -> bool:
        """Geometric clearance test: True when the candidate comes closer than ``r_a + r_b + clearance`` to another
        segment away from a junction they share, or leaves a junction at too acute an angle."""
        ends = []
        if c.start_node is not None:
            ends.append((c.start_node, c.pts[0], _unit(c.pts[1] - c.pts[0])))
        if c.end_node is not None:
            ends.append((c.end_node, c.pts[-1], _unit(c.pts[-2] - c.pts[-1])))
        for node, _, dnew in ends:
            for _, dold, _ in self.incidence.get(node, ()):
                if float(np.dot(dnew, dold)) > self.cos_min_angle:
                    return True
        if not self.segments:
            return False
        P = c.samples
        rd = max(c.radius, _DRAW_MIN_RADIUS)
        reach = rd + self.gap  # block boxes already include their own radii
        lo = P.min(axis=0) - reach
        hi = P.max(axis=0) + reach
        near: set[int] = set()
        for key in self._cells_of(lo, hi):
            near.update(self.cells.get(key, ()))
        if not near:
            return False
        cand = np.fromiter(near, dtype=np.int64, count=len(near))
        cand = cand[np.all(self.blk_hi[cand] >= lo, axis=1) & np.all(self.blk_lo[cand] <= hi, axis=1)]
        if len(cand) == 0:
            return False
        rng_ = self.blk_range[cand]
        lens = rng_[:, 1] - rng_[:, 0]
        idx = np.repeat(rng_[:, 0] - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
        Q = self.s_pts[idx]
        need = rd + self.s_rad[idx] + self.gap
        D2 = (P[:, 0:1] - Q[None, :, 0]) ** 2 + (P[:, 1:2] - Q[None, :, 1]) ** 2 + (P[:, 2:3] - Q[None, :, 2]) ** 2
        viol = D2 < (need * need)[None, :]
        if not viol.any():
            return False
        # close to a shared junction the tubes overlap by construction: exempt the pairs of samples that are both
        # within R of it, R being where two straight tubes at this angle have separated by the clearance
        sq = self.s_seg[idx]
        for node, x, dnew in ends:
            inc = self.incidence.get(node, ())
            if not inc:
                continue
            near_p = ((P - x) ** 2).sum(axis=1)
            near_q = ((Q - x) ** 2).sum(axis=1)
            for sid, dold, r_old in inc:
                cosang = float(np.dot(dnew, dold))
                s_eff = 1.0 if cosang <= 0 else math.sqrt(max(1e-6, 1.0 - cosang * cosang))
                R = 1.2 * (rd + r_old + self.gap) / s_eff + _SAMPLE_STEP
                rows = near_p < R * R
                cols = (sq == sid) & (near_q < R * R)
                viol &= ~(rows[:, None] & cols[None, :])
        return bool(viol.any())

    def _folds(self, c: _Candidate) -> bool:
        """True when a curved segment comes back close to itself."""
        P = c.samples
        if len(P) < 4:
            return False
        need = 2.0 * max(c.radius, _DRAW_MIN_RADIUS) + self.gap
        arc = _arclength(P)
        far = np.abs(arc[:, None] - arc[None, :]) > 1.3 * need
        if not far.any():
            return False
        D2 = ((P[:, None, :] - P[None, :, :]) ** 2).sum(axis=2)
        return bool(np.any(far & (D2 < need * need)))

    def _full_window(self, c: _Candidate) -> tuple[np.ndarray, np.ndarray]:
        if c.full is None:
            rd = max(c.radius, _DRAW_MIN_RADIUS)
            G = self.G
            wlo = np.clip(np.floor(c.pts.min(axis=0) - rd).astype(np.int64) - 2, 0, G - 1)
            whi = np.clip(np.ceil(c.pts.max(axis=0) + rd).astype(np.int64) + 2, 0, G - 1)
            c.full = (wlo, whi)
        return c.full

    def _topology_ok(self, c: _Candidate) -> bool:
        """Rasterise the candidate (kept in ``c.mask``) and test the change of the Euler characteristic: +1 for a
        root, 0 for a branch, -1 for a segment that joins two existing ends.  Only the 2x2x2 blocks around the new
        voxels are evaluated."""
        wlo, whi = self._full_window(c)
        if c.mask is None:
            c.mask = _tube_mask(c.pts, max(c.radius, _DRAW_MIN_RADIUS), wlo, whi)
        before = self.vol[tuple(slice(int(l), int(h) + 1) for l, h in zip(wlo, whi))]
        return _euler_change(before, c.mask) == _EXPECTED_DCHI[c.kind]

    def _valid(self, c: _Candidate, domain: str) -> bool:
        if c.kind != "root" and not self._in_box(c.pts, c.radius):
            return False
        if domain == "end":
            if not self._in_domain(c.pts[-1:], max(c.radius, _DRAW_MIN_RADIUS))[0]:
                return False
        elif domain == "all":
            if not np.all(self._in_domain(c.pts[1:], 0.0)):
                return False
            if not self._in_domain(c.pts[-1:], max(c.radius, _DRAW_MIN_RADIUS))[0]:
                return False
        if self.may_fold and self._folds(c):
            return False
        if self._too_close(c):
            return False
        return self._topology_ok(c)

    # --- growth -------------------------------------------------------------------------------------------------
    def _roots(self) -> list[int]:
        p, G = self.p, self.G
        r0 = max(p.root_radius_frac * G, self.rmin)
        ids = []
        for k, (start, direction) in enumerate(p.roots):
            x0 = np.clip(np.array(start, dtype=np.float64) * (G - 1), 0.0, G - 1.0)
            d0 = _unit(np.array(direction, dtype=np.float64))
            for _ in range(4):
                d = _unit(d0 + self.rng.normal(size=3) * 0.04)
                pts = self._curve(x0, d, p.root_length_frac * G, r0, p.tortuosity * 0.5)
                hint = None if p.first_split_normal is None else np.array(p.first_split_normal, float)
                normal = _perpendicular(_unit(pts[-1] - pts[-2]), hint, self.rng)
                c = _Candidate(pts, r0, 1, k, None, None, None, normal, "root")
                if not self._too_close(c) and self._topology_ok(c):
                    ids.append(self._add(c))
                    break
        if self.terr_pts is not None and ids:  # each root supplies the points nearest to its end
            ends = np.array([self.segments[i].pts[-1] for i in ids])
            owner = np.argmin(((self.terr_pts[:, None, :] - ends[None, :, :]) ** 2).sum(axis=2), axis=1)
            for j, i in enumerate(ids):
                self.segments[i].territory = np.nonzero(owner == j)[0]
        return ids

    def _ring(self, roots: list[int]) -> None:
        """Communicating segments between root ends: a chain, closed to a ring when loops are on."""
        if len(roots) < 2:
            return
        ends = np.array([self.node_list[self.segments[s].end_node] for s in roots])
        centre = ends.mean(axis=0)
        pairs = [(roots[i], roots[i + 1]) for i in range(len(roots) - 1)]
        if self.loops and len(roots) > 2:
            pairs.append((roots[-1], roots[0]))
        for i, (sa, sb) in enumerate(pairs):
            A, B = self.segments[sa], self.segments[sb]
            xa, xb = self.node_list[A.end_node], self.node_list[B.end_node]
            chord = xb - xa
            L = float(np.linalg.norm(chord))
            out = 0.5 * (xa + xb) - centre
            out -= np.dot(out, chord) / (L * L) * chord
            out = _unit(out) if np.linalg.norm(out) > 1e-6 else _perpendicular(_unit(chord), None, self.rng)
            r = max(self.p.ring_radius_factor * min(A.radius, B.radius), self.rmin)
            n = max(4, int(math.ceil(L / 2.0)))
            t = np.linspace(0.0, 1.0, n + 1)
            for bulge in (self.p.ring_bulge, 0.6 * self.p.ring_bulge, 1.4 * self.p.ring_bulge):
                pts = xa[None, :] + t[:, None] * chord[None, :]
                pts = pts + (bulge * L * np.sin(math.pi * t))[:, None] * out[None, :]
                c = _Candidate(pts, r, 1, A.subtree, None, A.end_node, B.end_node, None, "ring")
                if self._valid(c, "none"):
                    self._add(c)
                    self.n_loops += int(i >= len(roots) - 1)  # the closing segment makes the loop
                    break

    def _min_len(self, r_parent: float, r: float) -> float:
        """Shortest child: its own children must be able to clear the parent's tube."""
        return max(r_parent, _DRAW_MIN_RADIUS) + max(r, _DRAW_MIN_RADIUS) + 2.0 * self.gap

    def _split_radii(self, r0: float, asym: tuple[float, float]) -> tuple[float, float] | None:
        """Murray split ``r0**3 = r1**3 + r2**3`` with ``r2 = a * r1``; None when the children would be too thin."""
        a = float(self.rng.uniform(*asym))
        r1 = r0 / (1.0 + a**3) ** (1.0 / 3.0)
        r2 = a * r1
        if r2 < self.rmin:
            s = (self.rmin / r0) ** 3
            if s >= 0.5:
                return None  # even a symmetric split is too thin
            a = min(1.0, (s / (1.0 - s)) ** (1.0 / 3.0) * (1.0 + 1e-9))
            r1 = r0 / (1.0 + a**3) ** (1.0 / 3.0)
            r2 = a * r1
        return r1, r2

    @staticmethod
    def _clip_angle(u: np.ndarray, d: np.ndarray, rng_deg: tuple[float, float]) -> np.ndarray:
        """Rotate ``d`` towards or away from the unit axis ``u`` so that their angle lies in ``rng_deg``."""
        d = _unit(d)
        cosang = min(1.0, max(-1.0, float(np.dot(u, d))))
        ang = math.degrees(math.acos(cosang))
        lo, hi = rng_deg
        if lo <= ang <= hi:
            return d
        perp = d - cosang * u
        if np.linalg.norm(perp) < 1e-9:
            perp = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
            perp = perp - np.dot(perp, u) * u
        perp = _unit(perp)
        a = math.radians(min(max(ang, lo), hi))
        return math.cos(a) * u + math.sin(a) * perp

    def _branch(self, sid: int) -> list[int]:
        p, seg = self.p, self.segments[sid]
        if seg.gen >= p.max_generation:
            return []
        first = seg.kind == "root"
        asym = p.first_split_asymmetry if (first and p.first_split_asymmetry) else p.asymmetry
        radii = self._split_radii(seg.radius, asym)
        if radii is None:
            return []
        r0 = seg.radius
        r1, r2 = radii
        # Murray's optimal angles (minimum work), then a common jitter, then the preset range
        c1 = min(1.0, max(-1.0, (r0**4 + r1**4 - r2**4) / (2 * r0**2 * r1**2)))
        c2 = min(1.0, max(-1.0, (r0**4 + r2**4 - r1**4) / (2 * r0**2 * r2**2)))
        th_opt = (math.degrees(math.acos(c1)), math.degrees(math.acos(c2)))
        rng_ang = p.first_split_angle_deg if (first and p.first_split_angle_deg) else p.branch_angle_deg
        J = seg.end_node
        x = self.node_list[J]
        u = _unit(seg.pts[-1] - seg.pts[-2])
        gen = seg.gen + 1
        domain = "end" if gen <= 2 else "all"
        placed: list[int | None] = [None, None]
        for attempt in range(p.max_tries):
            jit = float(self.rng.uniform(*p.angle_jitter))
            th = [math.radians(min(max(t_ * jit, rng_ang[0]), rng_ang[1])) for t_ in th_opt]
            if first and p.first_split_normal is not None and attempt < p.max_tries // 2:
                n = _perpendicular(u, np.array(p.first_split_normal, float), self.rng)
                if attempt > 0:  # small wobble of the prescribed plane on retries
                    phi = math.radians(self.rng.normal(0.0, 15.0))
                    n = n * math.cos(phi) + _cross(u, n) * math.sin(phi)
            else:
                n0 = _perpendicular(u, seg.normal, self.rng)
                phi = math.radians(self.rng.uniform(*p.plane_rotation_deg))
                if attempt >= 2:
                    phi = self.rng.uniform(0.0, 2 * math.pi)
                n = n0 * math.cos(phi) + _cross(u, n0) * math.sin(phi)
            if self.rng.random() < 0.5:
                n = -n
            w = _cross(n, u)
            terr = (None, None)
            if seg.territory is not None and len(seg.territory):
                # the plane through the parent axis and the bifurcation normal splits the parent's territory;
                # the thicker child takes the larger part (Kitaoka et al., J. Appl. Physiol. 87:2207, 1999)
                rel = self.terr_pts[seg.territory] - x
                side = rel @ w > 0
                if 2 * int(side.sum()) < len(side):
                    n, w, side = -n, -w, ~side
                ahead = rel @ u > 0  # points behind the junction are left to other branches: trees radiate
                terr = (seg.territory[side & ahead], seg.territory[~side & ahead])
            dirs = [math.cos(th[0]) * u + math.sin(th[0]) * w, math.cos(th[1]) * u - math.sin(th[1]) * w]
            reach = [math.inf, math.inf]
            if terr[0] is not None:
                for k in range(2):
                    if len(terr[k]) >= 4:
                        toc = self.terr_pts[terr[k]].mean(axis=0) - x
                        if np.linalg.norm(toc) > 1e-6:
                            dirs[k] = self._clip_angle(u, _unit(dirs[k]) + p.territory_bias * _unit(toc), rng_ang)
                            reach[k] = float(np.linalg.norm(toc))
                # keep the larger angle on the thinner child
                ang = [math.degrees(math.acos(min(1.0, max(-1.0, float(np.dot(u, _unit(d))))))) for d in dirs]
                if ang[0] > ang[1]:
                    dirs[0] = self._clip_angle(u, dirs[0], (rng_ang[0], ang[1]))
            shrink = (1.0, 1.0, 0.85, 0.85, 0.7, 0.7, 0.55, 0.55)[min(attempt, 7)]
            lens = []
            for k, r in enumerate((r1, r2)):
                L = r * self.rng.uniform(*p.length_ratio) * shrink * (p.first_split_length_factor if first else 1.0)
                lens.append(max(min(L, p.territory_reach * reach[k]), p.min_length_vox, self._min_len(r0, r)))

            def make(k: int) -> _Candidate:
                d, L, r = dirs[k], lens[k], (r1, r2)[k]
                if attempt >= p.max_tries // 2:  # steer towards the centre of the organ part it is heading for
                    toc = self._domain_centre(x + L * d) - x
                    if np.linalg.norm(toc) > 1e-6:
                        d = d + 0.6 * _unit(toc)
                d = self._clip_angle(u, d, rng_ang)
                # the chord of the thinner child makes the larger angle with the parent axis, also when the two
                # children were placed in different attempts
                if placed[1 - k] is not None:
                    o = self.segments[placed[1 - k]].pts
                    other = o[-1] - o[0]
                else:
                    other = dirs[1 - k]
                a_other = math.degrees(math.acos(min(1.0, max(-1.0, float(np.dot(u, _unit(other)))))))
                if k == 0:
                    d = self._clip_angle(u, d, (rng_ang[0], max(rng_ang[0], a_other)))
                else:
                    d = self._clip_angle(u, d, (min(a_other, rng_ang[1]), rng_ang[1]))
                pts = self._curve(x, _unit(d), L, r, p.tortuosity)
                # subtrees (for anastomoses): below each root; a single root's tree is cut into its four
                # generation-3 subtrees (two per main branch)
                sub = seg.subtree
                if len(p.roots) == 1 and gen in (2, 3):
                    sub = 2 * seg.subtree + 1 + k
                c = _Candidate(pts, r, gen, sub, sid, J, None, n, "branch")
                c.territory = terr[k]
                return c

            # a child that fits is kept; the other one is tried again with the next attempt's geometry
            for k in range(2):
                if placed[k] is None:
                    c = make(k)
                    if self._valid(c, domain):
                        placed[k] = self._add(c)
            if placed[0] is not None and placed[1] is not None:
                a, b = (self.segments[i] for i in placed)
                self.bifurcations.append((J, a.node_ids[1], b.node_ids[1]))
                break
        return [i for i in placed if i is not None]

    def _anastomoses(self) -> None:
        p = self.p
        if not self.loops or p.n_anastomoses <= 0:
            return
        from scipy.spatial import cKDTree

        term = [i for i, s in enumerate(self.segments) if s.kind == "branch" and not s.children]
        if len(term) < 2:
            return
        ends = np.array([self.node_list[self.segments[i].end_node] for i in term])
        dmax = p.anastomosis_max_dist_frac * self.G
        pairs = np.array(sorted(cKDTree(ends).query_pairs(dmax)), dtype=np.int64).reshape(-1, 2)
        if len(pairs) == 0:
            return
        sub = np.array([self.segments[i].subtree for i in term])
        pairs = pairs[sub[pairs[:, 0]] != sub[pairs[:, 1]]]
        if len(pairs) == 0:
            return
        dist = np.linalg.norm(ends[pairs[:, 0]] - ends[pairs[:, 1]], axis=1)
        order = np.argsort(dist * self.rng.uniform(0.7, 1.3, size=len(dist)), kind="stable")  # short ones first
        used: set[int] = set()
        added, tried = 0, 0
        for q in order:
            if added >= p.n_anastomoses or tried >= 200:
                break
            i, j = int(pairs[q, 0]), int(pairs[q, 1])
            if i in used or j in used:
                continue
            A, B = self.segments[term[i]], self.segments[term[j]]
            r = max(min(A.radius, B.radius), self.rmin)
            L = float(dist[q])
            if L < 2.0 * (max(A.radius, B.radius) + self.gap):
                continue
            tried += 1
            xa = ends[i]
            chord = _unit(ends[j] - xa)
            t = np.linspace(0.0, 1.0, max(3, int(math.ceil(L / 2.0))) + 1)
            pts = xa[None, :] + (t * L)[:, None] * chord[None, :]
            e1 = _perpendicular(chord, None, self.rng)
            pts = pts + (np.sin(math.pi * t) * self.rng.normal() * 0.1 * L)[:, None] * e1[None, :]
            pts[-1] = ends[j]
            c = _Candidate(pts, r, max(A.gen, B.gen), A.subtree, None, A.end_node, B.end_node, None, "anastomosis")
            if self._valid(c, "none"):
                self._add(c)
                used.update((i, j))
                added += 1
                self.n_loops += 1

    def grow(self) -> None:
        roots = self._roots()
        if self.p.ring:
            self._ring(roots)
        queue = deque(roots)
        while queue:
            queue.extend(self._branch(queue.popleft()))
        self._anastomoses()


# ---------------------------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------------------------


def _resolve(kind: str, grid: int, overrides: dict[str, Any]) -> TreePreset:
    if not isinstance(kind, str) or kind not in PRESETS:
        raise ValueError(f"unknown vessel tree kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)):
        raise ValueError(f"grid must be an integer in [32, 512], got {grid!r}")
    if not 32 <= int(grid) <= 512:
        raise ValueError(f"grid must be in [32, 512], got {grid}")
    names = [f.name for f in dataclasses.fields(TreePreset) if f.name not in ("name", "description")]
    bad = sorted(set(overrides) - set(names))
    if bad:
        raise TypeError(f"unknown TreePreset field(s) {', '.join(map(repr, bad))}; valid fields: {', '.join(names)}")
    preset = dataclasses.replace(PRESETS[kind], **overrides) if overrides else PRESETS[kind]
    if not preset.min_radius_vox > 0:
        raise ValueError(f"min_radius_vox must be positive, got {preset.min_radius_vox}")
    for nm in ("length_ratio", "asymmetry", "branch_angle_deg", "angle_jitter"):
        lo, hi = getattr(preset, nm)
        if not lo <= hi:
            raise ValueError(f"{nm} must be a (low, high) range, got {(lo, hi)}")
    if not 0 < preset.asymmetry[0] <= preset.asymmetry[1] <= 1:
        raise ValueError(f"asymmetry must lie in (0, 1], got {preset.asymmetry}")
    if not preset.roots:
        raise ValueError("a preset needs at least one root")
    return preset


def generate_tree(kind: str = "airway", grid: int = 64, seed: int = 0, *, loops: bool | None = None,
                  **overrides: Any) -> VesselTree:
    """Grow and rasterise one vessel tree of preset ``kind`` on a ``grid**3`` volume.

    ``loops`` (default: the preset's) switches anastomoses on or off; ``overrides`` replace fields of the
    :class:`TreePreset` (an unknown name raises ``TypeError`` listing the valid fields).  The result depends only on
    the arguments: all randomness comes from ``np.random.default_rng(seed)``.
    """
    preset = _resolve(kind, grid, overrides)
    grid, seed = int(grid), int(seed)
    use_loops = preset.loops if loops is None else bool(loops)
    b = _Builder(preset, grid, np.random.default_rng(seed), use_loops)
    b.grow()

    nodes = np.array(b.node_list, dtype=np.float64).reshape(-1, 3)
    node_radius = np.array(b.node_rad, dtype=np.float64)
    edges, egen, erad, ekind = [], [], [], []
    for s in b.segments:
        ids = np.asarray(s.node_ids, dtype=np.int64)
        m = len(ids) - 1
        edges.append(np.stack([ids[:-1], ids[1:]], axis=1))
        egen.append(np.full(m, s.gen, dtype=np.int64))
        erad.append(np.full(m, s.radius))
        ekind.append(np.full(m, _KIND_CODE[s.kind], dtype=np.int8))
    cat = lambda parts, shape, dt: np.concatenate(parts) if parts else np.zeros(shape, dt)  # noqa: E731
    return VesselTree(
        volume=b.vol,
        radius=b.rad,
        label=b.lab,
        nodes=nodes,
        node_radius=node_radius,
        edges=cat(edges, (0, 2), np.int64),
        edge_generation=cat(egen, (0,), np.int64),
        bifurcations=np.array(b.bifurcations, dtype=np.int64).reshape(-1, 3),
        kind=kind,
        grid=grid,
        seed=seed,
        n_loops=int(b.n_loops),
        edge_radius=cat(erad, (0,), np.float64),
        edge_kind=cat(ekind, (0,), np.int8),
        preset=preset,
    )


def generate_dataset(n: int, grid: int = 64, seed: int = 0, kinds: Iterable[str] = KINDS,
                     **overrides: Any) -> list[VesselTree]:
    """``n`` trees, kinds cycling round-robin through ``kinds``.

    Item ``i`` uses the ``i``-th child of ``np.random.SeedSequence(seed).spawn(n)`` (its first 63-bit state word is
    the tree's ``seed``), so the same call gives identical arrays.  ``overrides`` (including ``loops``) go to every
    :func:`generate_tree` call.  A progress bar is shown when ``n > 8``.
    """
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds must not be empty; valid kinds: {', '.join(KINDS)}")
    for k in kinds:
        if k not in PRESETS:
            raise ValueError(f"unknown vessel tree kind {k!r}; valid kinds: {', '.join(KINDS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    n = int(n)
    _resolve(kinds[0], grid, {k: v for k, v in overrides.items() if k != "loops"})  # fail fast on bad arguments
    children = np.random.SeedSequence(int(seed)).spawn(n)
    seeds = [int(ch.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for ch in children]
    it: Iterable[int] = range(n)
    if n > 8:
        from ..progress import progress

        it = progress(it, total=n, desc="vessel trees", leave=False)
    return [generate_tree(kinds[i % len(kinds)], grid, seeds[i], **overrides) for i in it]
