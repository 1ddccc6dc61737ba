"""Identification and re-identification: rank-k, the leakage ratio and the success attack rate.

* ``rank-k``: share of probes whose identity is among the ``k`` best-scoring
  gallery identities (an identity scores its best gallery image; a tie with
  the true identity counts against it).
* leakage ratio = rank-1 / (1 / N) for N gallery identities: "x times a random guess"
  (Wenger et al. 2022).
* SAR (success attack rate, Idiap's metric): the share of (reconstruction,
  genuine gallery image) comparisons whose score passes the judge's threshold
  at FMR 1e-3, averaged per victim.
"""

from __future__ import annotations

import numpy as np

from facepii.metrics._bootstrap import N_BOOT, Estimate, bootstrap_mean, bootstrap_ratio
from facepii.metrics._comparators import ScoreFn
from facepii.metrics._verification import verification


def rank_k_hits(scores: np.ndarray, true_col: np.ndarray, k: int = 1) -> np.ndarray:
    """Per probe: 1 if its true gallery column is among the top ``k`` scores (ties count against)."""
    scores = np.asarray(scores, np.float64)
    true = scores[np.arange(len(scores)), true_col]
    better = (scores > true[:, None]).sum(axis=1)
    ties = (scores == true[:, None]).sum(axis=1) - 1  # other columns tied with the true one
    return ((better + ties) < k).astype(np.float64)


def identification(templates: np.ndarray, labels: np.ndarray, score_fn: ScoreFn, k: int = 1,
                   n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """Rank-k identification: one seeded gallery image per identity, every other image a probe.

    The interval is a bootstrap over identities (probes grouped by identity;
    the gallery is held fixed).
    """
    labels = np.asarray(labels)
    uniq, lab = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed + 104729)
    gallery = np.array([rng.choice(np.flatnonzero(lab == c)) for c in range(len(uniq))])
    is_gallery = np.zeros(len(lab), bool)
    is_gallery[gallery] = True
    probes = np.flatnonzero(~is_gallery)
    if len(probes) == 0:
        return Estimate(float("nan"), (float("nan"), float("nan")))
    sc = score_fn(templates[probes], templates[gallery])
    hits = rank_k_hits(sc, lab[probes], k)
    num = np.bincount(lab[probes], weights=hits, minlength=len(uniq))
    den = np.bincount(lab[probes], minlength=len(uniq)).astype(float)
    return bootstrap_ratio(num, den, n_boot, seed)


def utility(templates: np.ndarray, labels: np.ndarray, score_fn: ScoreFn, n_boot: int = N_BOOT,
            seed: int = 0) -> dict:
    """The utility block of a report row: TAR@FAR, EER, AUC and rank-1, each an Estimate."""
    out = verification(templates, labels, score_fn, n_boot=n_boot, seed=seed)
    out["rank1"] = identification(templates, labels, score_fn, 1, n_boot, seed)
    return out


def identity_scores(scores: np.ndarray, gallery_labels: np.ndarray, identities: np.ndarray) -> np.ndarray:
    """Probe x identity matrix: each identity's best score over its gallery images."""
    scores = np.asarray(scores, np.float64)
    gallery_labels = np.asarray(gallery_labels)
    out = np.full((scores.shape[0], len(identities)), -np.inf)
    for c, ident in enumerate(identities):
        cols = gallery_labels == ident
        if cols.any():
            out[:, c] = scores[:, cols].max(axis=1)
    return out


def reidentification(probe_emb: np.ndarray, victims: np.ndarray, gallery_emb: np.ndarray,
                     gallery_labels: np.ndarray, score_fn: ScoreFn, threshold: float,
                     ks: tuple[int, ...] = (1, 5), n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Privacy figures for one reconstruction per victim, judged against the victims' gallery.

    ``probe_emb[i]`` is the judge's embedding of the reconstruction of victim
    ``victims[i]``; the gallery holds other real photos of the victims (never
    the template's source photo). Returns, each with a bootstrap interval over
    victims:

    - ``rank{k}``: share of victims whose identity is among the k best-scoring
      gallery identities (an identity scores its best gallery image);
    - ``baseline_rank1``: 1 / N, the random guess among N gallery identities;
    - ``leakage_ratio``: rank-1 / (1 / N), the paper's "x times random";
    - ``sar@fmr=1e-3``: success attack rate, the share of (reconstruction,
      genuine gallery image) comparisons whose score passes ``threshold`` (the
      judge's threshold at FMR 1e-3 on real impostor pairs), averaged per victim.
    """
    victims = np.asarray(victims)
    identities = np.unique(np.asarray(gallery_labels))
    sc = np.asarray(score_fn(probe_emb, gallery_emb), np.float64)
    ids = identity_scores(sc, gallery_labels, identities)
    true_col = np.searchsorted(identities, victims)
    n = len(identities)
    out: dict = {"n_victims": int(len(victims)), "n_gallery_identities": int(n),
                 "baseline_rank1": 1.0 / n}
    for k in ks:
        out[f"rank{k}"] = bootstrap_mean(rank_k_hits(ids, true_col, k), n_boot, seed)
        out[f"baseline_rank{k}"] = min(k, n) / n
    r1 = out["rank1"]
    out["leakage_ratio"] = Estimate(r1.value * n, (r1.ci95[0] * n, r1.ci95[1] * n))
    genuine = np.asarray(gallery_labels)[None, :] == victims[:, None]
    passes = np.where(genuine, sc >= threshold, False).sum(axis=1) / np.maximum(genuine.sum(axis=1), 1)
    out["sar@fmr=1e-3"] = bootstrap_mean(passes, n_boot, seed)
    out["threshold@fmr=1e-3"] = float(threshold)
    return out
