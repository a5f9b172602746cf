"""Tests of the INSTED stand-in: cerebral-like trees with a stenosis or an aneurysm (companion.data.pathology)."""
from __future__ import annotations

import functools

import cc3d
import numpy as np
import pytest

from companion.data import pathology as P
from companion.data.vessels import VesselTree

SEEDS = (0, 1, 2, 3)


@functools.lru_cache(maxsize=None)
def tree(grid: int, seed: int) -> VesselTree:
    return P.pathology_tree(grid, seed)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def voxel_distance(vol: np.ndarray, point: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.argwhere(vol) - point[None, :], axis=1)


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_healthy_redraw_matches_tree_volume(seed):
    t = tree(48, seed)
    assert np.array_equal(P.redraw(t), t.volume)  # measured: voxel-identical
    # the subdivided path (used by the stenosis) with an unchanged radius gives the same map
    sub = P.redraw(t, lambda eid, frac, base: base)
    assert dice(sub, t.volume) > 0.999
    # and a healthy sample is exactly that redraw
    s = P.generate_pathology("healthy", 48, seed)
    assert s.label == 0 and s.class_name == "healthy" and np.array_equal(s.volume, t.volume)


def test_segments_partition_the_edges():
    t = tree(48, 0)
    segs = P.tree_segments(t)
    ids = np.concatenate([s.edge_ids for s in segs])
    assert np.array_equal(ids, np.arange(len(t.edges)))
    for s in segs:
        e = t.edges[s.edge_ids]
        assert np.array_equal(e[1:, 0], e[:-1, 1])  # consecutive
        assert np.allclose(t.segment_radii()[s.edge_ids], s.radius)
    assert sum(s.is_root for s in segs) == 3  # the cerebral preset's three roots


def test_tree_overrides_give_thick_parents():
    t = tree(48, 0)
    assert 2.0 <= t.edge_radius.max() <= 2.5  # ~2-2.5 voxels at grid 48 (our choice, TREE_OVERRIDES)


@pytest.mark.parametrize("seed", SEEDS)
def test_stenosis_narrows_the_segment_locally(seed):
    t = tree(48, seed)
    healthy = P.redraw(t)
    vol, p = P.insert_stenosis(t, np.random.default_rng(seed))
    seg = P.tree_segments(t)[p["segment"]]
    # parameters in their stated ranges, on a thick non-root branch, t0 away from the ends
    assert 0.3 <= p["s"] <= 0.9
    assert seg.kind == 0 and not seg.is_root and seg.radius >= P.min_pathology_radius(48)
    assert p["w"] <= 2.0 * seg.radius + 1e-9 and 2.5 * p["w"] - 1e-9 <= p["t0"] <= seg.length - 2.5 * p["w"] + 1e-9
    # the radius profile reaches R * (1 - s) at t0 and nowhere lower
    tt = np.linspace(0.0, seg.length, 2001)
    prof = P.stenosis_profile(tt, seg.radius, p["s"], p["t0"], p["w"])
    assert prof.min() == pytest.approx(seg.radius * (1 - p["s"]), rel=1e-4)
    assert abs(tt[np.argmin(prof)] - p["t0"]) <= seg.length / 2000 + 1e-9
    assert p["min_radius"] == pytest.approx(seg.radius * (1 - p["s"]))
    # voxels: the narrowing only removes voxels, some of them, and only around t0
    assert not np.any(vol & ~healthy)
    removed = healthy & ~vol
    assert removed.sum() > 0
    assert voxel_distance(removed, p["point"]).max() <= 4.0 * p["w"] + seg.radius + 2.0
    ball = lambda v: int((voxel_distance(v, p["point"]) <= 2.0 * p["w"] + seg.radius).sum())  # noqa: E731
    assert ball(vol) < ball(healthy)


@pytest.mark.parametrize("seed", SEEDS)
def test_aneurysm_adds_one_blob_at_a_bifurcation(seed):
    t = tree(48, seed)
    healthy = P.redraw(t)
    vol, p = P.insert_aneurysm(t, np.random.default_rng(seed))
    assert 1.5 <= p["k"] <= 4.0 and p["R"] == pytest.approx(p["k"] * p["parent_radius"])
    assert np.all((p["axes"] / p["R"] >= 0.75 - 1e-9) & (p["axes"] / p["R"] <= 1.25 + 1e-9))
    assert p["junction_node"] == t.bifurcations[p["bifurcation"], 0]
    assert np.allclose(p["rotation"].T @ p["rotation"], np.eye(3))
    assert not np.any(healthy & ~vol)  # union with the healthy map
    added = vol & ~healthy
    n_added = int(added.sum())
    assert n_added > 0
    assert cc3d.connected_components(added, connectivity=26, return_N=True)[1] == 1
    # near the bifurcation: beyond the apex, within the sac's reach
    reach = np.linalg.norm(p["centre"] - p["junction"]) + p["axes"].max() + 1.0
    assert voxel_distance(added, p["junction"]).max() <= reach
    assert np.linalg.norm(p["centre"] - p["junction"]) > p["parent_radius"] + p["axes"].min() * 0.5
    # volume within a factor 2 of the ellipsoid's
    v_ell = 4.0 / 3.0 * np.pi * np.prod(p["axes"])
    assert 0.5 * v_ell <= n_added <= 2.0 * v_ell
    # the sac stays inside the grid with a margin
    assert np.all(p["centre"] - p["axes"].max() >= P.MARGIN_VOX - 1e-9)
    assert np.all(p["centre"] + p["axes"].max() <= 47 - P.MARGIN_VOX + 1e-9)


def test_set_is_deterministic_labelled_and_varied():
    a = P.generate_pathology_set(6, 32, seed=5)
    b = P.generate_pathology_set(6, 32, seed=5)
    assert [s.label for s in a] == [s.label for s in b]
    assert all(np.array_equal(x.volume, y.volume) and x.seed == y.seed for x, y in zip(a, b))
    assert all(x.volume.dtype == bool and x.volume.shape == (32, 32, 32) for x in a)
    assert sorted(s.label for s in a) == [0, 0, 1, 1, 2, 2]
    assert all(s.class_name == P.CLASSES[s.label] for s in a)
    assert len({s.seed for s in a}) == 6  # every sample grows its own tree
    assert all(s.parameters["tree_seed"] == s.seed for s in a)
    c = P.generate_pathology_set(6, 32, seed=6)
    assert any(not np.array_equal(x.volume, y.volume) for x, y in zip(a, c))


def test_class_sizes():
    assert P.default_class_sizes(160) == [54, 53, 53]
    assert P.default_class_sizes(3) == [1, 1, 1]
    assert sum(P.default_class_sizes(161)) == 161
    s = P.generate_pathology_set(4, 32, seed=0, class_sizes={"healthy": 1, "aneurysm": 3})
    assert sorted(x.label for x in s) == [0, 2, 2, 2]
    s = P.generate_pathology_set(3, 32, seed=0, class_sizes=[0, 3, 0])
    assert [x.class_name for x in s] == ["stenosis"] * 3


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 2}, "at least the number of classes"),
    ({"n": 6, "grid": 31}, r"\[32, 512\]"),
    ({"n": 6, "grid": 513}, r"\[32, 512\]"),
    ({"n": 6, "grid": 48.0}, "integer"),
    ({"n": 6, "class_sizes": {"thrombus": 6}}, "unknown class"),
    ({"n": 6, "class_sizes": [2, 2, 1]}, "sum to 5"),
    ({"n": 6, "class_sizes": [3, 3]}, "needs 3 entries"),
    ({"n": 6, "class_sizes": [7, -1, 0]}, "non-negative"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        P.generate_pathology_set(**kwargs)


def test_unknown_class():
    with pytest.raises(ValueError, match="valid classes: healthy, stenosis, aneurysm"):
        P.generate_pathology("thrombus", 32, 0)
