"""The verdict rules (companion.results.verdict): each rule shown deciding true, false and undecided."""
import numpy as np
import pytest

from companion.results.guards import degenerate_predictions, no_better_than, stalled_loss
from companion.results.verdict import (MIN_CASES, all_of, bootstrap_ci, paired_verdict, property_verdict,
                                       threshold_verdict)

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


# ----------------------------------------------------------------------------------------------- issue 22's rules
from companion.results.comparison import comparison_verdict, crossed_bootstrap_ci  # noqa: E402
from companion.results.convergence import converged  # noqa: E402

EPOCHS = np.arange(40)
DONE = [converged(0.2 + np.exp(-EPOCHS / 4), "A"), converged(0.3 + np.exp(-EPOCHS / 4), "B")]
R22 = np.random.default_rng(2022)
CASES = R22.uniform(0.6, 0.8, 24)


def seeds_of(effects, noise=0.005, rng_seed=1):
    rng = np.random.default_rng(rng_seed)
    return np.stack([CASES + e + rng.normal(0, noise, CASES.size) for e in effects])


def test_three_agreeing_converged_seeds_hold_and_carry_the_fields():
    v = comparison_verdict(seeds_of([0.05, 0.04, 0.06]), CASES, better="higher", margin=0.01, convergence=DONE)
    assert v.holds is True and v.outcome == "holds"
    ev = v.evidence
    assert ev["seeds"] == 3 and ev["margin"] == 0.01 and ev["converged"] == {"A": True, "B": True}
    assert len(ev["per_seed_effects"]) == 3 and "two-way" in ev["test"] and "runs" not in ev


def test_seed_disagreement_is_undecided():
    # two seeds clearly better, one clearly worse: the pooled mean is positive, but the seeds disagree
    v = comparison_verdict(seeds_of([0.06, 0.06, -0.03], noise=0.002), CASES, better="higher", margin=0.01,
                           convergence=DONE)
    assert v.holds is None and v.outcome == "inconclusive"
    assert "seeds" in v.reason or "spans 0" in v.reason


def test_pooled_interval_carries_the_seed_variance():
    # failure mode 1 of the simpler rules: a case bootstrap of seed-averaged differences ignores the seed
    d = seeds_of([0.03, 0.03, -0.04], noise=0.002) - CASES
    _, (lo_case, hi_case), _ = bootstrap_ci(d.mean(axis=0), np.zeros(CASES.size))
    _, (lo, hi) = crossed_bootstrap_ci(d)
    assert (hi - lo) > 3 * (hi_case - lo_case)
    # failure mode 2: the seed as the only unit ignores the cases; identical seeds with noisy cases keep their width
    d = np.tile(np.random.default_rng(5).normal(0.02, 0.05, 24), (3, 1))
    _, (lo, hi) = crossed_bootstrap_ci(d)
    per_seed = d.mean(axis=1)
    assert np.ptp(per_seed) == 0 and (hi - lo) > 0.02  # a seed-only interval would have zero width


def test_effect_inside_the_margin_is_equivalent():
    v = comparison_verdict(seeds_of([0.001, 0.0012, 0.0008], noise=0.0005), CASES, better="higher", margin=0.01,
                           convergence=DONE)
    assert v.holds is None and v.outcome == "equivalent" and v.reason.startswith("equivalent")
    lo, hi = v.evidence["ci"]
    assert 0 < lo and hi < 0.01  # statistically clear, practically nothing: not "holds"
    # the same interval without a margin would hold: the margin is what makes it equivalent
    assert comparison_verdict(seeds_of([0.001, 0.0012, 0.0008], noise=0.0005), CASES, better="higher", margin=0,
                              convergence=DONE).outcome == "holds"


def test_still_falling_curve_is_under_trained():
    falling = converged(np.linspace(1.0, 0.4, 30), "the student")
    assert falling.converged is False and falling.tail_fraction > 0.05
    v = comparison_verdict(seeds_of([0.05, 0.04, 0.06]), CASES, better="higher", margin=0.01,
                           convergence=[DONE[0], falling])
    assert v.holds is None and v.outcome == "under-trained" and "the student: still improving" in v.reason
    assert v.evidence["leaning"] == "holds" and v.evidence["converged"]["the student"] is False
    # convergence not recorded at all: undecided, saying so
    v = comparison_verdict(seeds_of([0.05, 0.04, 0.06]), CASES, better="higher", margin=0.01)
    assert v.outcome == "undecided" and "convergence" in v.reason


def test_convergence_rule():
    assert converged(0.1 + np.exp(-EPOCHS / 4), "m").converged is True
    assert converged(np.linspace(1, 0, 40), "m").converged is False
    assert converged(-np.log(2) - np.linspace(0, 1, 40), "iic").converged is False  # negative losses, still falling
    assert converged([1.0, 0.5, 0.4], "m").converged is None  # too few epochs to tell
    assert converged(np.full(20, 0.7), "flat").converged is True  # nothing to gain; the stalled guard catches it
    c = converged(np.linspace(1, 0, 40), "m", curve_kind="training")
    assert "training loss" in c.detail and c.as_record()["converged"] is False


def test_single_run_is_at_most_indicative():
    v = comparison_verdict(seeds_of([0.05])[0], CASES, better="higher", margin=0.01, convergence=DONE)
    assert v.holds is None and v.outcome == "indicative" and v.evidence["runs"] == "single run"
    assert v.evidence["leaning"] == "holds" and v.evidence["seeds"] == 1
    v = comparison_verdict(seeds_of([-0.05])[0], CASES, better="higher", margin=0.01, convergence=DONE,
                           implementation="paper Eqs. 1-3")
    assert v.holds is None and v.outcome == "indicative" and v.evidence["leaning"] == "reversed"


def test_reversal_must_be_earned():
    worse = seeds_of([-0.05, -0.04, -0.06])
    earned = comparison_verdict(worse, CASES, better="higher", margin=0.01, convergence=DONE,
                                implementation="paper Eqs. 5-8; authors' code objectives.py")
    assert earned.holds is False and earned.outcome == "reversed" and earned.evidence["implementation"]
    # no implementation note: undecided, naming what is missing
    v = comparison_verdict(worse, CASES, better="higher", margin=0.01, convergence=DONE)
    assert v.holds is None and v.outcome == "undecided" and "implementation note" in v.reason
    # two seeds, or an unconverged model: not a reversal either
    assert comparison_verdict(worse[:2], CASES, better="higher", margin=0.01, convergence=DONE,
                              implementation="x").outcome == "indicative"
    assert comparison_verdict(worse, CASES, better="higher", margin=0.01, implementation="x",
                              convergence=[converged(np.linspace(1, 0, 30), "A")]).outcome == "under-trained"
    # worse, but not beyond the margin: inconclusive, never reversed
    v = comparison_verdict(seeds_of([-0.006, -0.005, -0.007], noise=0.001), CASES, better="higher", margin=0.01,
                           convergence=DONE, implementation="x")
    assert v.outcome in ("equivalent", "inconclusive") and v.holds is None


def test_untrained_comparison_and_noninferiority():
    v = comparison_verdict(CASES + 0.05 + R22.normal(0, 0.005, 24), CASES, better="higher", margin=0.01,
                           trained=False)
    assert v.holds is True and v.evidence["seeds"] is None
    v = comparison_verdict(CASES - 0.005 + R22.normal(0, 0.002, 24), CASES, better="higher", margin=0.02,
                           claim="noninferior", trained=False)
    assert v.holds is True and "non-inferiority" in v.evidence["test"]
    v = comparison_verdict(CASES - 0.08 + R22.normal(0, 0.002, 24), CASES, better="higher", margin=0.02,
                           claim="noninferior", trained=False, implementation="x")
    assert v.holds is False and v.reason.startswith("worse")
    with pytest.raises(ValueError, match="margin"):
        comparison_verdict(CASES, CASES, better="higher", margin=None)


def test_all_of_keeps_the_intervals_of_its_parts():
    p1 = comparison_verdict(CASES + 0.05 + R22.normal(0, 0.005, 24), CASES, better="higher", margin=0.01,
                            trained=False)
    p2 = comparison_verdict(CASES + 0.03 + R22.normal(0, 0.005, 24), CASES, better="higher", margin=0.01,
                            trained=False)
    v = all_of([p1, p2])
    assert v.holds is True and [p["ci"] for p in v.evidence["parts"]] == [p1.evidence["ci"], p2.evidence["ci"]]
    assert v.evidence["margin"] == 0.01 and "converged" in v.evidence  # the comparison fields carried up
    single = all_of([p1, threshold_verdict(1, ">", 0, what="x")])
    assert single.evidence["ci"] == p1.evidence["ci"]
    # single runs: the combination is indicative and leans "holds" only when every part does
    lean_up = comparison_verdict(CASES + 0.05 + R22.normal(0, 0.005, 24), CASES, better="higher", margin=0.01,
                                 convergence=DONE)
    flat = comparison_verdict(CASES + R22.normal(0, 0.0005, 24), CASES, better="higher", margin=0.01,
                              convergence=DONE)
    assert all_of([lean_up, lean_up]).outcome == "indicative" and all_of([lean_up, lean_up]).evidence["leaning"] \
        == "holds"
    mixed = all_of([lean_up, flat])
    assert mixed.outcome == "indicative" and "leaning" not in mixed.evidence  # one part leans equivalent
    few = comparison_verdict([1, 2, 3], [0, 1, 2], better="higher", margin=0.1, trained=False)
    assert all_of([few, few]).reason == few.reason  # the same reason is said once


def test_negative_stalled_loss_is_flagged():
    # IIC's loss is minus a mutual information: -1.0 -> -0.96 has risen, not fallen
    assert "never left its starting value" in stalled_loss([-1.0, -0.98, -0.96], "IIC")
    assert stalled_loss([-1.0, -1.5, -2.0], "IIC") is None
    assert "never left" in stalled_loss([0.0, 0.0], "m")


def test_outcome_words():
    from companion.results.verdict import Verdict

    assert Verdict(True, None).outcome == "holds"
    assert Verdict(False, "speed = 3, not >= 5").outcome == "does not hold"
    assert Verdict(None, "inconclusive: spans 0").outcome == "inconclusive"
    assert Verdict(None, "not run: no GPU").outcome == "not measured"
    with pytest.raises(ValueError):
        Verdict(None, "x", {}, "maybe")


def test_worked_examples_show_the_outcome_they_are_there_for():
    from companion.results.examples import examples_markdown, worked_examples

    examples = worked_examples()
    assert [e.verdict.outcome for e in examples] == [e.outcome for e in examples]
    assert {e.outcome for e in examples} >= {"holds", "equivalent", "inconclusive", "indicative", "under-trained",
                                             "undecided", "reversed", "degenerate"}
    md = examples_markdown()
    assert md.count("* **") == len(examples) and "95 % CI [" in md
