"""The defender's stage of Estimates: what a protection costs in recognition accuracy.

Utility is verification and identification of protected templates against
protected templates of all usable photos (TAR at FAR 1e-2/1e-3/1e-4, EER, AUC,
rank-1; formulas in :mod:`facepii.metrics`), each with a 95% bootstrap
interval over identities. Per-user-key (cancelable) schemes look best when
every impostor brings a key of their own; the honest worst case, the stolen
token, is measured again with every template made with one key.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import clone

from defenses.base import encrypted_matching, shared_key
from facepii import metrics, progress
from facepii import scores as S
from facepii.estimates import RowEstimates, UtilityEstimates
from facepii.metrics._pairs import genuine_pairs, pair_counts
from facepii.stages import EmbeddedSet, Templates


def _plain(v: Any) -> Any:
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def estimates(u: dict) -> UtilityEstimates:
    return UtilityEstimates({k: v for k, v in u.items() if isinstance(v, metrics.Estimate)})


def matching_text(d) -> str:
    if d.matching == "comparator":
        return f"{d.output_comparator} of the protected templates"
    return f"{type(d).__name__}'s own matcher on the protected templates"


def utility_row(embedded: EmbeddedSet, t: Templates, fit_pos: np.ndarray | None, n_boot: int, seed: int,
                max_memory: int | None = None, score_limit: int = 0) -> RowEstimates:
    """A report row for one defense setting, with its utility; with ``score_limit`` (impostor pairs, or
    :data:`facepii.scores.ALL`; 0 = none) also the scored pairs for the score files."""
    labels = embedded.labels
    d = t.defense
    he = None
    pair_scores = None
    if d.encrypted:
        u, he, pair_scores = encrypted_utility(embedded.embeddings["target"], labels, d, n_boot, seed)
    else:
        u = metrics.utility(t.templates, labels, d.score, n_boot=n_boot, seed=seed, max_memory=max_memory,
                            inner_product=d.cosine_scores, paired_fn=d.paired_score)
    budget = d.privacy_budget() or {}
    row = RowEstimates(
        defense=t.spec, params={k: _plain(v) for k, v in t.params.items()}, utility=estimates(u),
        epsilon=budget.get("epsilon"), delta=budget.get("delta"), template_bytes=d.template_nbytes(),
        all_params={k: _plain(v) for k, v in d.flat_params().items()},
        pairs={"genuine": u["n_genuine"], "impostor": u["n_impostor"]}, impostor_sampling=u.get("impostor_sampling"),
        det=u.get("det") or None,
        key_mode="user" if d.per_user else ("system" if d.keyed else None), encrypted_matching=he)
    if score_limit:
        if pair_scores is None:
            pair_scores = S.utility_pairs(t.templates, labels, d.score, score_limit, seed, paired_fn=d.paired_score,
                                          how=matching_text(d))
        row.scores = S.RowScores(utility=pair_scores)
    if d.per_user:
        E = embedded.embeddings["target"]
        fit = slice(None) if fit_pos is None else fit_pos
        d2 = shared_key(clone(d))
        d2.fit(E[fit], labels[fit], comparator=embedded.encoders["target"]["comparator"])
        row.utility_stolen_token = estimates(
            metrics.utility(d2.transform(E, labels), labels, d2.score, n_boot=n_boot, seed=seed,
                            max_memory=max_memory, inner_product=d2.cosine_scores, paired_fn=d2.paired_score))
    return row


def encrypted_utility(E: np.ndarray, labels: np.ndarray, d, n_boot: int, seed: int) -> tuple[dict, dict, S.PairScores]:
    """Verification through real encrypted matching: every genuine pair and a seeded uniform sample
    of ``d.impostor_pairs`` impostor pairs (identification would need every pair: not measured).
    Also the HE scores' error against the plaintext scores of the same pairs (after a chain's earlier steps)."""
    labels = np.asarray(labels)
    m, before = encrypted_matching(d)  # the encrypted step (a chain's last) and the plaintext steps before it
    gen = genuine_pairs(labels)
    imp = metrics.sample_impostor_pairs(labels, int(m.impostor_pairs), seed)
    pairs = np.concatenate([gen, imp])
    scores = np.empty(len(pairs))
    chunk = 32 * 64
    with progress.bar("encrypted matching (CKKS)", len(pairs)) as b:
        for s in range(0, len(pairs), chunk):
            p = pairs[s:s + chunk]
            scores[s:s + chunk] = m.encrypted_pair_scores(before(E[p[:, 0]]), before(E[p[:, 1]]))
            b.update(len(p))
    P = before(E)  # the plaintext scores of the same vectors (a chain's earlier steps applied)
    U = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    plain = np.sum(U[pairs[:, 0]] * U[pairs[:, 1]], axis=1)
    err = np.abs(scores - plain)
    g = scores[:len(gen)]
    u = metrics.verification_pairs(g, labels[gen[:, 0]], scores[len(gen):], labels[imp], n_boot=n_boot, seed=seed)
    u["rank1"] = metrics.Estimate(float("nan"), (float("nan"), float("nan")))
    scheme = m.encryption_info()
    info = {"scheme": scheme["scheme"], "poly_modulus_degree": scheme["poly_modulus_degree"],
            "scale_bits": scheme["scale_bits"], "genuine_pairs": int(len(gen)), "impostor_pairs_sampled": int(len(imp)),
            "impostor_pairs_total": pair_counts(labels)[1], "abs_error_vs_plaintext": {
                "max": float(err.max()), "mean": float(err.mean())},
            "ms_per_comparison": m.ms_per_comparison(), "templates_per_ciphertext": scheme["templates_per_ciphertext"],
            "rank1": "not measured: identification through encrypted matching needs every pair"}
    listed = S.listed_pairs(pairs, len(gen), scores, len(gen), info["impostor_pairs_total"], seed,
                            "decrypted CKKS inner products of the encrypted templates (encrypted matching)")
    return u, info, listed
