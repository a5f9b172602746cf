"""Did a model converge?  One shared check, :func:`converged`, recorded per trained model.

A comparison between trained models is about the *methods* only when both were trained until their loss stopped
improving; a model stopped while its loss was still falling says "stopped early", not "worse".  The rule:

1. take the validation loss per epoch (the training loss, named as such, when a chapter records no validation);
2. smooth it with a trailing moving average over ``max(1, round(smooth * n))`` epochs;
3. compare the drop over the last ``tail`` (default 20 %) of the budget with the drop over the whole curve:
   ``f = (s[t] - s[-1]) / (s[0] - s[-1])`` with ``t`` the first epoch of the tail;
4. converged when ``f < threshold`` (default 0.05: less than 5 % of the total improvement came in the last 20 % of
   the epochs).  A curve that did not fall at all (``s[0] <= s[-1]``) has nothing left to gain from more epochs and
   counts as converged; the stalled-loss guard (:func:`companion.results.guards.stalled_loss`) is what catches a
   model that never learnt.  Fewer than ``min_epochs`` points: ``None`` (cannot tell).

Written as a ratio of drops, the rule reads negative losses (mutual information) and offsets the same way.  A
straight, still-falling line puts 20 % of its drop in the last 20 % and is *not* converged; an exponential decay with
a time constant of a tenth of the budget puts about 0.03 % there and is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

TAIL = 0.2
THRESHOLD = 0.05
SMOOTH = 0.1
MIN_EPOCHS = 5


@dataclass(frozen=True)
class Convergence:
    """The outcome of :func:`converged` for one model: ``converged`` True / False / None (too short to tell),
    ``tail_fraction`` (share of the total drop that came in the tail), the rule's settings, and which curve it read
    (``validation`` or ``training``)."""
    model: str
    converged: bool | None
    tail_fraction: float | None
    epochs: int
    curve: str
    tail: float = TAIL
    threshold: float = THRESHOLD

    @property
    def detail(self) -> str:
        if self.converged is None:
            return f"{self.model}: {self.epochs} epochs of {self.curve} loss, too few to tell (need {MIN_EPOCHS})"
        share = f"{100 * self.tail_fraction:.1f} %" if self.tail_fraction is not None else "none"
        verb = "converged" if self.converged else "still improving"
        return (f"{self.model}: {verb} ({share} of the {self.curve} loss's drop came in the last "
                f"{100 * self.tail:g} % of {self.epochs} epochs; threshold {100 * self.threshold:g} %)")

    def as_record(self) -> dict[str, Any]:
        out = asdict(self)
        out["detail"] = self.detail
        return out


def smoothed(values: Sequence[float], smooth: float = SMOOTH) -> np.ndarray:
    """Trailing moving average over ``max(1, round(smooth * n))`` points (the first points average what exists)."""
    v = np.asarray(list(values), float)
    w = max(1, int(round(smooth * len(v))))
    c = np.cumsum(np.r_[0.0, v])
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - w)
    return (c[idx] - c[lo]) / (idx - lo)


def converged(curve: Sequence[float], model: str = "model", *, curve_kind: str = "validation", tail: float = TAIL,
              threshold: float = THRESHOLD, smooth: float = SMOOTH, min_epochs: int = MIN_EPOCHS) -> Convergence:
    """Apply the rule of this module's docstring to one loss curve (one value per epoch)."""
    if not 0 < tail < 1 or not 0 < threshold < 1:
        raise ValueError(f"tail and threshold must lie in (0, 1), got {tail!r} and {threshold!r}")
    v = np.asarray(list(curve), float)
    n = len(v)
    if n and not np.all(np.isfinite(v)):
        return Convergence(model, False, None, n, curve_kind, tail, threshold)
    if n < min_epochs:
        return Convergence(model, None, None, n, curve_kind, tail, threshold)
    s = smoothed(v, smooth)
    t = min(n - 2, int(np.floor((1 - tail) * n)))
    total = s[0] - s[-1]
    if total <= 0:
        return Convergence(model, True, 0.0, n, curve_kind, tail, threshold)
    frac = float((s[t] - s[-1]) / total)
    return Convergence(model, bool(frac < threshold), frac, n, curve_kind, tail, threshold)
