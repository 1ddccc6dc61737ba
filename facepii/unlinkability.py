"""ISO/IEC 30136 unlinkability and renewability of a defense setting (irreversibility: :mod:`facepii.irreversibility`).

Protocol (Gomez-Barrero et al., IEEE TIFS 2018; formulas in :mod:`facepii.metrics._linkability`):
for each identity with two or more photos, two distinct photos are drawn (seeded). The first is
the stored template (the defender's key, as enrolled); the second is enrolled again after the
defense is re-issued: a keyed defense gets a new key, a randomized one draws fresh noise, a
deterministic unkeyed one (none, quantize, pca) cannot be re-issued and gives the same transform.

- unlinkability: D_sys between mated scores (old template vs re-issued template of the same
  person) and non-mated scores (different people), with a bootstrap interval over identities;
  raw embeddings come out near 1 (fully linkable);
- renewability: the share of old templates that still match the person's re-issued template at
  the system's threshold for FMR 1e-3 (calibrated on the stored templates' impostor scores). A
  renewable scheme brings it down to about the FMR; a scheme without renewal keeps it at its TAR.
"""

from __future__ import annotations

import numpy as np

from facepii import metrics
from facepii.iso_estimates import Unlinkability
from facepii.metrics._linkability import dsys, local_linkability
from facepii.stages import EmbeddedSet, Templates

RENEW = 1_000_003      # seed offset of the re-issued key / noise
MAX_IDENTITIES = 1000  # identities sampled for the n x n score matrix (its bootstrap costs n^2 per replicate)


def reissued(defense, seed: int):
    """The defense re-issued after a revocation: new keys for keyed steps, fresh randomness."""
    return defense.reissued(seed + RENEW, RENEW)


def scenario(defense) -> str:
    if defense.encrypted:
        return ("new key pair; scores as the key holder decrypts them (to it the templates stay linkable; "
                "without the key, ciphertexts are unlinkable: IND-CPA)")
    if defense.keyed:
        return "re-issued key"
    if defense.randomized:
        return "fresh noise"
    return "no renewal possible (deterministic, unkeyed): the same transform"


def enrolment_pairs(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per identity with >= 2 photos (at most MAX_IDENTITIES, seeded): two distinct photos."""
    rng = np.random.default_rng(seed + 30136)
    _, inv = np.unique(labels, return_inverse=True)
    order = np.argsort(inv, kind="stable")  # each identity's positions, ascending, identities in turn
    groups = [g for g in np.split(order, np.flatnonzero(np.diff(inv[order])) + 1) if len(g) >= 2]
    if len(groups) > MAX_IDENTITIES:
        groups = [groups[i] for i in np.sort(rng.choice(len(groups), MAX_IDENTITIES, replace=False))]
    pairs = np.array([rng.choice(g, 2, replace=False) for g in groups]).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def unlinkability(embedded: EmbeddedSet, t: Templates, n_boot: int, seed: int) -> Unlinkability | None:
    """The row's unlinkability and renewability (None with fewer than 3 identities of two photos)."""
    labels = embedded.labels
    old, new = enrolment_pairs(labels, seed)
    n = len(old)
    if n < 3:
        return None
    d = t.defense
    T_old = t.templates[old]
    T_new = reissued(d, seed).transform(embedded.embeddings["target"][new], labels[new])
    S = np.asarray(d.score(T_old, T_new), np.float64)
    mated = np.diag(S).copy()
    off = ~np.eye(n, dtype=bool)
    imp_old = np.asarray(d.score(T_old, T_old), np.float64)[np.triu(off)]
    threshold = metrics.threshold_at_far(imp_old, 1e-3)
    value = dsys(mated, S[off])
    rng = np.random.default_rng(seed + 30137)
    reps = np.full(n_boot, np.nan)  # a replicate that drew one identity has no non-mated pair: not computable
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        mask = idx[:, None] != idx[None, :]
        if mask.any():
            reps[b] = dsys(mated[idx], S[np.ix_(idx, idx)][mask])
    centres, local, pm, pn = local_linkability(mated, S[off])
    return Unlinkability(
        scenario=scenario(d), dsys=metrics.Estimate(value, metrics.percentile_ci(reps)), mated=int(n),
        nonmated=int(off.sum()), histogram={"score": centres.tolist(), "mated": pm.tolist(), "nonmated": pn.tolist(),
                                            "d_local": local.tolist()},
        renewal_match=metrics.rate_mean((mated >= threshold).astype(float)),
        renewal_threshold=float(threshold), renewal_impostor_pairs=int(imp_old.size))
