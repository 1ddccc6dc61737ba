"""Verification figures of all pairs, exact point values and identity-bootstrap intervals.

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

Intervals: a percentile bootstrap over identities; a drawn identity brings
all its genuine pairs, and two drawn identities bring all the impostor pairs
between them. Each replicate is evaluated on a grid of a few hundred
thresholds (impostor quantiles log-spaced in FAR and dense around each FAR
level, genuine quantiles) with the same no-interpolation rule as the point
value; the point value itself is always computed from all scores. Above
``max_groups`` identities they are bootstrapped in seeded blocks of identities.
"""

from __future__ import annotations

import numpy as np

from facepii.metrics._bootstrap import N_BOOT, Estimate, bootstrap_weights, percentile_ci
from facepii.metrics._comparators import ScoreFn

FAR_LEVELS = (1e-2, 1e-3, 1e-4)
#: a TAR at FAR f is set by the ~f * n_i highest impostor scores: below MIN_IMPOSTORS_ABOVE of them
#: (f < 3 / n_i) the threshold rests on one or two scores and the figure is "not estimable" (NaN, n/a)
MIN_IMPOSTORS_ABOVE = 3


def supported(far: float, n_impostor: int) -> bool:
    """Whether ``n_impostor`` impostor pairs can support a rate at FAR ``far``."""
    return far * n_impostor >= MIN_IMPOSTORS_ABOVE


def lowest_supported_far(n_impostor: int) -> float | None:
    return MIN_IMPOSTORS_ABOVE / n_impostor if n_impostor else None


def _drop_unsupported(out: dict, far_levels, n_impostor: int) -> dict:
    for f in far_levels:
        if not supported(f, n_impostor):
            out[far_key(f)] = Estimate(float("nan"), (float("nan"), float("nan")))
    return out

#: points of a DET curve kept in a report (each an exact (FMR, FNMR) of all pairs at one threshold)
DET_POINTS = 160


def det_curve(g_sorted: np.ndarray, i_sorted: np.ndarray, far_levels=FAR_LEVELS) -> dict:
    """A DET curve of all pairs: at thresholds ``t`` taken at impostor quantiles (log-spaced FMR from
    1 / n_i to 1) and genuine quantiles (log-spaced FNMR), the exact FMR(t) = #{i > t} / n_i and
    FNMR(t) = #{g <= t} / n_g, the acceptance rule of TAR@FAR; and each FAR level's operating point
    (the threshold TAR@FAR takes, the FMR it reached, its FNMR, the impostor pairs behind it and whether
    they support it)."""
    ng, ni = g_sorted.size, i_sorted.size
    if ng == 0 or ni == 0:
        return {}
    half = DET_POINTS // 2
    k_i = np.unique(np.clip(ni - np.round(np.logspace(0, np.log10(ni), half)).astype(np.int64), 0, ni - 1))
    k_g = np.unique(np.clip(np.round(np.logspace(0, np.log10(ng), half)).astype(np.int64) - 1, 0, ng - 1))
    t = np.unique(np.concatenate([i_sorted[k_i], g_sorted[k_g]]))
    fmr = (ni - np.searchsorted(i_sorted, t, side="right")) / ni
    fnmr = np.searchsorted(g_sorted, t, side="right") / ng
    points = {}
    for f in far_levels:
        k = int(np.floor(f * ni))
        if k >= ni:
            continue
        thr = i_sorted[ni - 1 - k]
        points[far_key(f)] = {
            "far": float(f), "threshold": float(thr),
            "fmr_reached": float((ni - np.searchsorted(i_sorted, thr, side="right")) / ni),
            "fnmr": float(np.searchsorted(g_sorted, thr, side="right") / ng),
            "impostor_pairs": int(ni), "supported": bool(supported(f, ni))}
    return {"fmr": [float(x) for x in fmr], "fnmr": [float(x) for x in fnmr], "operating_points": points,
            "genuine_pairs": int(ng), "impostor_pairs": int(ni)}


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
        out.update({far_key(f): nan for f in far_levels}, eer=nan, auc=nan)
        return out
    g_sorted = np.sort(gen)
    i_sorted = np.sort(imp)
    point = {far_key(f): _tar_at_far_sorted(g_sorted, i_sorted, f) for f in far_levels}
    point["eer"] = _eer_sorted(g_sorted, i_sorted)
    point["auc"] = _auc_sorted(g_sorted, i_sorted)
    out["det"] = det_curve(g_sorted, i_sorted, far_levels)

    taus = _threshold_grid(g_sorted, i_sorted, far_levels)
    del g_sorted, i_sorted, gen, imp

    samples = _grid_bootstrap(templates, labels, score_fn, taus, far_levels, n_boot, seed,
                              max_groups, max_bytes)
    for key, v in point.items():
        out[key] = Estimate(v, percentile_ci(samples[key])).within(0.0, 1.0)  # rates
    return _drop_unsupported(out, far_levels, out["n_impostor"])


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


def far_key(f: float) -> str:
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
    return _replicates(imp_counts, gen_counts, G, far_levels, n_boot, seed)


def _replicates(imp_counts: np.ndarray, gen_counts: np.ndarray, G: int, far_levels, n_boot: int,
                seed: int) -> dict[str, np.ndarray]:
    """Bootstrap replicates of TAR@FAR, EER and AUC from per-block counts of scores per grid bin.

    ``imp_counts[a, b, k]``: ordered impostor pairs between blocks a and b in bin k (an unordered
    pair between blocks a != b sits once in [a, b] and once in [b, a]; within a block twice in
    [a, a]); ``gen_counts[a, k]``: genuine pairs of block a, counted twice.
    """
    K = imp_counts.shape[2] - 1
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
        out[far_key(f)] = _grid_tar(far, tar, f)
    out["eer"] = np.array([_grid_eer(far[r], tar[r]) for r in range(n_boot)])
    out["auc"] = np.array([_grid_auc(far[r], tar[r]) for r in range(n_boot)])
    return out


def _grid_tar(far: np.ndarray, tar: np.ndarray, f: float) -> np.ndarray:
    """Per replicate: TAR at the lowest grid threshold whose FAR <= f (the point estimate's rule)."""
    ok = far <= f * (1 + 1e-12)
    k = np.argmax(ok, axis=1)  # grid thresholds ascend, so FAR descends along axis 1
    val = tar[np.arange(len(tar)), k]
    computable = np.isfinite(far).all(axis=1) & np.isfinite(tar).all(axis=1)  # impostor and genuine pairs drawn
    return np.where(computable, np.where(ok.any(axis=1), val, 0.0), np.nan)


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


def verification_pairs(genuine: np.ndarray, genuine_ids: np.ndarray, impostor: np.ndarray,
                       impostor_ids: np.ndarray, far_levels: tuple[float, ...] = FAR_LEVELS, n_boot: int = N_BOOT,
                       seed: int = 0, max_groups: int = 256) -> dict:
    """:func:`verification` from listed pair scores (all genuine pairs, a sample of impostor pairs):
    for matchers too slow for every pair (homomorphic encryption). ``genuine_ids``: each genuine
    pair's identity; ``impostor_ids``: (n, 2) the identities of each impostor pair. Same rules,
    same identity bootstrap (a drawn identity brings its genuine pairs and its listed impostor pairs
    with the other drawn identities)."""
    gen = np.asarray(genuine, np.float64)
    imp = np.asarray(impostor, np.float64)
    out: dict = {"n_genuine": int(gen.size), "n_impostor": int(imp.size)}
    if gen.size == 0 or imp.size == 0:
        nan = Estimate(float("nan"), (float("nan"), float("nan")))
        out.update({far_key(f): nan for f in far_levels}, eer=nan, auc=nan)
        return out
    g_sorted, i_sorted = np.sort(gen), np.sort(imp)
    point = {far_key(f): _tar_at_far_sorted(g_sorted, i_sorted, f) for f in far_levels}
    point["eer"] = _eer_sorted(g_sorted, i_sorted)
    point["auc"] = _auc_sorted(g_sorted, i_sorted)
    out["det"] = det_curve(g_sorted, i_sorted, far_levels)
    taus = _threshold_grid(g_sorted, i_sorted, far_levels)
    ids = np.concatenate([np.asarray(genuine_ids).ravel(), np.asarray(impostor_ids).ravel()])
    uniq, inv = np.unique(ids, return_inverse=True)
    _, grp_of, G = _groups(uniq, max_groups, seed)
    g_grp = grp_of[inv[:gen.size]]
    ia = grp_of[inv[gen.size:]].reshape(-1, 2)
    K = len(taus)
    gb = np.searchsorted(taus, gen, side="right")
    ib = np.searchsorted(taus, imp, side="right")
    gen_counts = np.zeros((G, K + 1))
    np.add.at(gen_counts, (g_grp, gb), 2.0)
    imp_counts = np.zeros((G, G, K + 1))
    np.add.at(imp_counts, (ia[:, 0], ia[:, 1], ib), 1.0)
    np.add.at(imp_counts, (ia[:, 1], ia[:, 0], ib), 1.0)
    samples = _replicates(imp_counts, gen_counts, G, far_levels, n_boot, seed)
    for key, v in point.items():
        out[key] = Estimate(v, percentile_ci(samples[key])).within(0.0, 1.0)  # rates
    return _drop_unsupported(out, far_levels, out["n_impostor"])


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest threshold t with FAR(t) = #{i >= t} / n <= far (the TAR@FAR rule)."""
    imp = np.sort(np.asarray(impostor))
    k = int(np.floor(far * imp.size))
    if k >= imp.size:
        return -np.inf
    return float(np.nextafter(imp[imp.size - 1 - k], np.inf))
