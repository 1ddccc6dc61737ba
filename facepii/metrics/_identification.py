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

from facepii.metrics import _pairs
from facepii.metrics._bootstrap import N_BOOT, Estimate, bootstrap_ratio, rate_mean
from facepii.metrics._comparators import ScoreFn
from facepii.metrics._pairs import DEFAULT_MAX_MEMORY, exact_fits, sampled_verification
from facepii.metrics._verification import verification


def rank_k_hits(scores: np.ndarray, true_col: np.ndarray, k: int = 1) -> np.ndarray:
    """Per probe: 1 if its true gallery column is among the top ``k`` scores (ties count against)."""
    scores = np.asarray(scores, np.float64)
    true = scores[np.arange(len(scores)), true_col]
    better = (scores > true[:, None]).sum(axis=1)
    ties = (scores == true[:, None]).sum(axis=1) - 1  # other columns tied with the true one
    return ((better + ties) < k).astype(np.float64)


def identification(templates: np.ndarray, labels: np.ndarray, score_fn: ScoreFn, k: int = 1,
                   n_boot: int = N_BOOT, seed: int = 0, max_memory: int = 1 << 30,
                   inner_product: bool = False) -> Estimate:
    """Rank-k identification: one seeded gallery image per identity, every other image a probe.

    Probes are scored in blocks that fit ``max_memory``; with ``inner_product`` (a cosine matcher)
    and k = 1 the search is faiss's exact inner-product index where faiss is installed. The
    interval is a bootstrap over identities (probes grouped by identity; the gallery is held fixed).
    """
    labels = np.asarray(labels)
    uniq, lab = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed + 104729)
    order = np.argsort(lab, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(lab[order])) + 1]
    sizes = np.diff(np.r_[starts, len(lab)])
    # per identity in turn, one draw (the same draws as rng.choice over its positions: same galleries as before)
    gallery = np.array([order[s + rng.integers(0, z)] for s, z in zip(starts, sizes)])
    is_gallery = np.zeros(len(lab), bool)
    is_gallery[gallery] = True
    probes = np.flatnonzero(~is_gallery)
    if len(probes) == 0:
        return Estimate(float("nan"), (float("nan"), float("nan")))
    block = max(1, int(max_memory // max(1, len(gallery) * 8 * 4)))
    hits = faiss_rank1(templates[probes], templates[gallery], lab[probes], block) \
        if inner_product and k == 1 else None
    if hits is None:
        hits = np.empty(len(probes))
        for s in range(0, len(probes), block):
            p = probes[s:s + block]
            hits[s:s + block] = rank_k_hits(score_fn(templates[p], templates[gallery]), lab[p], k)
    num = np.bincount(lab[probes], weights=hits, minlength=len(uniq))
    den = np.bincount(lab[probes], minlength=len(uniq)).astype(float)
    return bootstrap_ratio(num, den, n_boot, seed)


def utility(templates: np.ndarray, labels: np.ndarray, score_fn: ScoreFn, n_boot: int = N_BOOT,
            seed: int = 0, max_memory: int | None = None, inner_product: bool = False,
            paired_fn: ScoreFn | None = None) -> dict:
    """The utility block of a report row: TAR@FAR, EER, AUC and rank-1, each an Estimate.

    Every impostor pair while their scores fit ``max_memory`` (default 4 GB); beyond, a seeded
    sample of at least 10^7 impostor pairs (:mod:`facepii.metrics._pairs`, which says so in
    ``impostor_sampling``), scored by ``paired_fn`` (row-wise) when given. ``inner_product``: the
    scores are cosines, which faiss's exact inner-product index can search."""
    mem = DEFAULT_MAX_MEMORY if max_memory is None else int(max_memory)
    labels = np.unique(np.asarray(labels), return_inverse=True)[1]  # integer codes: text labels cost 84 B each
    if exact_fits(labels, mem):
        out = verification(templates, labels, score_fn, n_boot=n_boot, seed=seed, max_bytes=min(mem, 1 << 30))
    else:
        out = sampled_verification(templates, labels, score_fn, _pairs.IMPOSTOR_SAMPLE, n_boot=n_boot, seed=seed,
                                   paired_fn=paired_fn)
    out["rank1"] = identification(templates, labels, score_fn, 1, n_boot, seed, max_memory=min(mem, 1 << 30),
                                  inner_product=inner_product)
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
    the template's source photo). Returns, each with a mid-p interval over
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
        out[f"rank{k}"] = rate_mean(rank_k_hits(ids, true_col, k))
        out[f"baseline_rank{k}"] = min(k, n) / n
    r1 = out["rank1"]
    out["leakage_ratio"] = Estimate(r1.value * n, (r1.ci95[0] * n, r1.ci95[1] * n))
    genuine = np.asarray(gallery_labels)[None, :] == victims[:, None]
    trials = genuine.sum(axis=1)
    passes = np.where(genuine, sc >= threshold, False).sum(axis=1) / np.maximum(trials, 1)
    out["sar@fmr=1e-3"] = rate_mean(passes, trials=trials)
    out["threshold@fmr=1e-3"] = float(threshold)
    out["scores"] = sc  # the (probe x gallery) scores these figures rest on
    return out


def faiss_rank1(probes: np.ndarray, gallery: np.ndarray, true_col: np.ndarray, block: int) -> np.ndarray | None:
    """Rank-1 hits by exact inner-product search (faiss IndexFlatIP on unit vectors); a tie with the true
    gallery entry counts against it, as in :func:`rank_k_hits`. None when faiss is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    G = np.ascontiguousarray(gallery / np.maximum(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12),
                             dtype=np.float32)
    index = faiss.IndexFlatIP(G.shape[1])
    index.add(G)
    k = min(2, len(G))
    hits = np.zeros(len(probes))
    for s in range(0, len(probes), block):
        P = np.asarray(probes[s:s + block], np.float32)
        P = np.ascontiguousarray(P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12))
        D, Ind = index.search(P, k)
        top_is_true = Ind[:, 0] == true_col[s:s + block]
        unique_top = D[:, 1] < D[:, 0] if k == 2 else np.ones(len(P), bool)
        hits[s:s + block] = top_is_true & unique_top
    return hits
