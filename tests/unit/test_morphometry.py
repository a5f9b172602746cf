"""companion.morphometry on shapes with known answers: a straight tube, a Y with Murray radii, a torus."""
import math

import numpy as np
import pytest

from companion import morphometry as mm
from companion.data.vessels import rasterize_capsules


def tube(radius=5.0, x0=8.0, x1=56.0, grid=64):
    """A straight capsule along x, centred on voxel centres (an even-width tube can vanish under thinning)."""
    c = grid // 2
    return rasterize_capsules(grid, np.array([[x0, c, c]]), np.array([[x1, c, c]]), np.array([radius]),
                              np.array([radius]))[0]


def y_shape(r0=8.0, exponent=3.0, grid=128, angle_deg=37.5, length=70.0):
    """A parent tube along x splitting symmetrically into two daughters with r0^x = 2 r1^x."""
    r1 = r0 / 2 ** (1 / exponent)
    c = np.array([40.0, grid / 2, grid / 2])
    a = np.radians(angle_deg)
    ends = [c + length * np.array([np.cos(a), s * np.sin(a), 0.0]) for s in (1, -1)]
    starts = np.array([[4.0, grid / 2, grid / 2], c, c])
    return rasterize_capsules(grid, starts, np.array([c, *ends]), np.array([r0, r1, r1]),
                              np.array([r0, r1, r1]))[0]


def test_straight_tube_radius_length_tortuosity_and_no_bifurcation():
    r = mm.measure(tube(5.0), keep_graph=True)
    assert r.graph.n_segments == 1 and r.bifurcations == 0 and r.betti == (1, 0, 0)
    assert abs(np.median(r.radii) - 5.0) <= 0.5, "distance transform on the axis reads the radius"
    assert abs(r.segment_length[0] - 48.0) <= 2.0, "the skeleton spans the tube's axis"
    assert r.tortuosity.size == 1 and abs(r.tortuosity[0] - 1.0) < 0.01
    assert r.bifurcations_per_length == 0 and r.murray.size == 0


def test_spacing_scales_lengths_and_radii():
    iso, half = mm.measure(tube(4.0)), mm.measure(tube(4.0), (0.5, 0.5, 0.5))
    assert math.isclose(half.segment_length[0], iso.segment_length[0] / 2)
    assert math.isclose(np.median(half.radii), np.median(iso.radii) / 2)
    stretched = mm.measure(tube(4.0), (2.0, 1.0, 1.0))  # voxels twice as long along the tube's axis
    assert math.isclose(stretched.segment_length[0], 2 * iso.segment_length[0])
    assert math.isclose(np.median(stretched.radii), np.median(iso.radii)), "the cross-section is unchanged"


@pytest.mark.parametrize("exponent", [3.0, 2.0])
def test_y_with_murray_radii_gives_the_exponent(exponent):
    r = mm.measure(y_shape(exponent=exponent), keep_graph=True)
    assert r.bifurcations == 1 and r.graph.n_segments == 3 and r.betti == (1, 0, 0)
    assert r.murray.size == 1 and abs(r.murray[0] - exponent) < 0.35, r.murray
    assert r.bifurcations_per_length == pytest.approx(1 / r.segment_length.sum())


def test_murray_exponent_roots():
    x = mm.murray_exponent([2 ** (1 / 3), 2 ** 0.5, 1.0, 1.0], [1.0, 1.0, 1.0, 0.5], [1.0, 1.0, 0.5, 0.5])
    assert x[0] == pytest.approx(3.0, abs=1e-9) and x[1] == pytest.approx(2.0, abs=1e-9)
    assert np.isnan(x[2]), "a daughter as thick as the parent: no root"
    assert x[3] == pytest.approx(1.0, abs=1e-9)


def test_torus_has_one_loop_and_no_bifurcation():
    from companion.vessel_data import torus

    r = mm.measure(torus(), keep_graph=True)
    assert r.betti == (1, 1, 0) and r.bifurcations == 0
    assert r.graph.n_segments == 1 and r.tortuosity.size == 0, "a closed loop has no chord"
    assert abs(r.segment_length[0] - 2 * math.pi * 14.0) < 0.1 * 2 * math.pi * 14.0


def test_spurs_are_pruned():
    """A bump on a tube makes the thinning grow a short spur; pruning removes it and merges the tube back into one
    segment."""
    vol = tube(4.0)
    vol[30:33, 36:38, 30:34] = True  # a small bump on the surface
    r = mm.measure(vol, keep_graph=True)
    assert r.bifurcations == 0 and r.graph.n_segments == 1


def test_empty_and_occupancy_of_bounding_box():
    assert mm.measure(np.zeros((8, 8, 8), bool)).betti == (0, 0, 0)
    box = np.zeros((20, 20, 20), bool)
    box[5:10, 5:10, 5:10] = True
    assert mm.measure(box).occupancy_pct == 100.0, "occupancy counts the bounding box, not the grid"


def test_scaled_matches_measuring_at_the_other_spacing():
    vol = y_shape(r0=6.0, grid=96)
    mm_, vox = mm.measure(vol, (0.5, 0.5, 0.5)), mm.measure(vol)
    again = mm_.scaled(2.0)
    assert np.allclose(again.radii, vox.radii) and np.allclose(again.segment_length, vox.segment_length)
    assert again.bifurcations_per_length == pytest.approx(vox.bifurcations_per_length)
    assert np.allclose(again.tortuosity, vox.tortuosity) and np.allclose(again.murray, vox.murray)
