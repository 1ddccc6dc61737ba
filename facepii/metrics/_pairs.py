"""Pairs of a labelled set: genuine pairs, counts, seeded impostor samples, and verification of galleries too
large for every impostor pair (10^5 - 10^7 templates).

Genuine pairs are always all scored (per identity). Impostor pairs are all scored while their
scores fit the memory budget (``max_memory``: about 12 bytes per pair for the scores, their sorted
copy and the bootstrap's bins); beyond it, a seeded uniform sample of distinct impostor pairs
(at least ``IMPOSTOR_SAMPLE``, 10^7) is scored instead, and the same rules and identity bootstrap
(:func:`~facepii.metrics._verification.verification_pairs`) apply to the listed pairs. What the
sampling adds to the uncertainty is measured, not assumed: the sample is cut into 10 disjoint
parts, the spread of each figure over the parts, divided by sqrt(10), is the sampling standard
deviation of the full-sample figure, reported beside its share of the interval's variance
(the interval's half-width / 1.96 taken as the total standard deviation).
"""

from __future__ import annotations

import numpy as np

from facepii.metrics._bootstrap import Estimate
from facepii.metrics._comparators import ScoreFn, diagonal_scores
from facepii.metrics._verification import (
    FAR_LEVELS,
    _eer_sorted,
    _tar_at_far_sorted,
    far_key,
    verification_pairs,
)

BYTES_PER_PAIR = 12
IMPOSTOR_SAMPLE = 10_000_000
DEFAULT_MAX_MEMORY = 4 << 30


def pair_counts(labels: np.ndarray) -> tuple[int, int]:
    """(genuine, impostor) unordered pairs of a labelled set."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1].astype(np.int64)
    n = int(counts.sum())
    gen = int((counts * (counts - 1) // 2).sum())
    return gen, n * (n - 1) // 2 - gen


def exact_fits(labels: np.ndarray, max_memory: int) -> bool:
    gen, imp = pair_counts(labels)
    return (gen + imp) * BYTES_PER_PAIR <= max_memory


def paired_scores(paired_fn: ScoreFn, T: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """The score of every listed pair (i, j) of templates ``T`` by a row-wise comparator
    (``paired_fn(A, B)[k]`` = score of A[k] with B[k]), gathered chunk by chunk (never every pair's
    templates at once)."""
    out = np.empty(len(pairs), np.float64)
    for s in range(0, len(pairs), chunk):
        out[s:s + chunk] = paired_fn(T[pairs[s:s + chunk, 0]], T[pairs[s:s + chunk, 1]])
    return out


def _identities(labels: np.ndarray):
    """Per identity with at least 2 photos: (its label, its positions in ``labels``)."""
    order = np.argsort(labels, kind="stable")
    lab = labels[order]
    starts = np.r_[0, np.flatnonzero(lab[1:] != lab[:-1]) + 1]
    ends = np.r_[starts[1:], len(lab)]
    for s, e in zip(starts, ends):
        if e - s >= 2:
            yield lab[s], order[s:e]


def genuine_pairs(labels: np.ndarray) -> np.ndarray:
    """Every genuine pair (i < j, same identity) as an (n, 2) array of positions."""
    out = []
    for _, pos in _identities(np.asarray(labels)):
        a, b = np.triu_indices(len(pos), 1)
        out.append(np.stack([np.minimum(pos[a], pos[b]), np.maximum(pos[a], pos[b])], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def genuine_scores(templates: np.ndarray, labels: np.ndarray, score_fn: ScoreFn) -> tuple[np.ndarray, np.ndarray]:
    """Every genuine pair's score and identity, scored per identity."""
    labels = np.asarray(labels)
    scores, ids = [], []
    for label, pos in _identities(labels):
        T = templates[pos]
        sc = np.asarray(score_fn(T, T))
        iu = np.triu_indices(len(pos), 1)
        scores.append(sc[iu].astype(np.float64))
        ids.append(np.full(len(iu[0]), label))
    if not scores:
        return np.zeros(0), np.zeros(0, labels.dtype)
    return np.concatenate(scores), np.concatenate(ids)


def sample_impostor_pairs(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A seeded uniform sample of ``n`` distinct unordered impostor pairs (i < j, different identities);
    all of them when there are fewer."""
    labels = np.asarray(labels)
    m = len(labels)
    _, total = pair_counts(labels)
    n = min(int(n), total)
    rng = np.random.default_rng(seed + 2024)
    keys = np.zeros(0, np.int64)
    while len(keys) < n:  # candidates in draw order; a repeat keeps its first draw
        k = int((n - len(keys)) * 1.1) + 1000
        i = rng.integers(0, m, k)
        j = rng.integers(0, m, k)
        ok = (i != j) & (labels[i] != labels[j])
        cand = np.concatenate([keys, np.minimum(i, j)[ok].astype(np.int64) * m + np.maximum(i, j)[ok]])
        _, first = np.unique(cand, return_index=True)
        keys = cand[np.sort(first)]
    keys = np.sort(keys[:n])
    return np.stack([keys // m, keys % m], axis=1)


def sampled_verification(templates: np.ndarray, labels: np.ndarray, score_fn: ScoreFn, n_impostors: int,
                         far_levels=FAR_LEVELS, n_boot: int = 1000, seed: int = 0,
                         paired_fn: ScoreFn | None = None) -> dict:
    """:func:`verification` with every genuine pair and a seeded sample of impostor pairs, plus
    ``impostor_sampling``: how many pairs, of how many, and the sampling's share of each interval."""
    labels = np.asarray(labels)
    gen, gen_ids = genuine_scores(templates, labels, score_fn)
    pairs = sample_impostor_pairs(labels, n_impostors, seed)
    imp = paired_scores(paired_fn or (lambda a, b: diagonal_scores(score_fn, a, b)), templates, pairs)
    out = verification_pairs(gen, gen_ids, imp, labels[pairs], far_levels, n_boot, seed)
    g_sorted = np.sort(gen)
    parts = np.array_split(np.random.default_rng(seed + 11).permutation(len(imp)), 10)
    share = {}
    for f in far_levels:
        share[far_key(f)] = [_tar_at_far_sorted(g_sorted, np.sort(imp[p]), f) for p in parts]
    share["eer"] = [_eer_sorted(g_sorted, np.sort(imp[p])) for p in parts]
    sampling = {}
    for key, vals in share.items():
        sd = float(np.std(vals, ddof=1) / np.sqrt(len(parts)))
        e: Estimate = out[key]
        half = (e.ci95[1] - e.ci95[0]) / 2 / 1.96 if e.ci95[0] == e.ci95[0] else float("nan")
        sampling[key] = {"sd": sd, "share_of_variance": float(min(1.0, sd ** 2 / half ** 2)) if half > 0 else None}
    _, total = pair_counts(labels)
    out["impostor_sampling"] = {"sampled": int(len(imp)), "total": int(total), "seed": int(seed),
                                "figures": sampling}
    return out
