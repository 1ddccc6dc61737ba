"""Point values with 95% percentile-bootstrap intervals over independent units.

Faces of one person are not independent, so the unit is the *identity* (Bolle
et al., "Error analysis of pattern recognition systems: the subsets
bootstrap", 2004): each replicate draws identities with replacement with
multinomial weights (``bootstrap_weights``); ``bootstrap_mean`` averages
per-unit values, ``bootstrap_ratio`` is sum(num) / sum(den) over units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BOOT = 1000

@dataclass(frozen=True)
class Estimate:
    """A point value with its 95% bootstrap interval."""

    value: float
    ci95: tuple[float, float]

    def to_dict(self) -> dict:
        return {"value": _f(self.value), "ci95": [_f(self.ci95[0]), _f(self.ci95[1])]}

    def within(self, lo: float, hi: float) -> Estimate:
        """The same figure with value and interval held to what it can be (floating-point rounding can
        step past a bound: a mean of cosines at 1.0000000046)."""
        def c(x):
            return x if x != x else float(min(max(x, lo), hi))

        return Estimate(c(self.value), (c(self.ci95[0]), c(self.ci95[1])))


def _f(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


#: a replicate that cannot be computed (it drew one identity only: no impostor pair, no non-mated pair)
#: is not a sample of the figure; past this share of such replicates the data cannot support an interval
MAX_DEGENERATE = 0.05


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the replicates that could be computed (NaN marks one that could not);
    (NaN, NaN) -- not estimable -- when more than :data:`MAX_DEGENERATE` of them could not."""
    samples = np.asarray(samples, float).ravel()
    finite = np.isfinite(samples)
    if samples.size == 0 or (~finite).mean() > MAX_DEGENERATE:
        return (float("nan"), float("nan"))
    samples = samples[finite]
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return (float(lo), float(hi))


def bootstrap_weights(n_units: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n_units) counts: how often each unit is drawn in each replicate."""
    rng = np.random.default_rng(seed)
    if n_units == 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_boot).astype(np.float64)


def bootstrap_mean(values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Mean of per-unit values (e.g. per-victim hits) with a bootstrap interval over units."""
    values = np.asarray(values, float)
    if values.size == 0:
        return Estimate(float("nan"), (float("nan"), float("nan")))
    w = bootstrap_weights(len(values), n_boot, seed)
    # a mean lies between the smallest and the largest value
    return Estimate(float(values.mean()), percentile_ci(w @ values / len(values))).within(values.min(), values.max())


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """sum(num) / sum(den) over units (e.g. identities), bootstrapped over units."""
    num = np.asarray(num, float)
    den = np.asarray(den, float)
    if den.sum() == 0:
        return Estimate(float("nan"), (float("nan"), float("nan")))
    w = bootstrap_weights(len(num), n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (w @ num) / (w @ den)
        units = num[den > 0] / den[den > 0]
    # a ratio of sums lies between the smallest and the largest of the units' ratios
    return Estimate(float(num.sum() / den.sum()), percentile_ci(samples)).within(units.min(), units.max())
