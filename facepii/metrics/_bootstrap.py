"""Point values with 95% intervals over independent units: mid-p score intervals for rates over victims,
percentile-bootstrap intervals for the rest.

Faces of one person are not independent, so the unit is the *identity* (Bolle
et al., "Error analysis of pattern recognition systems: the subsets
bootstrap", 2004): each replicate draws identities with replacement with
multinomial weights (``bootstrap_weights``); ``bootstrap_mean`` averages
per-unit values, ``bootstrap_ratio`` is sum(num) / sum(den) over units.

Rates over victims (rank-k, SAR, ISR: one value in [0, 1] per victim) take
``rate_mean``: the mid-p exact interval (Lancaster 1961; Agresti & Gottard,
"Comment: randomized confidence intervals and the mid-p approach", 2005) of
the hits out of the victims, with Korn & Graubard's effective number of
victims where a victim's value is a share of several comparisons. The percentile
bootstrap of a proportion near 0 is too narrow (it covers p = 0.05 in 91% of
studies of 50 victims); mid-p keeps 93-97% wherever the binomial's
discreteness allows it (docs/metrics.md has both coverage tables).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import betainc

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


def _midp_tail(q: float, x: float, n: int) -> float:
    """P(X > x) + P(X = x) / 2 for X ~ Binomial(n, q), written with the regularised incomplete beta so that
    it is smooth in x: 0.5 * (P(X >= x) + P(X >= x + 1)), with P(X >= k) = I_q(k, n - k + 1). For a whole x
    it is the mid-p tail; for a sum of shares it lies between the tails of the neighbouring counts."""
    lo = 1.0 if x <= 0 else float(betainc(x, n - x + 1, q))
    hi = 0.0 if x >= n else float(betainc(x + 1, n - x, q))
    return 0.5 * (lo + hi)


def midp_interval(successes: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """The mid-p exact interval for a binomial proportion ``successes / n`` (``successes`` may be a sum of
    shares in [0, 1]: one per unit). Lower bound: the q at which the mid-p upper tail is (1 - level) / 2;
    upper bound: the q at which the mid-p lower tail is. 0 and 1 are reached only at 0 and n successes."""
    if n <= 0:
        return (float("nan"), float("nan"))
    x = float(min(max(successes, 0.0), n))
    a = (1 - level) / 2
    tiny = 1e-15
    lo = 0.0 if x <= 0 else brentq(lambda q: _midp_tail(q, x, n) - a, tiny, 1 - tiny, xtol=1e-14)
    hi = 1.0 if x >= n else brentq(lambda q: _midp_tail(q, x, n) - (1 - a), tiny, 1 - tiny, xtol=1e-14)
    return (float(lo), float(hi))


def rate_mean(values: np.ndarray, trials: np.ndarray | None = None, level: float = 0.95) -> Estimate:
    """A rate over units (per-victim hits, or per-victim shares in [0, 1]) with its mid-p interval.

    Hits: the mid-p interval of (hits, units). Shares (SAR: the share of a victim's ``trials`` genuine
    gallery photos that a reconstruction opens): comparisons of one victim are not independent, so the
    interval takes the effective number of units of Korn & Graubard ("Confidence intervals for proportions
    with small expected number of positive counts estimated from survey data", 1998): n_eff = p (1 - p) /
    var(mean), from the units' own spread, held between the number of units (no unit counts less than one
    hit) and the number of comparisons (none counts more than one independent trial; the number of units
    when ``trials`` is not given). A sample without spread (all 0, all 1, all one share) takes the number
    of units. Seed-free, the same for any thread count and BLAS kernel."""
    values = np.asarray(values, float).ravel()
    n = values.size
    if n == 0 or not np.isfinite(values).all():
        return Estimate(float("nan"), (float("nan"), float("nan")))
    if values.min() < 0 or values.max() > 1:
        raise ValueError("rate_mean takes values in [0, 1] (one rate per unit)")
    p = float(np.sum(values, dtype=np.float64)) / n
    cap = n if trials is None else max(n, int(np.sum(np.maximum(np.asarray(trials), 1))))
    var = float(np.var(values, ddof=1, dtype=np.float64)) / n if n > 1 else 0.0
    spread = float(np.ptp(values)) > 1e-12       # the variance of equal values is rounding, not spread
    n_eff = float(n) if not spread or var <= 0 or p <= 0 or p >= 1 else min(max(p * (1 - p) / var, n), cap)
    return Estimate(p, midp_interval(p * n_eff, n_eff, level))
