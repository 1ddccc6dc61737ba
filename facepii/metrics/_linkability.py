"""Unlinkability of protected templates (ISO/IEC 30136), after Gomez-Barrero et al., "General framework
to evaluate unlinkability in biometric template protection systems", IEEE TIFS 13(6), 2018.

Mated scores compare two templates of the SAME person made under two different keys (or with fresh
noise); non-mated scores, templates of different people under different keys. With the score
densities estimated by histograms on common bins::

    LR(s)   = p(s | mated) / p(s | non-mated)
    D<->(s) = 2 * w LR(s) / (1 + w LR(s)) - 1   where w LR(s) > 1, else 0     (w = prior ratio, 1)
    D_sys   = sum over bins of p(s | mated) * D<->(s)                          (in [0, 1])

D_sys = 1: every mated pair can be told from non-mated ones (fully linkable, as raw embeddings);
D_sys = 0: the two distributions are the same (unlinkable).
"""

from __future__ import annotations

import numpy as np


def _bins(mated: np.ndarray, nonmated: np.ndarray, n_bins: int | None) -> np.ndarray:
    lo = min(mated.min(), nonmated.min())
    hi = max(mated.max(), nonmated.max())
    if hi <= lo:
        hi = lo + 1e-9
    n = n_bins or int(np.clip(len(mated) // 10, 10, 100))
    return np.linspace(lo, hi, n + 1)


def local_linkability(mated, nonmated, n_bins: int | None = None, omega: float = 1.0):
    """(bin centres, D<->(s) per bin, p(s | mated) per bin, p(s | non-mated) per bin)."""
    mated = np.asarray(mated, np.float64).ravel()
    nonmated = np.asarray(nonmated, np.float64).ravel()
    if mated.size == 0 or nonmated.size == 0:
        raise ValueError("linkability needs mated and non-mated scores")
    edges = _bins(mated, nonmated, n_bins)
    pm = np.histogram(mated, edges)[0] / mated.size
    pn = np.histogram(nonmated, edges)[0] / nonmated.size
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.where(pn > 0, pm / np.where(pn > 0, pn, 1), np.where(pm > 0, np.inf, 0.0))
        d = np.where(omega * lr > 1, np.where(np.isinf(lr), 1.0, 2 * omega * lr / (1 + omega * lr) - 1), 0.0)
    return (edges[:-1] + edges[1:]) / 2, d, pm, pn


def dsys(mated, nonmated, n_bins: int | None = None, omega: float = 1.0) -> float:
    """Global unlinkability measure D_sys in [0, 1] (see the module docstring)."""
    _, d, pm, _ = local_linkability(mated, nonmated, n_bins, omega)
    return float(np.sum(pm * d))
