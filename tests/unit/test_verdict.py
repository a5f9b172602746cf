"""The verdict rules (companion.results.verdict): each rule shown deciding true, false and undecided."""
import numpy as np
import pytest

from companion.results.verdict import (MIN_CASES, all_of, bootstrap_ci, degenerate_predictions, no_better_than,
                                       paired_verdict, property_verdict, stalled_loss, threshold_verdict)

RNG = np.random.default_rng(42)
BASE = RNG.normal(70, 8, 24)  # per-case scores of method B (e.g. Dice in %, 24 test volumes)


def test_clear_difference_holds():
    a = BASE + 5 + RNG.normal(0, 2, 24)
    v = paired_verdict(a, BASE, better="higher", names=("sparse", "dense"), metric="Dice")
    assert v.holds is True and v.reason is None
    ev = v.evidence
    assert ev["n"] == 24 and ev["ci"][0] > 0 and ev["ci"][0] < ev["effect"] < ev["ci"][1]
    assert "paired bootstrap 95 % CI" in ev["test"] and "BCa" in ev["test"] and "seed 0" in ev["test"]


def test_reversed_difference_does_not_hold():
    a = BASE - 5 + RNG.normal(0, 2, 24)
    v = paired_verdict(a, BASE, better="higher", names=("sparse", "dense"), metric="Dice")
    assert v.holds is False and v.reason.startswith("reversed:") and "below 0" in v.reason
    # the same numbers decide "lower is better" the other way (β errors)
    assert paired_verdict(a, BASE, better="lower").holds is True


def test_pure_noise_is_inconclusive():
    a = BASE + RNG.normal(0, 3, 24)  # same mean, noise only
    v = paired_verdict(a, BASE, better="higher", names=("sparse", "dense"))
    assert v.holds is None and v.reason.startswith("inconclusive:") and "spans 0" in v.reason
    lo, hi = v.evidence["ci"]
    assert lo < 0 < hi


def test_a_large_mean_difference_on_few_cases_is_not_decided_by_its_sign():
    # three cases, mean +2 points: a sign rule would say "holds"
    v = paired_verdict([72, 60, 80], [70, 58, 78], better="higher")
    assert v.holds is None and f"fewer than the {MIN_CASES}" in v.reason
    # six cases whose mean is +1.5 but one case reverses strongly: the interval spans 0
    v = paired_verdict([80, 81, 79, 82, 80, 60], [75, 76, 74, 77, 75, 76], better="higher")
    assert v.holds is None and "spans 0" in v.reason


def test_degenerate_baseline_is_never_a_win():
    a = BASE + 30
    empty = [np.zeros((8, 8, 8), bool)] * 5 + [np.ones((8, 8, 8), bool)]
    guard = degenerate_predictions(empty, "the dense VAE")
    assert guard == "the dense VAE predicts 5 empty and 1 all-foreground maps on 6 of 6 cases"
    v = paired_verdict(a, np.zeros(24), better="higher", guards=[None, guard])
    assert v.holds is None and v.reason.startswith("degenerate: the dense VAE")
    assert v.evidence["ci"][0] > 0  # the interval is still reported
    healthy = [np.pad(np.ones((2, 2, 2), bool), 3)] * 6
    assert degenerate_predictions(healthy, "x") is None
    assert degenerate_predictions(healthy[:3] + empty[:3], "x") is None  # half, not most


def test_stalled_loss_guard():
    assert "never left its starting value" in stalled_loss([0.70, 0.69, 0.69], "the dense VAE")
    assert stalled_loss([0.70, 0.30, 0.10], "the dense VAE") is None
    assert "not finite" in stalled_loss([0.7, float("nan")], "m")
    assert stalled_loss([], "m") is None


def test_every_seed_must_agree():
    a = BASE + 5 + RNG.normal(0, 2, 24)
    assert paired_verdict(a, BASE, better="higher", per_seed_effects=[5.1, 3.9]).holds is True
    v = paired_verdict(a, BASE, better="higher", per_seed_effects=[5.1, -0.4])
    assert v.holds is None and "1 of 2 seeds" in v.reason and v.evidence["per_seed_effects"] == [5.1, -0.4]


def test_bootstrap_is_seeded_and_handles_no_spread():
    a = BASE + RNG.normal(1, 2, 24)
    assert bootstrap_ci(a, BASE) == bootstrap_ci(a, BASE)
    assert bootstrap_ci([3, 3, 3], [1, 1, 1]) == (2.0, (2.0, 2.0), "no spread (all differences equal)")
    v = paired_verdict([3] * 6, [1] * 6, better="higher")
    assert v.holds is True
    with pytest.raises(ValueError, match="equal length"):
        paired_verdict([1, 2], [1], better="higher")
    with pytest.raises(ValueError, match="better"):
        paired_verdict([1, 2], [1, 2], better="more")


def test_nan_cases_dropped_in_pairs():
    a = np.r_[BASE + 5, np.nan]
    b = np.r_[BASE, 3.0]
    assert paired_verdict(a, b, better="higher").evidence["n"] == 24


def test_threshold_and_property_rules():
    v = threshold_verdict(5.9, ">=", 5, what="speed-up at 128³")
    assert v.holds is True and v.evidence["test"] == "threshold: speed-up at 128³ >= 5" and v.evidence["ci"] is None
    v = threshold_verdict(4.6, ">=", 5, what="speed-up at 128³")
    assert v.holds is False and v.reason == "speed-up at 128³ = 4.6, not >= 5"
    v = threshold_verdict([5.9, 0.8], ">", 1, what="ratio")
    assert v.holds is False and "0.8" in v.reason and "every point" in v.evidence["test"]
    assert threshold_verdict([], ">", 1, what="ratio").holds is None
    assert threshold_verdict(float("nan"), ">", 1, what="ratio").reason.startswith("not measured")
    assert property_verdict(True, test="t", failure="f").evidence["test"] == "property: t"
    assert property_verdict(False, test="t", failure="f").reason == "f"
    assert property_verdict(None, test="t", failure="not measured").holds is None


def test_all_of():
    ok, bad = threshold_verdict(1, ">", 0, what="x"), threshold_verdict(-1, ">", 0, what="y")
    assert all_of([ok, ok]).holds is True and all_of([ok, ok]).evidence["effect"] == 1.0  # one quantity, two bounds
    v = all_of([ok, bad])
    assert v.holds is False and v.reason == "y = -1, not > 0" and " and " in v.evidence["test"]
    assert all_of([ok, threshold_verdict(None, ">", 0, what="z")]).holds is None


def test_no_better_than_a_trivial_prediction_guard():
    floor = [0.08, 0.07, 0.09]
    assert "no better than the whole brain" in no_better_than([0.01, 0.02, 0.0], floor, "method A", "the whole brain")
    assert no_better_than([0.6, 0.7, 0.65], floor, "method A", "the whole brain") is None
    assert no_better_than([30.0, 31.0], [20.0, 21.0], "A", "trivial", better="lower") is not None  # distances
    assert no_better_than([10.0, 11.0], [20.0, 21.0], "A", "trivial", better="lower") is None
    v = paired_verdict([0.011, 0.012, 0.010, 0.013, 0.011], [0.005, 0.006, 0.004, 0.005, 0.006], better="higher",
                       guards=[no_better_than([0.011] * 5, [0.08] * 5, "A", "the whole brain")])
    assert v.holds is None and v.reason.startswith("degenerate:")  # an interval clear of 0 between two failures


def test_noninferiority_decides_all_three_ways():
    from companion.results.verdict import noninferior_verdict

    rng = np.random.default_rng(3)
    b = rng.uniform(0.6, 0.8, 30)
    # equal within noise: holds within a 0.02 margin (the superiority rule alone would be inconclusive)
    a = b + rng.normal(0, 0.005, 30)
    assert paired_verdict(a, b, better="higher").holds is None
    v = noninferior_verdict(a, b, margin=0.02, better="higher", names=("new", "old"), metric="Dice")
    assert v.holds is True and "non-inferiority" in v.evidence["test"]
    assert v.evidence["ci"][0] > -0.02 and abs(v.evidence["effect"] - float(np.mean(a - b))) < 1e-12
    # clearly worse by more than the margin: false, and the reason says so
    v = noninferior_verdict(b - 0.05, b + rng.normal(0, 0.002, 30), margin=0.02, better="higher")
    assert v.holds is False and v.reason.startswith("worse")
    # worse by about the margin: undecided
    v = noninferior_verdict(b - 0.02 + rng.normal(0, 0.01, 30), b, margin=0.02, better="higher")
    assert v.holds is None and "straddles" in v.reason
    # lower-is-better metrics mirror it; a guard still wins over the interval
    assert noninferior_verdict(b, b + 0.001, margin=0.01, better="lower").holds is True
    assert noninferior_verdict(a, b, margin=0.02, better="higher", guards=["x collapsed"]).holds is None
    with pytest.raises(ValueError, match="margin"):
        noninferior_verdict(a, b, margin=-1, better="higher")
