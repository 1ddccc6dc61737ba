"""Recognition and privacy metrics: plain functions of arrays (no I/O), like ``sklearn.metrics``.

Conventions
-----------
A *score* is a similarity: higher means "more likely the same person". The
comparators below turn templates into score matrices: cosine similarity, the
negated Euclidean distance (so higher is still closer), and Hamming
similarity (share of equal bits) for binary templates.

For a decision threshold ``t`` and genuine scores ``g`` (same identity) and
impostor scores ``i`` (different identities)::

    FAR(t) = #{i >= t} / n_i          (false accept rate, = FMR)
    TAR(t) = #{g >= t} / n_g          (true accept rate, 1 - FRR)

* ``TAR@FAR=f``: the highest TAR over thresholds whose FAR <= f, i.e. ``t``
  just above the ``floor(f * n_i) + 1``-th highest impostor score (no
  interpolation; identical to reading ``sklearn.metrics.roc_curve``).
* ``EER``: the error where FAR(t) = FRR(t); at the threshold where
  ``|FAR - FRR|`` is smallest, ``(FAR + FRR) / 2``.
* ``AUC``: P(g > i) + P(g = i) / 2 (Mann-Whitney), the area under the ROC.
* ``rank-k``: share of probes whose identity is among the ``k`` best-scoring
  gallery identities.

Intervals
---------
Faces of one person are not independent, so every interval is a percentile
bootstrap over *identities* (Bolle et al., "Error analysis of pattern
recognition systems: the subsets bootstrap", 2004): each replicate draws
identities with replacement; a drawn identity brings all its genuine pairs,
and two drawn identities bring all the impostor pairs between them. For the
verification rates each replicate is evaluated on a grid of a few hundred thresholds
(impostor quantiles log-spaced in FAR and dense around each FAR level,
genuine quantiles) with the same no-interpolation rule as the point value;
the point value itself is always computed from all scores. Above ``max_groups``
identities they are bootstrapped in seeded blocks of identities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

FAR_LEVELS = (1e-2, 1e-3, 1e-4)
N_BOOT = 1000


# ---------------------------------------------------------------- comparators


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return an @ bn.T


def neg_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Negated Euclidean distance (higher = closer)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
    return -np.sqrt(np.maximum(d2, 0))


def hamming_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of equal bits (1 - normalised Hamming distance); an entry > 0 is a 1 bit
    (so {0, 1} and {-1, +1} templates both work)."""
    a = (np.asarray(a) > 0).astype(np.float32)
    b = (np.asarray(b) > 0).astype(np.float32)
    d = a.shape[1]
    agree = a @ b.T + (1 - a) @ (1 - b).T
    return (agree / d).astype(np.float32)


COMPARATORS: dict[str, ScoreFn] = {"cosine": cosine_similarity, "l2": neg_l2,
                                   "hamming": hamming_similarity}


def comparator(name: str) -> ScoreFn:
    try:
        return COMPARATORS[name]
    except KeyError:
        raise ValueError(f"unknown comparator {name!r}; use one of {sorted(COMPARATORS)}") from None


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Estimate:
    """A point value with its 95% bootstrap interval."""

    value: float
    ci95: tuple[float, float]

    def to_dict(self) -> dict:
        return {"value": _f(self.value), "ci95": [_f(self.ci95[0]), _f(self.ci95[1])]}


def _f(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    samples = np.asarray(samples, float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return (float("nan"), float("nan"))
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
    return Estimate(float(values.mean()), percentile_ci(w @ values / len(values)))


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """sum(num) / sum(den) over units (e.g. identities), bootstrapped over units."""
    num = np.asarray(num, float)
    den = np.asarray(den, float)
    if den.sum() == 0:
        return Estimate(float("nan"), (float("nan"), float("nan")))
    w = bootstrap_weights(len(num), n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (w @ num) / (w @ den)
    return Estimate(float(num.sum() / den.sum()), percentile_ci(samples))


# ---------------------------------------------------------------- exact verification figures


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
    """Highest TAR with FAR <= ``far`` (see module docstring)."""
    g = np.asarray(genuine, np.float64)
    imp = np.asarray(impostor)
    if g.size == 0 or imp.size == 0:
        return float("nan")
    k = int(np.floor(far * imp.size))
    if k >= imp.size:
        return 1.0
    # (k+1)-th highest impostor score: O(n) with partition
    t = np.partition(imp, imp.size - 1 - k)[imp.size - 1 - k]
    return float(np.mean(g > t))


def _tar_at_far_sorted(g_sorted: np.ndarray, imp_sorted: np.ndarray, far: float) -> float:
    k = int(np.floor(far * imp_sorted.size))
    if k >= imp_sorted.size:
        return 1.0
    t = imp_sorted[imp_sorted.size - 1 - k]
    return float(1 - np.searchsorted(g_sorted, t, side="right") / g_sorted.size)


def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Equal error rate (see module docstring)."""
    g = np.sort(np.asarray(genuine))
    i = np.sort(np.asarray(impostor))
    return _eer_sorted(g, i)


def _eer_sorted(g: np.ndarray, i: np.ndarray) -> float:
    if g.size == 0 or i.size == 0:
        return float("nan")
    ng, ni = g.size, i.size

    def rates(t):
        far = (ni - np.searchsorted(i, t, side="left")) / ni
        frr = np.searchsorted(g, t, side="left") / ng
        return far, frr

    far_g, frr_g = rates(g)
    d = far_g - frr_g  # non-increasing along g
    j = int(np.searchsorted(-d, 0.0, side="left"))  # first index with d <= 0
    lo = g[max(j - 1, 0)]
    hi = g[min(j, ng - 1)]
    a, b = np.searchsorted(i, lo, side="left"), np.searchsorted(i, hi, side="right")
    cand = np.concatenate([g[max(j - 1, 0):j + 1], i[a:b], np.nextafter(i[a:b], np.inf)])
    if j >= ng:  # every genuine threshold still has FAR > FRR: look above the top genuine score
        cand = np.concatenate([cand, i[-1:], np.nextafter(i[-1:], np.inf)])
    far, frr = rates(cand)
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2)


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Area under the ROC: P(g > i) + P(g = i) / 2."""
    g = np.asarray(genuine)
    i = np.sort(np.asarray(impostor))
    return _auc_sorted(g, i)


def _auc_sorted(g: np.ndarray, i_sorted: np.ndarray) -> float:
    if g.size == 0 or i_sorted.size == 0:
        return float("nan")
    below = np.searchsorted(i_sorted, g, side="left").astype(np.float64)
    ties = np.searchsorted(i_sorted, g, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (g.size * i_sorted.size))


# ---------------------------------------------------------------- pair scores


def _row_blocks(n: int, max_bytes: int) -> list[tuple[int, int]]:
    rows = max(1, int(max_bytes // max(1, n * 4 * 6)))  # score block + a few temporaries
    return [(s, min(n, s + rows)) for s in range(0, n, rows)]


def pair_scores(templates: np.ndarray, labels: np.ndarray, score_fn: ScoreFn,
                max_bytes: int = 1 << 30) -> tuple[np.ndarray, np.ndarray]:
    """All genuine and impostor scores of unordered pairs (i < j), computed in row blocks."""
    gen, imp = [], []
    _, lab = np.unique(np.asarray(labels), return_inverse=True)
    n = len(lab)
    for s, e in _row_blocks(n, max_bytes):
        sc = np.asarray(score_fn(templates[s:e], templates), np.float32)
        upper = np.arange(n)[None, :] > np.arange(s, e)[:, None]
        same = lab[s:e, None] == lab[None, :]
        gen.append(sc[upper & same])
        imp.append(sc[upper & ~same])
    return (np.concatenate(gen) if gen else np.zeros(0, np.float32),
            np.concatenate(imp) if imp else np.zeros(0, np.float32))


# ---------------------------------------------------------------- verification with intervals


def verification(templates: np.ndarray, labels: np.ndarray, score_fn: ScoreFn,
                 far_levels: tuple[float, ...] = FAR_LEVELS, n_boot: int = N_BOOT, seed: int = 0,
                 max_groups: int = 256, max_bytes: int = 1 << 30) -> dict:
    """TAR at each FAR level, EER and AUC of all pairs, with bootstrap intervals over identities.

    Returns ``{"tar@far=1e-2": Estimate, ..., "eer": Estimate, "auc": Estimate,
    "n_genuine": int, "n_impostor": int}``.
    """
    templates = np.asarray(templates)
    labels = np.asarray(labels)
    if len(templates) != len(labels):
        raise ValueError(f"{len(templates)} templates but {len(labels)} labels")
    gen, imp = pair_scores(templates, labels, score_fn, max_bytes)
    out: dict = {"n_genuine": int(gen.size), "n_impostor": int(imp.size)}
    if gen.size == 0 or imp.size == 0:
        nan = Estimate(float("nan"), (float("nan"), float("nan")))
        out.update({_far_key(f): nan for f in far_levels}, eer=nan, auc=nan)
        return out
    g_sorted = np.sort(gen)
    i_sorted = np.sort(imp)
    point = {_far_key(f): _tar_at_far_sorted(g_sorted, i_sorted, f) for f in far_levels}
    point["eer"] = _eer_sorted(g_sorted, i_sorted)
    point["auc"] = _auc_sorted(g_sorted, i_sorted)

    taus = _threshold_grid(g_sorted, i_sorted, far_levels)
    del g_sorted, i_sorted, gen, imp

    samples = _grid_bootstrap(templates, labels, score_fn, taus, far_levels, n_boot, seed,
                              max_groups, max_bytes)
    for key, v in point.items():
        out[key] = Estimate(v, percentile_ci(samples[key]))
    return out


def _threshold_grid(g_sorted: np.ndarray, i_sorted: np.ndarray, far_levels) -> np.ndarray:
    """Thresholds for the bootstrap: impostor quantiles log-spaced in FAR (dense around each
    FAR level, including the exact thresholds of the point estimates), genuine quantiles for
    the EER and AUC; each also nudged up by one float step, so that ">= v" and "> v" are both
    on the grid (binary/quantised templates have many tied scores)."""
    n = i_sorted.size

    def at_far(f):
        f = np.asarray(f, float)
        return i_sorted[np.clip(n - 1 - np.floor(f * n).astype(int), 0, n - 1)]

    lo = np.log10(max(0.5 / n, 1e-7))
    parts = [at_far(np.logspace(lo, 0, 60)), np.quantile(g_sorted, np.linspace(0, 1, 31))]
    for f in far_levels:
        parts.append(at_far(np.logspace(np.log10(f / 2.5), np.log10(f * 2.5), 25)))
        parts.append(at_far([f]))
    t = np.unique(np.concatenate(parts).astype(np.float32))
    return np.unique(np.concatenate([t, np.nextafter(t, np.float32(np.inf))]))


def _far_key(f: float) -> str:
    return f"tar@far={f:.0e}".replace("e-0", "e-")


def _groups(labels: np.ndarray, max_groups: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    uniq, lab = np.unique(labels, return_inverse=True)
    n_id = len(uniq)
    if n_id <= max_groups:
        return lab, lab, n_id
    perm = np.random.default_rng(seed + 7919).permutation(n_id)
    block_of_id = perm % max_groups
    return lab, block_of_id[lab], max_groups


def _grid_bootstrap(templates, labels, score_fn, taus, far_levels, n_boot, seed, max_groups,
                    max_bytes) -> dict[str, np.ndarray]:
    lab, grp, G = _groups(labels, max_groups, seed)
    n = len(lab)
    K = len(taus)
    # scores -> grid bin (number of thresholds <= score) through a fine uniform quantisation and
    # lookup tables of each cell's two edges; only scores in a cell that holds a threshold need
    # the exact binary search (ties with a threshold, as with binary templates, stay exact)
    lo, hi = float(taus[0]), float(taus[-1])
    span = max(hi - lo, 1e-12)
    Q = 3 * (1 << 16)
    base = lo - span
    scale = Q / (3 * span)
    edges = base + np.arange(Q + 2) / scale
    lut_lo = np.searchsorted(taus, edges[:-1], side="right").astype(np.int32)
    lut_hi = np.searchsorted(taus, edges[1:], side="left").astype(np.int32)  # thresholds < upper edge

    def to_bins(sc: np.ndarray) -> np.ndarray:
        q = ((sc - base) * scale).astype(np.int32)
        np.clip(q, 0, Q, out=q)
        b = lut_lo[q]
        amb = lut_hi[q] != b
        if amb.any():
            b[amb] = np.searchsorted(taus, sc[amb], side="right")
        return b

    # Rows are taken one block (identity, or block of identities) at a time against all
    # columns: each block's counts go to a small (G, K+1) table that stays in cache.
    order = np.argsort(grp, kind="stable")
    Ts, grp_s, lab_s = templates[order], grp[order], lab[order]
    starts = np.r_[0, np.flatnonzero(np.diff(grp_s)) + 1]
    ends = np.r_[starts[1:], n]
    col_off = (grp_s * (K + 1)).astype(np.int32)
    dump = G * (K + 1)  # genuine and self pairs go here and are dropped from the impostor table
    imp_counts = np.zeros((G, G, K + 1))
    gen_counts = np.zeros((G, K + 1))
    rows_per = max(1, int(max_bytes // max(1, n * 4 * 6)))
    for s0, e0 in zip(starts, ends):
        a = grp_s[s0]
        for s, e in ((r, min(e0, r + rows_per)) for r in range(s0, e0, rows_per)):
            sc = np.asarray(score_fn(Ts[s:e], Ts), np.float32)
            b = to_bins(sc)
            cell = b + col_off[None, :]
            blk = cell[:, s0:e0]  # columns of the same block: genuine pairs and self-pairs
            same = lab_s[s:e, None] == lab_s[None, s0:e0]
            gmask = same.copy()
            gmask[np.arange(e - s), np.arange(s - s0, e - s0)] = False
            gen_counts[a] += np.bincount(b[:, s0:e0][gmask], minlength=K + 1)
            blk[same] = dump
            imp_counts[a] += np.bincount(cell.ravel(), minlength=dump + 1)[:dump].reshape(G, K + 1)
    # ordered pairs were counted from both ends: an unordered pair between blocks a != b sits
    # once in [a, b] and once in [b, a]; within a block it sits twice in [a, a]
    idx_g = np.arange(G)
    imp_counts[idx_g, idx_g] /= 2
    gen_counts /= 2
    # counts of scores >= taus[k] are the counts of bins > k
    C = imp_counts[:, :, ::-1].cumsum(axis=2)[:, :, ::-1][:, :, 1:]
    D = np.ascontiguousarray(np.diagonal(C, axis1=0, axis2=1).T)  # within-block impostors (G, K)
    S = C.copy()  # pairs between blocks a != b, symmetric
    S[idx_g, idx_g, :] = 0
    tot = imp_counts.sum(axis=2)
    n_imp_pair = tot.copy()
    n_imp_pair[idx_g, idx_g] = 0
    n_imp_diag = np.diagonal(tot).copy()
    Gc = gen_counts[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:]
    n_gen = gen_counts.sum(axis=1)

    W = bootstrap_weights(G, n_boot, seed)
    S2 = S.reshape(G, G * K)
    far = np.empty((n_boot, K))
    for r0 in range(0, n_boot, 100):
        w = W[r0:r0 + 100]
        cross = np.einsum("rg,rgk->rk", w, (w @ S2).reshape(len(w), G, K)) / 2 + w @ D
        pairs = np.einsum("rg,gh,rh->r", w, n_imp_pair, w) / 2 + w @ n_imp_diag
        with np.errstate(invalid="ignore", divide="ignore"):
            far[r0:r0 + 100] = cross / pairs[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        tar = (W @ Gc) / (W @ n_gen)[:, None]
    out: dict[str, np.ndarray] = {}
    for f in far_levels:
        out[_far_key(f)] = _grid_tar(far, tar, f)
    out["eer"] = np.array([_grid_eer(far[r], tar[r]) for r in range(n_boot)])
    out["auc"] = np.array([_grid_auc(far[r], tar[r]) for r in range(n_boot)])
    return out


def _grid_tar(far: np.ndarray, tar: np.ndarray, f: float) -> np.ndarray:
    """Per replicate: TAR at the lowest grid threshold whose FAR <= f (the point estimate's rule)."""
    ok = far <= f * (1 + 1e-12)
    k = np.argmax(ok, axis=1)  # grid thresholds ascend, so FAR descends along axis 1
    val = tar[np.arange(len(tar)), k]
    return np.where(ok.any(axis=1), val, 0.0)


def _grid_eer(far: np.ndarray, tar: np.ndarray) -> float:
    frr = 1 - tar
    d = far - frr
    if not np.isfinite(d).all():
        return float("nan")
    k = int(np.argmax(d <= 0)) if (d <= 0).any() else len(d) - 1
    if k == 0 or d[k] > 0:
        return float((far[k] + frr[k]) / 2)
    a = d[k - 1] / (d[k - 1] - d[k])
    return float(far[k - 1] + a * (far[k] - far[k - 1]))


def _grid_auc(far: np.ndarray, tar: np.ndarray) -> float:
    x = np.concatenate([[1.0], far, [0.0]])
    y = np.concatenate([[1.0], tar, [0.0]])
    return float(-np.trapezoid(y, x))


# ---------------------------------------------------------------- identification


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


# ---------------------------------------------------------------- privacy


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


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest threshold t with FAR(t) = #{i >= t} / n <= far (the TAR@FAR rule)."""
    imp = np.sort(np.asarray(impostor))
    k = int(np.floor(far * imp.size))
    if k >= imp.size:
        return -np.inf
    return float(np.nextafter(imp[imp.size - 1 - k], np.inf))


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


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) of image pairs on luma, Gaussian window sigma 1.5.

    ``a``, ``b``: N x H x W x 3 uint8. Returns N values in [-1, 1].
    """
    import cv2

    def luma(x):
        x = np.asarray(x, np.float64)
        return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = np.empty(len(a))
    for i, (x, y) in enumerate(zip(luma(a), luma(b))):
        def blur(z):
            return cv2.GaussianBlur(z, (11, 11), 1.5)

        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        out[i] = m[5:-5, 5:-5].mean()
    return out
