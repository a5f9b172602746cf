"""Chapter 0's statistics: deterministic and correct on maps with known answers."""
import numpy as np

from companion import vessel_data as vd
from companion.data.vessels import generate_dataset


def test_map_statistics_on_a_torus():
    st = vd.map_statistics(vd.torus())
    assert (st["b0"], st["b1"], st["b2"]) == (1, 1, 0)
    assert st["active_voxels"] == int(vd.torus().sum()) and 0 < st["occupancy_pct"] < 100
    assert st["skeleton_voxels"] > 0


def test_tree_statistics_deterministic_and_consistent():
    trees = generate_dataset(3, grid=48, seed=4)
    a, b = vd.tree_statistics(trees), vd.tree_statistics(generate_dataset(3, grid=48, seed=4))
    assert a.to_csv() == b.to_csv()
    assert (a.b1 == a.anastomoses).all() and (a.b0 == 1).all()
    assert np.isclose(a.occupancy_pct, [100 * t.volume.mean() for t in trees]).all()
    assert vd.murray_max_error(trees) < 1e-9
    summary = vd.summary_by_kind(a)
    assert set(summary.index) == {t.kind for t in trees} and (summary["n"] == 1).all()


def test_tables_are_readable():
    stats = vd.tree_statistics(generate_dataset(6, grid=64, seed=0))
    for df in (vd.readable(stats), vd.readable(vd.summary_by_kind(stats)), vd.preset_table(),
               vd.published_statistics()):
        names = [str(c) for c in df.columns] + [str(n) for n in df.index.names]
        assert not [c for c in names if "_" in c], names
    summary = vd.readable(vd.summary_by_kind(stats))
    assert "e+" not in summary.to_csv() and summary.loc["airway", "b0 (components)"] == "1 ± 0"
    assert vd.mean_sd(2210.3, 99.2) == "2210 ± 99" and vd.mean_sd(0.79, 0.0011) == "0.7900 ± 0.0011"
    assert not vd.preset_table().map(lambda v: isinstance(v, tuple)).any().any()
    assert not vd.published_statistics()["published"].str.contains(r"\bn_", regex=True).any()
    assert vd.readable(stats).index.name == "tree" and "preset" in vd.readable(stats).columns
