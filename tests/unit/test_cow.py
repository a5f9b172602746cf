"""Tests of the circle-of-Willis stand-in (companion.data.cow)."""
from __future__ import annotations

import functools

import cc3d
import numpy as np
import pytest
from skimage.measure import euler_number

from companion.data import cow as C

ALL = set(C.SEGMENTS)
#: what each class removes / thins / enlarges, written out independently of class_graph
EXPECTED = {
    0: ({}, (1, 1)),
    1: ({"Acom": "absent"}, (1, 0)),
    2: ({"A1_{s}": "absent"}, (1, 0)),
    3: ({"Pcom_{s}": "absent"}, (1, 0)),
    4: ({"Pcom_L": "absent", "Pcom_R": "absent"}, (2, 0)),
    5: ({"P1_{s}": "absent", "Pcom_{s}": "enlarged"}, (1, 0)),
    6: ({"A1_{s}": "hypoplastic"}, (1, 1)),
    7: ({"P1_{s}": "hypoplastic", "Pcom_{s}": "enlarged"}, (1, 1)),
}


@functools.lru_cache(maxsize=None)
def sample(label: int, grid: int, seed: int) -> C.CowSample:
    return C.generate_cow(label, grid, seed)


def betti01(vol: np.ndarray) -> tuple[int, int]:
    """(b0, b1) with 26-connected foreground / 6-connected background (skimage + cc3d, independent of the module)."""
    padded = np.pad(vol, 1)
    chi = int(euler_number(padded, connectivity=3))
    b0 = int(cc3d.connected_components(padded, connectivity=26, return_N=True)[1])
    b2 = int(cc3d.connected_components(~padded, connectivity=6, return_N=True)[1]) - 1
    return b0, b0 + b2 - chi


def test_template_has_the_named_segments():
    names = {"BA", "Acom"} | {f"{b}_{s}" for b in ("P1", "P2", "Pcom", "ICA", "MCA", "A1", "A2") for s in "LR"}
    assert ALL == names
    # relative calibres: ICA > BA > MCA > P1 = P2 = A1 = A2 > Pcom = Acom
    rf = {k: v["radius_frac"] for k, v in C.SEGMENTS.items()}
    assert rf["ICA_L"] > rf["BA"] > rf["MCA_L"] > rf["A1_L"] == rf["P1_L"] == rf["P2_L"] == rf["A2_L"] > rf["Pcom_L"]
    assert rf["Pcom_L"] == rf["Acom"]
    # the ring is a closed chain of segments
    C_, loops = C.graph_topology(list(C.RING))
    assert (C_, loops) == (1, 1)


@pytest.mark.parametrize("label", range(8))
@pytest.mark.parametrize("side", ["L", "R"])
def test_class_graph_matches_definition(label, side):
    st = C.class_graph(label, side)
    changes = {k.format(s=side): v for k, v in EXPECTED[label][0].items()}
    assert {k: v for k, v in st.items() if v != "normal"} == changes
    present = [k for k, v in st.items() if v != "absent"]
    comps, rank = C.graph_topology(present)
    assert (comps, rank) == EXPECTED[label][1]
    assert (rank == 1) == (label in (0, 6, 7))  # the ring is closed only for 0, 6, 7
    assert all(r in present for r in C.RING) == (label in (0, 6, 7))


@pytest.mark.parametrize("label", range(8))
def test_sample_graph_and_map_topology_agree(label):
    for seed in (0, 1):
        s = sample(label, 48, seed)
        assert s.class_name == C.CLASSES[label] and s.label == label
        assert set(s.segments) == set(s.graph) == {k for k, v in s.status.items() if v != "absent"}
        assert s.status == C.class_graph(label, s.side)
        assert (s.side is None) == (label in (0, 1, 4))
        assert s.expected_topology == EXPECTED[label][1]
        assert s.topology_ok
        assert betti01(s.volume) == EXPECTED[label][1]  # e.g. complete: one component, one loop


def test_map_topology_helper_matches_skimage():
    s = sample(0, 48, 0)
    assert C.map_topology(s.volume)[:2] == betti01(s.volume)


def test_hypoplastic_and_enlarged_radii():
    g = 48
    for seed in (0, 1, 2):
        s = sample(6, g, seed)
        other = "R" if s.side == "L" else "L"
        hypo = s.segments[f"A1_{s.side}"]
        assert hypo < s.segments[f"A1_{other}"]
        assert hypo <= 0.5 * 1.15 * C.SEGMENTS["A1_L"]["radius_frac"] * g
        s = sample(7, g, seed)
        other = "R" if s.side == "L" else "L"
        assert s.segments[f"P1_{s.side}"] < s.segments[f"P1_{other}"]
        assert s.segments[f"Pcom_{s.side}"] > s.segments[f"Pcom_{other}"]  # fetal-type Pcom at P1 calibre
        s = sample(5, g, seed)
        other = "R" if s.side == "L" else "L"
        assert f"P1_{s.side}" not in s.segments
        assert s.segments[f"Pcom_{s.side}"] == pytest.approx(s.segments[f"P1_{other}"], rel=0.36)


def test_maps_vary_and_are_deterministic():
    a = C.generate_cow_set(8, 32, seed=4)
    b = C.generate_cow_set(8, 32, seed=4)
    assert [s.label for s in a] == [s.label for s in b] and sorted(s.label for s in a) == list(range(8))
    assert all(np.array_equal(x.volume, y.volume) and x.segments == y.segments for x, y in zip(a, b))
    assert all(x.volume.dtype == bool and x.volume.shape == (32,) * 3 for x in a)
    x, y = sample(0, 48, 0), sample(0, 48, 1)
    inter = np.count_nonzero(x.volume & y.volume)
    assert inter < 0.8 * min(x.volume.sum(), y.volume.sum())  # jittered, not template copies
    sides = {sample(3, 48, seed).side for seed in range(8)}
    assert sides == {"L", "R"}
    assert C.generate_cow(3, 32, 0, side="R").side == "R"


def test_class_sizes():
    assert C.default_class_sizes(126) == [26, 15, 14, 15, 14, 14, 14, 14]
    assert C.default_class_sizes(8) == [1] * 8
    for n in (9, 20, 60, 160, 252):
        sizes = C.default_class_sizes(n)
        assert sum(sizes) == n and min(sizes) >= 1 and sizes[0] == max(sizes)
    assert C.default_class_sizes(252) == [52, 30, 28, 30, 28, 28, 28, 28]
    s = C.generate_cow_set(9, 32, seed=0, class_sizes={"complete": 2, "acom_absent": 7})
    assert sorted(x.label for x in s) == [0, 0] + [1] * 7


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 7}, "at least the number of classes"),
    ({"n": 8, "grid": 16}, r"\[32, 512\]"),
    ({"n": 8, "grid": 600}, r"\[32, 512\]"),
    ({"n": 8, "class_sizes": {"hypoplastic_acom": 8}}, "unknown class"),
    ({"n": 8, "class_sizes": [1] * 7}, "needs 8 entries"),
    ({"n": 8, "class_sizes": [2] * 8}, "sum to 16"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        C.generate_cow_set(**kwargs)


def test_bad_label_and_side():
    with pytest.raises(ValueError, match="label"):
        C.generate_cow(8, 32, 0)
    with pytest.raises(ValueError, match="side"):
        C.generate_cow(2, 32, 0, side="left")


def test_class_sizes_keep_a_minimum_per_class_for_cross_validation():
    from companion.data.cow import default_class_sizes

    assert default_class_sizes(24, minimum=3) == [3] * 8
    sizes = default_class_sizes(100, minimum=3)
    assert sum(sizes) == 100 and min(sizes) >= 3 and sizes[0] == max(sizes)
    with pytest.raises(ValueError, match="at least 24"):
        default_class_sizes(20, minimum=3)


# ----------------------------------------------------------------------------------------------- lesions (INSTED)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_stenosis_only_narrows_and_an_aneurysm_only_adds_a_blob(seed):
    """Same seed, same anatomy: the lesion is the only difference from the healthy map."""
    import cc3d

    from companion.data.cow import generate_lesion

    h, st, an = (generate_lesion(c, 48, seed) for c in ("healthy", "stenosis", "aneurysm"))
    assert (h.label, st.label, an.label) == (0, 1, 2)
    removed, added = h.volume & ~st.volume, st.volume & ~h.volume
    assert added.sum() == 0 and removed.sum() > 0  # a stenosis removes voxels and adds none
    p = st.parameters
    assert p["segment"].split("_")[0] in ("ICA", "MCA", "BA", "A1", "P1") and 0.3 <= p["s"] <= 0.9
    blob = an.volume & ~h.volume
    assert (h.volume & ~an.volume).sum() == 0 and blob.sum() > 0  # an aneurysm only adds
    assert cc3d.connected_components(blob, connectivity=26).max() >= 1
    R = an.parameters["R"]
    assert blob.sum() <= 2.5 * (4 / 3) * np.pi * R ** 3 * 1.25 ** 2 + 200  # about the sac (and its neck), no more


def test_lesion_set_is_balanced_deterministic_and_checked():
    from companion.data.cow import LESION_CLASSES, generate_lesion, generate_lesion_set

    a, b = generate_lesion_set(9, 32, 4), generate_lesion_set(9, 32, 4)
    assert [s.label for s in a] == [s.label for s in b] and all(np.array_equal(x.volume, y.volume) for x, y in zip(a, b))
    assert np.bincount([s.label for s in a]).tolist() == [3, 3, 3]
    assert LESION_CLASSES == ("healthy", "stenosis", "aneurysm")
    with pytest.raises(ValueError, match="unknown class"):
        generate_lesion("dissection", 48, 0)
