"""ISO/IEC 30136 irreversibility of a defense setting: template inversion (ISR) and face-level SAR.

Template level. The attacker recovers each victim's UNPROTECTED embedding from its stolen
protected template, two ways, and the row reports the better:

- ``learned``: facepii's learned inverse (the ridge map protected -> raw, fitted on the
  auxiliary set's templates made with the attacker's view of the defense);
- ``solver``: for a single keyed defense with the key disclosed, the numerical solver of
  :mod:`attacks.solver` (the defense's differentiable relaxation, several seeded starts,
  the learned estimate among them).

Inversion success rate ``isr@fmr=X``: the recovered embedding is compared, by the target's own
comparator, with each genuine gallery embedding of the victim (its other photos, never the
source photo) at the UNPROTECTED system's threshold for FMR X (calibrated on all impostor pairs
of the evaluation's real photos); per victim the share of its gallery photos that accept (any
one of them could be the enrolment), averaged over victims with a bootstrap interval. An
unsolved attempt counts as a failure: every victim gets an estimate.

Face level, from the row's worst reconstructions (the headline key scenario):

- type I, the target system: the face is embedded by the target model, protected by the
  defender's defense (the victim's key) and compared with the victim's stored protected gallery
  templates at the protected system's threshold for FMR X (calibrated on the protected
  impostor scores of the victims' photos);
- type II, the independent judge: the judge's embedding of the face against its embeddings of
  the victim's gallery photos, at the judge's threshold for FMR X on its own impostor scores.

Each threshold is reported with the FMR it actually reaches on those impostor pairs (ties and
the number of pairs make it differ from the target), and a SAR-vs-FMR curve (1e-4 .. 1e-1).
"""

from __future__ import annotations

import numpy as np

from facepii import metrics
from facepii.encoder_base import same_model
from facepii.iso_estimates import Irreversibility, SarLevels
from facepii.labels import fmr_text, isr_key

FMRS = (1e-2, 1e-3, 1e-4)

ISR_FMRS = (1e-3, 1e-4)
CURVE_FMRS = tuple(float(x) for x in np.logspace(-4, -1, 13))


def operating_point(impostor: np.ndarray, fmr: float) -> dict:
    """The threshold at ``fmr`` and the FMR it reaches on these impostor scores."""
    imp = np.asarray(impostor, np.float64)
    t = metrics.threshold_at_far(imp, fmr)
    return {"threshold": float(t), "fmr_reached": float((imp >= t).mean()) if imp.size else None,
            "impostor_pairs": int(imp.size), "supported": metrics.supported(fmr, int(imp.size))}


NOT_ESTIMABLE = metrics.Estimate(float("nan"), (float("nan"), float("nan")))


def accept_share(scores: np.ndarray, probe_labels: np.ndarray, gallery_labels: np.ndarray,
                 threshold: float) -> np.ndarray:
    """Per probe: the share of its genuine gallery entries whose score reaches ``threshold``."""
    genuine = np.asarray(gallery_labels)[None, :] == np.asarray(probe_labels)[:, None]
    passed = np.where(genuine, np.asarray(scores) >= threshold, False).sum(axis=1)
    return passed / np.maximum(genuine.sum(axis=1), 1)


def genuine_counts(probe_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """Per probe: how many genuine gallery entries its share in :func:`accept_share` is taken over."""
    return (np.asarray(gallery_labels)[None, :] == np.asarray(probe_labels)[:, None]).sum(axis=1)


def isr(recovered: np.ndarray, victims: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
        score_fn, raw_impostor: np.ndarray, n_boot: int, seed: int) -> dict[str, metrics.Estimate]:
    """Inversion success rates of recovered raw embeddings against the unprotected system."""
    sc = np.asarray(score_fn(recovered, gallery), np.float64)
    out: dict = {}
    trials = genuine_counts(victims, gallery_labels)
    for f in ISR_FMRS:
        op = operating_point(raw_impostor, f)
        out[isr_key(f)] = metrics.rate_mean(accept_share(sc, victims, gallery_labels, op["threshold"]),
                                            trials) if op["supported"] else NOT_ESTIMABLE
    return out


def sar_levels(scores: np.ndarray, victims: np.ndarray, gallery_labels: np.ndarray, impostor: np.ndarray,
               n_boot: int, seed: int) -> SarLevels:
    """SAR at FMRS with each operating point, plus the SAR-vs-FMR curve."""
    sar, ops = {}, {}
    trials = genuine_counts(victims, gallery_labels)
    for f in FMRS:
        op = operating_point(impostor, f)
        k = fmr_text(f)
        sar[k] = metrics.rate_mean(accept_share(scores, victims, gallery_labels, op["threshold"]),
                                   trials) if op["supported"] else NOT_ESTIMABLE
        ops[k] = op
    curve = {"fmr": list(CURVE_FMRS), "sar": [
        float(accept_share(scores, victims, gallery_labels, metrics.threshold_at_far(impostor, f)).mean())
        for f in CURVE_FMRS]}
    return SarLevels(sar, ops, curve)


def inversion(recovered: dict[str, np.ndarray], victims, sources_raw, gallery_raw, gallery_labels, score_fn,
              raw_impostor, n_boot: int, seed: int) -> tuple[dict, dict]:
    """Per inversion method (the attacker stage's recovered embeddings): ISR and cosine to the source;
    and the unprotected system's operating points."""
    methods = {}
    for name, E in recovered.items():
        block = isr(E, victims, gallery_raw, gallery_labels, score_fn, raw_impostor, n_boot, seed)
        block["cosine_to_source"] = metrics.bootstrap_mean(np.clip(np.sum(E * _unit(sources_raw), axis=1), -1, 1),
                                                           n_boot, seed)
        methods[name] = block
    return methods, {fmr_text(f): operating_point(raw_impostor, f) for f in ISR_FMRS}


def face_sar(faces: np.ndarray, victims: np.ndarray, judges: dict, system: dict, n_boot: int,
             seed: int) -> tuple[SarLevels, SarLevels]:
    """Type I (target system, protected) and type II (independent judge) SAR of one set of faces."""
    j = judges["judge"]
    emb = j.embed(faces)
    type2 = sar_levels(j.score(emb, j.gallery), victims, j.gallery_labels, j.impostor, n_boot, seed)
    d = system["defense"]
    target = judges.get("target")  # the system's own model, as the upper-bound judge: it has met these faces
    embed = target.embed if target is not None and same_model(target.encoder, system["encoder"]) else \
        system["encoder"].embed
    probe = d.transform(embed(faces), victims)
    type1 = sar_levels(d.score(probe, system["gallery"]), victims, system["gallery_labels"], system["impostor"],
                       n_boot, seed)
    return type1, type2


def _unit(E: np.ndarray) -> np.ndarray:
    E = np.asarray(E, np.float32)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


#: seed offsets of the randomness the protected system draws when it is probed after enrolment: the
#: reconstructed faces' templates (type I SAR) and the oracle's queries
PROBE_RANDOMNESS, ORACLE_RANDOMNESS = 2_000_029, 3_000_017


def probing(defense, seed: int):
    """The system's defense as it answers probes: a randomized one (noise) draws fresh randomness for each
    probe from a stream of its own, so that what one stage draws never depends on what another stage
    drew before it (the row's stages may run in any order, on different Dask workers). Keys and learned
    parts are the stored templates' own; a defense without randomness is itself."""
    return defense.with_randomness(seed) if defense.randomized else defense


def system_view(embedded, t, split, target, seed: int = 0) -> dict:
    """The protected system as the type I comparison and the oracles see it: the victims' stored
    gallery templates and the protected impostor scores of the victims' photos (its thresholds)."""
    labels = embedded.labels
    vpos = split.victim_pos
    _, imp = metrics.pair_scores(t.templates[vpos], labels[vpos], t.defense.score)
    return {"defense": probing(t.defense, seed + PROBE_RANDOMNESS), "encoder": target,
            "gallery": t.templates[split.gallery_pos],
            "gallery_labels": labels[split.gallery_pos], "impostor": imp,
            "threshold": metrics.threshold_at_far(imp, 1e-3)}


def row_irreversibility(embedded, split, recovered: dict[str, np.ndarray], key: str, faces: np.ndarray,
                        judges: dict, system: dict, raw_impostor: np.ndarray, n_boot: int,
                        seed: int) -> Irreversibility:
    """The row's irreversibility: template inversion (ISR of the attacker's recovered embeddings) and
    face-level SAR type I / II of its worst reconstructions."""
    labels = embedded.labels
    E = embedded.embeddings["target"]
    victims = labels[split.source_pos]
    score_fn = metrics.comparator(embedded.encoders["target"]["comparator"])
    methods, thresholds = inversion(recovered, victims, E[split.source_pos], E[split.gallery_pos],
                                    labels[split.gallery_pos], score_fn, raw_impostor, n_boot, seed)
    type1, type2 = face_sar(faces, victims, judges, system, n_boot, seed)
    return Irreversibility(key, methods, thresholds, type1, type2, judges["judge"].encoder.name)


def oracle_summary(res, embedded, split, raw_impostor: np.ndarray, n_boot: int, seed: int) -> dict:
    """Queries per victim, the share matched within the budget, and the recovered embeddings' ISR."""
    labels = embedded.labels
    E = embedded.embeddings["target"]
    victims = labels[split.source_pos]
    matched = res.queries_to_match > 0
    q = res.queries_to_match[matched]
    score_fn = metrics.comparator(embedded.encoders["target"]["comparator"])
    out = {"kind": res.kind, "budget_per_victim": int(res.budget),
           "queries_used": {"mean": float(res.queries_used.mean()), "max": int(res.queries_used.max())},
           "matched_within_budget": metrics.rate_mean(matched.astype(float)).to_dict(),
           "queries_to_match": {"median": float(np.median(q)) if q.size else None,
                                "max": int(q.max()) if q.size else None,
                                "per_victim": [int(x) for x in res.queries_to_match]},
           "cosine_to_source": metrics.bootstrap_mean(
               np.clip(np.sum(res.estimates * _unit(E[split.source_pos]), axis=1), -1, 1), n_boot, seed).to_dict()}
    out.update({k: v.to_dict() for k, v in isr(res.estimates, victims, E[split.gallery_pos],
                                                labels[split.gallery_pos], score_fn, raw_impostor, n_boot,
                                                seed).items()})
    return out
