"""Comparators: templates -> score matrices. A score is a similarity: higher means "more likely
the same person". Cosine similarity, the negated Euclidean distance (so higher is still closer),
and Hamming similarity (share of equal bits) for binary templates."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Scores are computed in float64 and handed on as float32: BLAS kernels (OpenBLAS's Haswell against
# SkylakeX, one thread against two, one block size against another) sum in other orders, which moves a
# float32 product by ~1e-7 but a float64 one by ~1e-16, far below float32's rounding step. So the same
# templates give the same float32 scores on every machine and in every executor (a score lying within
# 1e-16 of a rounding boundary, about 1 in 10^8, is the exception), and figures that rest on a threshold
# between scores do not move with the kernel.


def _unit64(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a / np.maximum(np.sqrt(np.einsum("ij,ij->i", a, a))[:, None], 1e-12)


#: the float64 temporaries of one step of a score matrix stay under this many bytes (b is taken in slices,
#: so a 10^6-template gallery is never copied to float64 whole)
F64_STEP_BYTES = 1 << 26


def _by_slices(a: np.ndarray, b: np.ndarray, fn) -> np.ndarray:
    """``fn(a64, b64_slice)`` over slices of ``b``'s rows, into one float32 matrix."""
    a64 = np.asarray(a, np.float64)
    b = np.asarray(b)
    out = np.empty((len(a64), len(b)), np.float32)
    step = max(1, F64_STEP_BYTES // (8 * max(len(a64), b.shape[1] if b.ndim == 2 else 1, 1)))
    for s in range(0, len(b), step):
        out[:, s:s + step] = fn(a64, np.asarray(b[s:s + step], np.float64))
    return out


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``."""
    an = _unit64(a)
    return _by_slices(an, b, lambda x, y: x @ _unit64(y).T)


def neg_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Negated Euclidean distance (higher = closer)."""
    a2 = np.einsum("ij,ij->i", np.asarray(a, np.float64), np.asarray(a, np.float64))[:, None]
    return _by_slices(a, b, lambda x, y: -np.sqrt(np.maximum(
        a2 + np.einsum("ij,ij->i", y, y)[None, :] - 2 * (x @ y.T), 0)))


def hamming_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal bits (1 - normalised Hamming distance); an entry > 0 is a 1 bit
    (so {0, 1} and {-1, +1} templates both work)."""
    a = (np.asarray(a) > 0).astype(np.float32)
    b = (np.asarray(b) > 0).astype(np.float32)
    d = a.shape[1]
    agree = a @ b.T + (1 - a) @ (1 - b).T
    return (agree / d).astype(np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of a[k] with b[k] for every k."""
    return np.einsum("ij,ij->i", _unit64(a), _unit64(b)).astype(np.float32)


def neg_l2_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return (-np.sqrt(np.einsum("ij,ij->i", d, d))).astype(np.float32)


def hamming_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((np.asarray(a) > 0) == (np.asarray(b) > 0)).mean(axis=1).astype(np.float32)


def diagonal_scores(score_fn: ScoreFn, a: np.ndarray, b: np.ndarray, block: int = 128) -> np.ndarray:
    """score_fn(a[k], b[k]) for every k from any matrix comparator (the diagonals of small blocks)."""
    out = np.empty(len(a), np.float64)
    for s in range(0, len(a), block):
        out[s:s + block] = np.diagonal(np.asarray(score_fn(a[s:s + block], b[s:s + block])))
    return out


#: row-wise (paired) versions: the score of a[k] with b[k], for sampled pairs
ROWWISE: dict[str, ScoreFn] = {"cosine": cosine_rows, "l2": neg_l2_rows, "hamming": hamming_rows}

COMPARATORS: dict[str, ScoreFn] = {"cosine": cosine_similarity, "l2": neg_l2,
                                   "hamming": hamming_similarity}


def comparator(name: str) -> ScoreFn:
    try:
        return COMPARATORS[name]
    except KeyError:
        raise ValueError(f"unknown comparator {name!r}; use one of {sorted(COMPARATORS)}") from None
