"""Circle-of-Willis (CoW) stand-ins: binary 3D maps of 8 anatomical variant classes (offline TopCoW substitute).

The VAEsselSparse paper uses TopCoW: 126 binary CoW segmentations in 8 subtype classes.  Offline, this module
draws procedural CoW maps of 8 variant classes on a ``grid**3`` volume.  Public entry points:
:func:`generate_cow_set`, :func:`generate_cow` (one sample), :func:`class_graph`, :func:`graph_topology`,
:func:`default_class_sizes`; constants :data:`CLASSES`, :data:`SEGMENTS`, :data:`RING`.

Facts (from the paper)
    126 maps, 8 subtype classes.  TopCoW's exact taxonomy and class split are *not* in the paper.

Our choices
    * The 8 classes (common CoW variants, each a change of the ring ICA-A1-Acom-A1-ICA-Pcom-P1-BA-P1-Pcom):
      0 ``complete``; 1 ``acom_absent``; 2 ``a1_absent`` (one side); 3 ``pcom_absent`` (one side);
      4 ``both_pcom_absent``; 5 ``p1_absent_fetal`` (one P1 absent, fetal PCA: that side's Pcom enlarged to P1
      calibre feeds the P2); 6 ``a1_hypoplastic`` (one A1 with radius at most half the normal one); 7
      ``p1_hypoplastic_fetal`` (one P1 hypoplastic, fetal type: that side's Pcom enlarged).  The ring is closed
      (one loop) for classes 0, 6, 7 and open otherwise; class 4 splits into an anterior and a posterior part.
    * The default class sizes for ``n = 126``: ``[26, 15, 14, 15, 14, 14, 14, 14]`` (complete circles the most
      frequent class); other ``n`` scale these proportionally (largest remainders), every class at least 1.
    * The template (:data:`SEGMENTS`, :data:`NODES`, grid fractions; ``x`` = array axis 0 runs from the body's right
      to its left, ``y`` = axis 1 from front to back, ``z`` = axis 2 up): the ring lies in an axial-ish plane at
      ``z ~ 0.42-0.46`` with the posterior part lower, the ICAs and the basilar artery (BA) enter from below, the
      MCAs run laterally to the side faces, the P2s laterally and backwards to the back face, the A2s forwards and
      up.  Every segment is a quadratic Bezier curve (sampled about every voxel) drawn as capsules with
      :func:`companion.data.vessels.rasterize_capsules`; distal vessels (MCA, P2, A2) taper to 0.8 of their radius.
    * Radii are fractions of the grid in the order of typical diameters ICA > BA > MCA > P1 = P2 = A1 = A2 >
      Pcom = Acom (ICA 0.042, BA 0.034, MCA 0.030, P1/P2/A1/A2 0.025, Pcom/Acom 0.016 of the grid: 2.0, 1.6, 1.4,
      1.2 and 0.77 voxels at grid 48).  A radius is drawn at least at ``_DRAW_MIN_RADIUS`` (so thin segments stay
      26-connected); hypoplastic segments are ``U(0.3, 0.5)`` times their normal radius.
    * Per sample: every template node and control point moves by ``N(0, 0.012 grid)`` (clipped at 0.025 grid) per
      axis, then the whole layout is rotated (up to 6 degrees about each axis) and scaled (``U(0.92, 1.05)``) about
      its centre; each segment's radius is jittered by ``U(0.85, 1.15)``; unilateral variants pick the side at
      random; 0-2 short side branches (radius 0.55 of the parent, length 0.07-0.13 grid) leave each MCA, P2 and A2
      in their distal half, so the maps are not template copies.
    * Topology guarantee: the first Betti number and the number of 26-connected components of the map are
      computed (Euler characteristic) and must match the class graph; otherwise the sample is re-jittered (up to
      ``max_attempts`` times).  ``CowSample.topology_ok`` records the outcome (at grid 48 and above it holds; at
      grid 32 the thin segments may, rarely, touch).

Determinism: item ``i`` of :func:`generate_cow_set` uses child ``i`` of ``np.random.SeedSequence(seed)``; no global
random state.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .labelled import check_grid, generate_labelled, resolve_class_sizes
from .vessels import _DRAW_MIN_RADIUS, _euler26, rasterize_capsules

__all__ = [
    "CLASSES", "NODES", "RING", "SEGMENTS", "CowSample", "class_graph", "default_class_sizes", "generate_cow",
    "generate_cow_set", "graph_topology", "map_topology",
]

CLASSES: tuple[str, ...] = (
    "complete", "acom_absent", "a1_absent", "pcom_absent", "both_pcom_absent", "p1_absent_fetal",
    "a1_hypoplastic", "p1_hypoplastic_fetal",
)
#: classes whose ring is closed (one loop)
CLOSED_CLASSES = (0, 6, 7)
DEFAULT_SIZES_126 = (26, 15, 14, 15, 14, 14, 14, 14)

_SIDES = {"L": 1.0, "R": -1.0}  # x grows towards the body's left


def _mirror(name: str, p: tuple[float, float, float]) -> dict[str, tuple[float, float, float]]:
    """Left / right copies of a point given for the left side (``x`` offset from the midline 0.5)."""
    x, y, z = p
    return {f"{name}_{s}": (0.5 + sg * (x - 0.5), y, z) for s, sg in _SIDES.items()}


#: node positions, grid fractions (x, y, z)
NODES: dict[str, tuple[float, float, float]] = {
    "BA0": (0.5, 0.66, -0.02),  # basilar artery, entering from below
    "BT": (0.5, 0.62, 0.40),  # basilar tip
    **_mirror("PJ", (0.61, 0.60, 0.42)),  # P1 / P2 / Pcom junction
    **_mirror("P2E", (0.80, 0.955, 0.52)),  # distal end of P2 (back face)
    **_mirror("ICA0", (0.67, 0.50, -0.02)),  # internal carotid, entering from below
    **_mirror("IT", (0.64, 0.40, 0.44)),  # ICA terminus
    **_mirror("MCAE", (0.965, 0.42, 0.50)),  # distal end of MCA (side face)
    **_mirror("AJ", (0.55, 0.25, 0.46)),  # A1 / A2 / Acom junction
    **_mirror("A2E", (0.57, 0.04, 0.72)),  # distal end of A2 (front, up)
}

_RF = {"ICA": 0.042, "BA": 0.034, "MCA": 0.030, "P1": 0.025, "P2": 0.025, "A1": 0.025, "A2": 0.025,
       "Pcom": 0.016, "Acom": 0.016}


def _seg(base: str, side: str | None, a: str, b: str, ctrl: tuple[float, float, float], taper: float = 1.0):
    sfx = "" if side is None else f"_{side}"
    sg = 1.0 if side is None else _SIDES[side]
    c = (0.5 + sg * (ctrl[0] - 0.5), ctrl[1], ctrl[2])
    return (base + sfx, {"base": base, "side": side, "a": a, "b": b, "ctrl": c, "radius_frac": _RF[base],
                         "taper": taper})


#: segments: name -> dict(base, side, a, b (node names), ctrl (Bezier control point, grid fractions),
#: radius_frac, taper (radius factor at the distal end))
SEGMENTS: dict[str, dict[str, Any]] = dict([
    _seg("BA", None, "BA0", "BT", (0.5, 0.71, 0.20)),
    _seg("Acom", None, "AJ_R", "AJ_L", (0.5, 0.23, 0.46)),
    *[_seg("P1", s, "BT", f"PJ_{s}", (0.555, 0.63, 0.41)) for s in _SIDES],
    *[_seg("P2", s, f"PJ_{s}", f"P2E_{s}", (0.80, 0.66, 0.44), 0.8) for s in _SIDES],
    *[_seg("Pcom", s, f"PJ_{s}", f"IT_{s}", (0.63, 0.50, 0.42)) for s in _SIDES],
    *[_seg("ICA", s, f"ICA0_{s}", f"IT_{s}", (0.68, 0.26, 0.20)) for s in _SIDES],
    *[_seg("MCA", s, f"IT_{s}", f"MCAE_{s}", (0.80, 0.36, 0.44), 0.8) for s in _SIDES],
    *[_seg("A1", s, f"IT_{s}", f"AJ_{s}", (0.60, 0.30, 0.45)) for s in _SIDES],
    *[_seg("A2", s, f"AJ_{s}", f"A2E_{s}", (0.555, 0.10, 0.50), 0.8) for s in _SIDES],
])

#: the ring's segments in order
RING = ("ICA_L", "A1_L", "Acom", "A1_R", "ICA_R", "Pcom_R", "P1_R", "BA", "P1_L", "Pcom_L")
_BRANCHING = ("MCA", "P2", "A2")  # vessels that get distal side branches

JITTER_FRAC = 0.012
JITTER_CLIP_FRAC = 0.025
ROTATION_DEG = 6.0
SCALE = (0.92, 1.05)
RADIUS_JITTER = (0.85, 1.15)
HYPOPLASTIC = (0.3, 0.5)
SIDE_BRANCHES = (0, 2)  # per MCA / P2 / A2, inclusive
SIDE_BRANCH_LENGTH = (0.07, 0.13)  # grid fractions
SIDE_BRANCH_RADIUS = 0.55
MIN_A_SEPARATION = 0.08  # smallest x distance between the two A1/A2 junctions (grid fraction)
_CENTRE = np.array([0.5, 0.55, 0.42])

# Lesions on a complete ring (the INSTED stand-in, :func:`generate_lesion`): sites of our choosing among the common
# ones (stenoses of the large arteries; aneurysms at the anterior communicating complex, the ICA terminus, the
# basilar tip and the P1/Pcom junction), sizes as in companion.data.pathology
LESION_CLASSES: tuple[str, ...] = ("healthy", "stenosis", "aneurysm")
STENOSIS_SITES = ("ICA", "MCA", "BA", "A1", "P1")
STENOSIS_SEVERITY = (0.3, 0.9)
ANEURYSM_SITES = ("AJ", "IT", "BT", "PJ")
ANEURYSM_K = (1.5, 4.0)
ANEURYSM_MAX_FRAC = 0.09  # largest sac semi-axis, grid fraction


def class_graph(label: int, side: str | None = None) -> dict[str, str]:
    """Status of every segment for class ``label``: ``"normal"``, ``"absent"``, ``"hypoplastic"`` or ``"enlarged"``.

    ``side`` (``"L"`` / ``"R"``) is the affected side of unilateral variants (classes 2, 3, 5, 6, 7; default
    ``"L"``); it is ignored by the others.
    """
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) < len(CLASSES):
        raise ValueError(f"label must be an integer in 0..{len(CLASSES) - 1} ({', '.join(CLASSES)}), got {label!r}")
    side = "L" if side is None else side
    if side not in _SIDES:
        raise ValueError(f"side must be 'L' or 'R', got {side!r}")
    st = {name: "normal" for name in SEGMENTS}
    lab = int(label)
    if lab == 1:
        st["Acom"] = "absent"
    elif lab == 2:
        st[f"A1_{side}"] = "absent"
    elif lab == 3:
        st[f"Pcom_{side}"] = "absent"
    elif lab == 4:
        st["Pcom_L"] = st["Pcom_R"] = "absent"
    elif lab == 5:
        st[f"P1_{side}"] = "absent"
        st[f"Pcom_{side}"] = "enlarged"
    elif lab == 6:
        st[f"A1_{side}"] = "hypoplastic"
    elif lab == 7:
        st[f"P1_{side}"] = "hypoplastic"
        st[f"Pcom_{side}"] = "enlarged"
    return st


def graph_topology(present: Sequence[str]) -> tuple[int, int]:
    """``(components, cycle_rank)`` of the graph of the ``present`` segments (nodes = their end nodes); the cycle
    rank ``E - V + C`` is the number of independent loops (the first Betti number of the graph)."""
    nodes = sorted({SEGMENTS[s][k] for s in present for k in ("a", "b")})
    idx = {n: i for i, n in enumerate(nodes)}
    parent = list(range(len(nodes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for s in present:
        ra, rb = find(idx[SEGMENTS[s]["a"]]), find(idx[SEGMENTS[s]["b"]])
        if ra != rb:
            parent[ra] = rb
    C = len({find(i) for i in range(len(nodes))})
    return C, len(present) - len(nodes) + C


def map_topology(volume: np.ndarray) -> tuple[int, int, int]:
    """Betti numbers ``(b0, b1, b2)`` of a binary map (26-connected foreground, 6-connected background), from the
    Euler characteristic and the component counts."""
    import cc3d

    padded = np.pad(np.asarray(volume, dtype=bool), 1)
    chi = _euler26(padded)
    b0 = int(cc3d.connected_components(padded, connectivity=26, return_N=True)[1])
    b2 = int(cc3d.connected_components(~padded, connectivity=6, return_N=True)[1]) - 1
    return b0, b0 + b2 - chi, b2


@dataclass
class CowSample:
    """One CoW map.

    ``segments``: present segments -> model radius (voxels; drawn at least at the draw minimum); ``status``: every
    template segment -> ``normal`` / ``absent`` / ``hypoplastic`` / ``enlarged``; ``graph``: present segments ->
    ``(node_a, node_b)``; ``side``: affected side of a unilateral variant (``"L"`` / ``"R"``, None otherwise);
    ``n_side_branches``; ``attempts`` (draws until the map's topology matched the graph) and ``topology_ok``.
    """

    volume: np.ndarray
    label: int
    class_name: str
    segments: dict[str, float]
    status: dict[str, str]
    side: str | None
    seed: int
    graph: dict[str, tuple[str, str]] = field(default_factory=dict)
    n_side_branches: int = 0
    attempts: int = 1
    topology_ok: bool = True

    @property
    def expected_topology(self) -> tuple[int, int]:
        """``(components, loops)`` of the class graph."""
        return graph_topology(list(self.segments))

    def __repr__(self) -> str:
        return (f"CowSample(class_name={self.class_name!r}, label={self.label}, side={self.side!r}, seed={self.seed}, "
                f"grid={self.volume.shape[0]}, voxels={int(self.volume.sum())}, topology_ok={self.topology_ok})")


def _bezier(p0: np.ndarray, c: np.ndarray, p1: np.ndarray, step: float = 1.0) -> np.ndarray:
    approx = np.linalg.norm(c - p0) + np.linalg.norm(p1 - c)
    n = max(3, int(math.ceil(approx / step)))
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * c + t * t * p1


def _rotation(rng: np.random.Generator) -> np.ndarray:
    ax, ay, az = np.radians(rng.uniform(-ROTATION_DEG, ROTATION_DEG, size=3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _draw(grid: int, status: dict[str, str], rng: np.random.Generator, lesion: str | None = None,
          lrng: np.random.Generator | None = None):
    """One random draw of the layout: returns (volume, radii of present segments, number of side branches, lesion
    parameters).  ``lesion``: None, ``"stenosis"`` or ``"aneurysm"`` (see :func:`generate_lesion`), drawn from its
    own generator ``lrng`` so that the anatomy is the same with and without it."""
    G = float(grid)
    sc = G - 1.0
    # node and control-point jitter (grid fractions), then one global rotation + scale about the centre
    jit = lambda: np.clip(rng.normal(0.0, JITTER_FRAC, size=3), -JITTER_CLIP_FRAC, JITTER_CLIP_FRAC)  # noqa: E731
    nodes = {k: np.array(v) + jit() for k, v in NODES.items()}
    gap = nodes["AJ_L"][0] - nodes["AJ_R"][0]
    if gap < MIN_A_SEPARATION:  # keep the two A2s apart (an absent Acom must leave a visible gap)
        nodes["AJ_L"][0] += 0.5 * (MIN_A_SEPARATION - gap)
        nodes["AJ_R"][0] -= 0.5 * (MIN_A_SEPARATION - gap)
    ctrls = {k: np.array(v["ctrl"]) + jit() for k, v in SEGMENTS.items()}
    rot = _rotation(rng)
    scale = float(rng.uniform(*SCALE))
    tf = lambda p: ((rot @ (p - _CENTRE)) * scale + _CENTRE) * sc  # noqa: E731
    nodes = {k: tf(v) for k, v in nodes.items()}
    ctrls = {k: tf(v) for k, v in ctrls.items()}
    # radii (voxels)
    normal = {k: v["radius_frac"] * G * float(rng.uniform(*RADIUS_JITTER)) for k, v in SEGMENTS.items()}
    radii: dict[str, float] = {}
    for k, st in status.items():
        if st == "absent":
            continue
        if st == "hypoplastic":
            radii[k] = normal[k] * float(rng.uniform(*HYPOPLASTIC))
        elif st == "enlarged":  # a fetal-type Pcom takes the calibre of the P1 on its side
            radii[k] = normal["P1_" + SEGMENTS[k]["side"]]
        else:
            radii[k] = normal[k]
    A, B, RA, RB = [], [], [], []

    def add(pts: np.ndarray, r0: float, r1: float, narrow=None) -> None:
        t = np.linspace(0.0, 1.0, len(pts))
        r = np.maximum(r0 + (r1 - r0) * t, _DRAW_MIN_RADIUS)
        if narrow is not None:  # a stenosis: drawn as narrowed, below the draw minimum too (may leave a gap)
            r = np.where(narrow < 1.0, r * narrow, r)
        A.append(pts[:-1]), B.append(pts[1:]), RA.append(r[:-1]), RB.append(r[1:])

    params: dict[str, Any] = {}
    sten_seg = None
    if lesion == "stenosis":
        cands = [k for k in radii if SEGMENTS[k]["base"] in STENOSIS_SITES]
        sten_seg = cands[int(lrng.integers(len(cands)))]
        params = {"lesion": "stenosis", "segment": sten_seg, "s": float(lrng.uniform(*STENOSIS_SEVERITY))}

    n_branches = 0
    lo_lim = 1.0
    for k, r in radii.items():
        sg = SEGMENTS[k]
        pts = _bezier(nodes[sg["a"]], ctrls[k], nodes[sg["b"]])
        narrow = None
        if k == sten_seg:
            from .pathology import stenosis_profile

            t = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
            length = float(t[-1])
            w = min(float(lrng.uniform(1.0, 2.0)) * r, length / 6.0)
            t0 = float(lrng.uniform(0.3, 0.7)) * length
            narrow = stenosis_profile(t, 1.0, params["s"], t0, w)
            params.update(t0=t0, w=w, radius=r, length=length)
        add(pts, r, r * sg["taper"], narrow)
        if sg["base"] not in _BRANCHING:
            continue
        nb = int(rng.integers(SIDE_BRANCHES[0], SIDE_BRANCHES[1] + 1))
        sign0 = float(rng.choice([-1.0, 1.0]))
        m = len(pts) - 1
        for j in range(nb):
            # several branches of one vessel: disjoint stretches of its distal half, alternating sides
            lo_t = 0.45 + 0.4 * j / nb
            hi_t = 0.45 + 0.4 * (j + 1) / nb
            i = int(rng.integers(int(lo_t * m), max(int(lo_t * m) + 1, int(hi_t * m))))
            sgn = sign0 if j % 2 == 0 else -sign0
            x0 = pts[i]
            tan = pts[min(i + 1, len(pts) - 1)] - pts[max(i - 1, 0)]
            tan /= np.linalg.norm(tan)
            sx = _SIDES[sg["side"]]
            up = np.array([0.0, 0.0, 1.0]) - tan[2] * tan  # "up", perpendicular to the vessel
            up /= np.linalg.norm(up)
            side_dir = np.cross(tan, up)  # the third direction of the local frame
            if sg["base"] == "A2":  # away from the midline (the other A2), tilted up or down
                out = side_dir if side_dir[0] * sx > 0 else -side_dir
                d = out + sgn * float(rng.uniform(0.3, 0.8)) * up
            else:  # MCA, P2: up or down, tilted sideways
                d = sgn * up + float(rng.uniform(-0.4, 0.4)) * side_dir
            d = d / np.linalg.norm(d) + 0.35 * tan  # leaning distally
            d /= np.linalg.norm(d)
            rb = max(SIDE_BRANCH_RADIUS * r * (1.0 - 0.2 * i / m), 0.5)
            length = float(rng.uniform(*SIDE_BRANCH_LENGTH)) * G
            # shorten so that the branch stays inside the box
            room = lo_lim + max(rb, _DRAW_MIN_RADIUS)
            with np.errstate(divide="ignore", invalid="ignore"):
                lim = np.where(d > 0, (sc - room - x0) / d, np.where(d < 0, (room - x0) / d, np.inf))
            length = min(length, float(np.min(lim)))
            if length < 3.0:
                continue
            x1 = x0 + length * d
            perp = rng.normal(size=3)
            perp -= np.dot(perp, d) * d
            cb = 0.5 * (x0 + x1) + 0.12 * length * perp / max(np.linalg.norm(perp), 1e-9)
            add(_bezier(x0, cb, x1), rb, 0.8 * rb)
            n_branches += 1
    sac = None
    if lesion == "aneurysm":
        from .pathology import _random_rotation, ellipsoid_mask

        site = ANEURYSM_SITES[int(lrng.integers(len(ANEURYSM_SITES)))]
        node = site if site in nodes else f"{site}_{lrng.choice(['L', 'R'])}"
        touching = [radii[k] for k in radii if node in (SEGMENTS[k]["a"], SEGMENTS[k]["b"])]
        rp = max(touching) if touching else max(radii.values())
        k_ = float(lrng.uniform(*ANEURYSM_K))
        R = min(k_ * rp, ANEURYSM_MAX_FRAC * G)
        out = nodes[node] - _CENTRE * sc
        out = out / max(np.linalg.norm(out), 1e-9) + lrng.normal(0.0, 0.35, 3)
        out /= np.linalg.norm(out)
        centre = np.clip(nodes[node] + out * (R + 0.5 * rp), R + 1.0, sc - R - 1.0)
        axes = R * np.r_[1.0, lrng.uniform(0.75, 1.25, 2)]
        sac = ellipsoid_mask(grid, centre, axes, _random_rotation(rng))
        neck = 0.6 * R
        add(np.stack([nodes[node], centre]), min(neck, rp), neck)
        params = {"lesion": "aneurysm", "site": node, "parent_radius": rp, "k": k_, "R": R,
                  "centre": centre.tolist(), "axes": axes.tolist()}
    vol = rasterize_capsules(grid, np.concatenate(A), np.concatenate(B), np.concatenate(RA),
                             np.concatenate(RB))[0]
    if sac is not None:
        vol |= sac
    return vol, radii, n_branches, params


def generate_cow(label: int, grid: int = 48, seed: int = 0, side: str | None = None, *,
                 max_attempts: int = 20) -> CowSample:
    """One CoW map of class ``label`` (index into :data:`CLASSES`).

    ``side``: affected side of a unilateral variant (default: drawn at random); all randomness comes from
    ``np.random.default_rng(seed)``.  Draws are repeated (at most ``max_attempts``) until the map's Betti numbers
    ``(b0, b1)`` equal the class graph's ``(components, cycle rank)``.
    """
    grid = check_grid(grid)
    class_graph(label, side)  # validates label and side
    label = int(label)
    rng = np.random.default_rng(int(seed))
    unilateral = label in (2, 3, 5, 6, 7)
    drawn_side = str(rng.choice(["L", "R"]))
    if side is None:
        side = drawn_side
    status = class_graph(label, side)
    present = [k for k, v in status.items() if v != "absent"]
    want = graph_topology(present)
    ok = False
    for attempt in range(1, max(1, int(max_attempts)) + 1):
        vol, radii, nb, _ = _draw(grid, status, rng)
        b0, b1, _ = map_topology(vol)
        if (b0, b1) == want:
            ok = True
            break
    return CowSample(
        volume=vol, label=label, class_name=CLASSES[label], segments=radii, status=status,
        side=side if unilateral else None, seed=int(seed),
        graph={k: (SEGMENTS[k]["a"], SEGMENTS[k]["b"]) for k in present},
        n_side_branches=nb, attempts=attempt, topology_ok=ok,
    )


def default_class_sizes(n: int, minimum: int = 1) -> list[int]:
    """Class sizes for ``n`` maps: ``[26, 15, 14, 15, 14, 14, 14, 14]`` at ``n = 126`` (our choice), otherwise
    proportional to those (largest remainders) with every class at least ``minimum`` (e.g. the number of
    cross-validation folds)."""
    n, minimum = int(n), int(minimum)
    k = len(CLASSES)
    if n == sum(DEFAULT_SIZES_126) and min(DEFAULT_SIZES_126) >= minimum:
        return list(DEFAULT_SIZES_126)
    if n < k * minimum:
        raise ValueError(f"n must be at least {k * minimum} ({minimum} per class for {k} classes), got {n}")
    w = np.array(DEFAULT_SIZES_126, dtype=np.float64)
    share = (n - k * minimum) * w / w.sum()  # `minimum` per class first, the rest proportional
    base = np.floor(share).astype(np.int64)
    rest = n - k * minimum - int(base.sum())
    order = np.lexsort((np.arange(k), -(share - base)))  # largest remainders, ties to the lower class
    base[order[:rest]] += 1
    sizes = (base + minimum).tolist()
    return [int(v) for v in sizes]


def _class_sizes(n: int, class_sizes: Sequence[int] | Mapping[str, int] | None) -> list[int]:
    return default_class_sizes(n) if class_sizes is None else resolve_class_sizes(n, class_sizes, CLASSES)


def generate_cow_set(n: int = 126, grid: int = 48, seed: int = 0,
                     class_sizes: Sequence[int] | Mapping[str, int] | None = None) -> list[CowSample]:
    """``n`` CoW maps over :data:`CLASSES`, in a seeded random order of the classes.

    ``class_sizes``: counts per class (sequence in :data:`CLASSES` order or ``{class_name: count}``; default
    :func:`default_class_sizes`).  Item ``i`` uses child ``i`` of ``np.random.SeedSequence(seed).spawn(n + 1)``
    (its first 63-bit state word is the sample's ``seed``); child ``n`` shuffles the labels.  Deterministic.
    """
    return generate_labelled(n, grid, seed, lambda k: _class_sizes(k, class_sizes), CLASSES, generate_cow,
                             "circle-of-Willis maps")


def generate_lesion(class_name: str, grid: int = 48, seed: int = 0):
    """One map of the INSTED stand-in: a complete circle of Willis (random layout, radii and side branches as in
    :func:`generate_cow`, one draw, no topology retry, the same procedure for every class) that is healthy, carries
    a stenosis (radius x (1 - s exp(-(t - t0)^2 / 2w^2)) along one large artery, s ~ U(0.3, 0.9), w ~ U(1, 2) x the
    radius, t0 in the middle 40 % of the segment) or a saccular aneurysm (an ellipsoid of semi-axes R (1, a, b),
    R = k x the largest radius at the site, k ~ U(1.5, 4), joined by a neck, pointing away from the ring's
    centre).  Returns a :class:`companion.data.pathology.PathologySample`."""
    from .pathology import PathologySample

    if class_name not in LESION_CLASSES:
        raise ValueError(f"unknown class {class_name!r}; classes: {', '.join(LESION_CLASSES)}")
    grid = check_grid(grid)
    rng, lrng = np.random.default_rng(int(seed)), np.random.default_rng([int(seed), 1])
    vol, radii, nb, params = _draw(grid, class_graph(0), rng, None if class_name == "healthy" else class_name, lrng)
    return PathologySample(volume=vol, label=LESION_CLASSES.index(class_name), class_name=class_name,
                           parameters={**params, "side_branches": nb}, seed=int(seed))


def generate_lesion_set(n: int, grid: int = 48, seed: int = 0,
                        class_sizes: Sequence[int] | Mapping[str, int] | None = None) -> list:
    """``n`` maps of the INSTED stand-in over :data:`LESION_CLASSES` (balanced by default), seeded like
    :func:`generate_cow_set`."""
    from .pathology import default_class_sizes as balanced

    sizes = (lambda k: balanced(k) if class_sizes is None else resolve_class_sizes(k, class_sizes, LESION_CLASSES))
    return generate_labelled(n, grid, seed, sizes, LESION_CLASSES,
                             lambda k, g, sd: generate_lesion(LESION_CLASSES[k], g, sd), "lesion maps")
