"""Tests of the procedural vessel-tree generator (companion.data.vessels)."""
from __future__ import annotations

import dataclasses
import functools
import math
import time

import cc3d
import numpy as np
import pytest
from skimage.measure import euler_number

from companion.data import vessels as V
from companion.data.vessels import KINDS, PRESETS, TreePreset, VesselTree, generate_dataset, generate_tree

SEEDS = (0, 1, 2)
GRIDS = (64, 96)


@functools.lru_cache(maxsize=None)
def tree(kind: str, grid: int, seed: int, loops: bool | None = None) -> VesselTree:
    return generate_tree(kind, grid, seed, loops=loops)


def betti(vol: np.ndarray) -> tuple[int, int, int]:
    """(b0, b1, b2) with 26-connected foreground / 6-connected background, via the Euler characteristic."""
    padded = np.pad(vol, 1)
    chi = int(euler_number(padded, connectivity=3))
    b0 = int(cc3d.connected_components(padded, connectivity=26, return_N=True)[1])
    n_bg = int(cc3d.connected_components(~padded, connectivity=6, return_N=True)[1])
    b2 = n_bg - 1  # the background component that touches the padding is the outside
    return b0, b0 + b2 - chi, b2


def segment_chord(t: VesselTree, first_node: int, junction: int) -> np.ndarray:
    """Chord (end - junction) of the segment whose first owned node is ``first_node``: its nodes are consecutive."""
    nxt: dict[int, list[int]] = {}
    for p, c in t.edges:
        nxt.setdefault(int(p), []).append(int(c))
    c = first_node
    while c + 1 in nxt.get(c, ()):
        c += 1
    return t.nodes[c] - t.nodes[junction]


# --- presets and structure --------------------------------------------------------------------------------------


def test_presets_are_frozen_dataclasses():
    assert KINDS == tuple(PRESETS) == ("airway", "cerebral", "pulmonary")
    for name, p in PRESETS.items():
        assert isinstance(p, TreePreset) and p.name == name and p.description
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.tortuosity = 1.0  # type: ignore[misc]
    assert not PRESETS["airway"].loops and not PRESETS["pulmonary"].loops and PRESETS["cerebral"].loops
    # the airway has a single root entering from the top, the cerebral preset several from the bottom
    assert len(PRESETS["airway"].roots) == 1 and PRESETS["airway"].roots[0][0][2] == 1.0
    assert len(PRESETS["cerebral"].roots) >= 2 and all(r[0][2] == 0.0 for r in PRESETS["cerebral"].roots)


@pytest.mark.parametrize("kind", KINDS)
def test_arrays_types_and_consistency(kind):
    t = tree(kind, 64, 0)
    g = 64
    assert t.kind == kind and t.grid == g and t.seed == 0
    assert t.volume.shape == t.radius.shape == t.label.shape == (g, g, g)
    assert t.volume.dtype == bool and t.radius.dtype == np.float32 and t.label.dtype == np.int16
    assert t.nodes.dtype == np.float64 and t.nodes.shape[1] == 3 and t.node_radius.shape == (len(t.nodes),)
    assert t.edges.dtype == np.int64 and t.edges.shape[1] == 2 and t.edges.min() >= 0 and t.edges.max() < len(t.nodes)
    assert t.edge_generation.dtype == np.int64 and t.edge_generation.shape == (len(t.edges),)
    assert t.edge_generation.min() >= 1 and t.edge_generation.max() <= PRESETS[kind].max_generation
    assert t.bifurcations.dtype == np.int64 and t.bifurcations.shape[1] == 3 and len(t.bifurcations) >= 5
    # nodes lie inside the grid, radii are at least the minimum radius
    assert t.nodes.min() >= 0 and t.nodes.max() <= g - 1
    assert t.node_radius.min() >= PRESETS[kind].min_radius_vox - 1e-12
    # radius and label maps are exactly zero outside the vessels and positive inside
    assert np.array_equal(t.volume, t.radius > 0)
    assert np.array_equal(t.volume, t.label > 0)
    assert t.label.max() <= PRESETS[kind].max_generation
    # the thick root has generation 1 and the largest radius
    assert t.radius.max() == pytest.approx(t.node_radius.max(), rel=1e-6)
    # per-edge radii and the centerline length
    sr = t.segment_radii()
    assert sr.shape == (len(t.edges),) and sr.min() >= PRESETS[kind].min_radius_vox - 1e-12
    d = np.linalg.norm(t.nodes[t.edges[:, 1]] - t.nodes[t.edges[:, 0]], axis=1)
    assert t.centerline_length() == pytest.approx(d.sum()) and t.centerline_length() > g
    assert t.occupancy == pytest.approx(t.volume.mean())
    assert kind in repr(t)


# --- Murray's law and branching angles ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grid", GRIDS)
def test_murray_law_at_every_bifurcation(kind, grid):
    for seed in SEEDS:
        t = tree(kind, grid, seed)
        j, c1, c2 = t.bifurcations.T
        r0, r1, r2 = t.node_radius[j], t.node_radius[c1], t.node_radius[c2]
        np.testing.assert_allclose(r1**3 + r2**3, r0**3, rtol=1e-6)
        assert np.all(r1 >= r2) and np.all(r1 < r0)  # child 1 is the thicker one, both thinner than the parent
        assert np.all(r2 >= PRESETS[kind].min_radius_vox - 1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_branching_angles_in_range_and_larger_for_thinner_child(kind):
    p = PRESETS[kind]
    t = tree(kind, 96, 0)
    tree_parent = {int(c): int(a) for (a, c), k in zip(t.edges, t.edge_kind) if k == 0}
    gen_of = {(int(a), int(c)): int(g) for (a, c), g in zip(t.edges, t.edge_generation)}
    for j, c1, c2 in t.bifurcations:
        u = t.nodes[j] - t.nodes[tree_parent[j]]
        u /= np.linalg.norm(u)
        first = gen_of[(tree_parent[j], int(j))] == 1
        lo, hi = p.first_split_angle_deg if (first and p.first_split_angle_deg) else p.branch_angle_deg
        ang = []
        for c in (c1, c2):
            ch = segment_chord(t, int(c), int(j))
            ang.append(math.degrees(math.acos(np.clip(u @ ch / np.linalg.norm(ch), -1.0, 1.0))))
        assert lo - 1e-6 <= ang[0] <= hi + 1e-6 and lo - 1e-6 <= ang[1] <= hi + 1e-6
        assert ang[1] >= ang[0] - 1e-6  # the thinner child leaves at the larger angle


# --- determinism ------------------------------------------------------------------------------------------------------


def test_same_seed_identical_different_seed_different():
    a = generate_tree("pulmonary", 48, 7)
    b = generate_tree("pulmonary", 48, 7)
    for f in ("volume", "radius", "label", "nodes", "node_radius", "edges", "edge_generation", "bifurcations"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    c = generate_tree("pulmonary", 48, 8)
    assert not np.array_equal(a.volume, c.volume)


def test_generate_dataset_is_deterministic_and_round_robin():
    d1 = generate_dataset(4, grid=40, seed=3)
    d2 = generate_dataset(4, grid=40, seed=3)
    assert [t.kind for t in d1] == ["airway", "cerebral", "pulmonary", "airway"]
    for x, y in zip(d1, d2):
        assert x.seed == y.seed and np.array_equal(x.volume, y.volume) and np.array_equal(x.radius, y.radius)
    assert len({t.seed for t in d1}) == 4  # child seeds differ
    assert not np.array_equal(d1[0].volume, d1[3].volume)  # two airways, different seeds
    d3 = generate_dataset(2, grid=40, seed=3, kinds=("cerebral",), loops=False)
    assert [t.kind for t in d3] == ["cerebral", "cerebral"] and all(t.n_loops == 0 for t in d3)
    assert generate_dataset(0) == []


# --- topology ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grid", GRIDS)
def test_one_26_connected_component(kind, grid):
    for seed in SEEDS:
        vol = tree(kind, grid, seed).volume
        assert cc3d.connected_components(vol, connectivity=26, return_N=True)[1] == 1, (kind, grid, seed)


@pytest.mark.parametrize("kind", ["airway", "pulmonary"])
@pytest.mark.parametrize("grid", GRIDS)
def test_loop_free_presets_are_trees(kind, grid):
    for seed in SEEDS:
        t = tree(kind, grid, seed)
        assert t.n_loops == 0
        assert betti(t.volume) == (1, 0, 0), (kind, grid, seed)


@pytest.mark.parametrize("grid", GRIDS)
def test_cerebral_loops_are_counted(grid):
    for seed in SEEDS:
        t = tree("cerebral", grid, seed)
        b0, b1, b2 = betti(t.volume)
        assert (b0, b2) == (1, 0) and b1 >= 1 and b1 == t.n_loops, (grid, seed, b1, t.n_loops)


def test_loops_switch():
    # cerebral without loops: the circle of Willis stays open, the map is a tree
    assert betti(tree("cerebral", 64, 1, loops=False).volume) == (1, 0, 0)
    # an airway with anastomoses: each one adds exactly one loop
    t = tree("airway", 64, 1, loops=True)
    assert t.n_loops >= 1 and betti(t.volume) == (1, t.n_loops, 0)
    assert np.sum(t.edge_kind == 2) > 0


def test_euler_bookkeeping_matches_skimage():
    rng = np.random.default_rng(0)
    for _ in range(50):
        shape = tuple(int(n) for n in rng.integers(2, 10, size=3))
        before = rng.random(shape) < 0.3
        add = rng.random(shape) < 0.1
        chi = lambda v: int(euler_number(np.pad(v, 1), connectivity=3))  # noqa: E731
        assert V._euler26(before) == chi(before)
        assert V._euler_change(before, add) == chi(before | add) - chi(before)


# --- occupancy ----------------------------------------------------------------------------------------------------------

OCCUPANCY = {"airway": (0.005, 0.03), "cerebral": (0.004, 0.03), "pulmonary": (0.004, 0.03)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grid", GRIDS)
def test_occupancy_is_sparse_and_sane(kind, grid):
    lo, hi = OCCUPANCY[kind]
    for seed in SEEDS:
        occ = tree(kind, grid, seed).occupancy
        assert lo <= occ <= hi, (kind, grid, seed, occ)


def test_radius_scales_with_grid():
    for kind in KINDS:
        small, big = tree(kind, 64, 0), tree(kind, 96, 0)
        # the roots are the same fraction of the grid
        assert big.node_radius.max() / small.node_radius.max() == pytest.approx(96 / 64, rel=1e-6)


# --- rasteriser ---------------------------------------------------------------------------------------------------------


def test_rasterize_capsules_matches_brute_force():
    rng = np.random.default_rng(1)
    g = 24
    a = rng.uniform(2, g - 3, size=(6, 3))
    b = rng.uniform(2, g - 3, size=(6, 3))
    ra = rng.uniform(0.8, 3.0, size=6)
    rb = rng.uniform(0.8, 3.0, size=6)
    vol, val, tag = V.rasterize_capsules(g, a, b, ra, rb, value=np.arange(1, 7), tag=np.arange(1, 7))
    p = np.stack(np.meshgrid(*(np.arange(g),) * 3, indexing="ij"), axis=-1).reshape(-1, 1, 3).astype(float)
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    dist = np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)
    inside = dist <= ra + t * (rb - ra)
    assert np.array_equal(vol.ravel(), inside.any(axis=1))
    expect = np.where(inside, np.arange(1, 7), 0).max(axis=1)
    assert np.array_equal(val.ravel(), expect) and np.array_equal(tag.ravel(), expect)


# --- arguments -------------------------------------------------------------------------------------------------------------


def test_bad_arguments_name_the_valid_choices():
    with pytest.raises(ValueError, match="airway, cerebral, pulmonary"):
        generate_tree("liver")
    for g in (16, 31, 513, 1024):
        with pytest.raises(ValueError, match=r"\[32, 512\]"):
            generate_tree("airway", g)
    with pytest.raises(ValueError, match=r"\[32, 512\]"):
        generate_tree("airway", 64.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="valid fields: .*root_radius_frac"):
        generate_tree("airway", 64, root_radius=0.1)
    with pytest.raises(ValueError, match="asymmetry"):
        generate_tree("airway", 64, asymmetry=(0.5, 1.5))
    with pytest.raises(ValueError, match="airway, cerebral, pulmonary"):
        generate_dataset(2, kinds=("airway", "kidney"))
    with pytest.raises(TypeError, match="valid fields"):
        generate_dataset(2, grid=40, bogus=1)


def test_overrides_apply():
    t = generate_tree("airway", 48, 0, max_generation=3)
    assert t.edge_generation.max() <= 3 and t.label.max() <= 3
    assert t.preset is not None and t.preset.max_generation == 3 and PRESETS["airway"].max_generation != 3


# --- speed ------------------------------------------------------------------------------------------------------------------


def test_grid_256_is_fast_enough():
    t0 = time.perf_counter()
    t = generate_tree("airway", 256, 0)  # the slowest preset
    elapsed = time.perf_counter() - t0
    assert t.volume.shape == (256,) * 3 and 0.003 < t.occupancy < 0.05
    assert elapsed < 10.0, f"airway at 256^3 took {elapsed:.1f} s"
