"""One row (a defense setting) of the protocol, in two stages that may run in two processes:

    row_attacks:  templates -> utility and unlinkability -> per key scenario the attacks' reconstructions
                  (and the oracle's)
    row_judging:  the judges on every reconstruction -> privacy, irreversibility, the oracle's figures

:class:`RowJob` holds what every row shares; a row executor (:mod:`facepii.row_executor`) runs its two
stages in this process or as Dask tasks. Both stages return plain data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from facepii import progress
from facepii.config import EvaluateConfig
from facepii.estimates import AttackFigures, PrivacyEstimates, RowEstimates
from facepii.irreversibility import oracle_summary, row_irreversibility, system_view
from facepii.judging import (
    Judge,
    baseline_faces,
    judge_baselines,
    judge_faces,
    privacy_block,
)
from facepii.labels import row_label
from facepii.reconstructions import (
    AttackerKit,
    Reconstructions,
    oracle_attack,
    reconstruct,
)
from facepii.scores import JudgeScores
from facepii.stages import (
    EmbeddedSet,
    Split,
    Templates,
    protect,
)
from facepii.threat import oracle_queries
from facepii.unlinkability import unlinkability
from facepii.utility import utility_row

CIPHERTEXT = ("not applicable: the stolen templates are CKKS ciphertexts (IND-CPA under RLWE); without the "
              "secret key they carry nothing an attack can use. The threat is the matcher's scores: --oracle score.")



@dataclass(frozen=True)
class RowSettings:
    """What a row's two stages read of the validated configuration, and nothing else of it (a Dask worker
    gets these, not the whole config): the seed, the bootstrap, the torch threads, the utility's memory and
    score-file limits, the key scenarios, the attacks, K templates per victim and the oracle."""

    seed: int
    bootstrap: int
    threads: int | None
    max_memory: int | None
    scores: int
    key: str
    attacks: tuple[str, ...]
    templates_per_victim: tuple[int, ...]
    oracle: str
    oracle_queries: int | None

    @classmethod
    def of(cls, cfg: EvaluateConfig) -> RowSettings:
        """The row settings of a validated, resolved config."""
        d, p = cfg.data, cfg.privacy
        return cls(cfg.seed, cfg.bootstrap, d.threads, d.max_memory, d.scores, p.key, tuple(p.attacks),
                   tuple(p.templates_per_victim), p.oracle, p.oracle_queries)


@dataclass
class Attacked:
    """What every row's privacy stage shares: the split, the attacker's kit, the judges and the
    unprotected system's impostor scores (its thresholds)."""

    split: Split
    kit: AttackerKit
    judges: dict[str, Judge]
    raw_impostor: np.ndarray
    victims: np.ndarray          # the victims' labels, in source order
    sources: np.ndarray          # their source faces (the stolen templates' photos)
    attacker_data: dict | None = None  # --attacker-data: what the attacker's photos were (else the split's)



@dataclass
class RowAttacks:
    """A row after its attack stage: its estimates so far (utility, unlinkability) and what the judging
    stage needs: per attacked key scenario the reconstructions, and the oracle's. Plain data: on a cluster
    the two stages may run on two workers."""

    spec: str
    params: dict
    row: RowEstimates
    scenarios: list[tuple[str, Reconstructions]]           # (key, reconstructions), the headline key first
    oracle: tuple[Reconstructions, object] | None = None   # (reconstructions, OracleResult)
    templates: Templates | None = None                     # in-process only: the judging stage reuses them


@dataclass
class RowJob:
    """What every row of a run shares: its settings (:class:`RowSettings`), the embedded photos, the
    defender's enrolments (``fit_pos``) and, with attacks, :class:`Attacked`. A row executor
    (:mod:`facepii.row_executor`) calls :meth:`attacks` then :meth:`judging` for each (spec, params), in this
    process or on Dask workers."""

    settings: RowSettings
    embedded: EmbeddedSet
    fit_pos: np.ndarray | None
    attacked: Attacked | None

    def attacks(self, spec: str, params: dict, keep_templates: bool = True) -> RowAttacks:
        """The row's first stage (:func:`row_attacks`)."""
        return row_attacks(self.settings, self.embedded, spec, params, self.fit_pos, self.attacked, keep_templates)

    def judging(self, ra: RowAttacks) -> tuple[RowEstimates, np.ndarray | None]:
        """The row's second stage (:func:`row_judging`); without attacks the first stage's estimates."""
        if self.attacked is None:
            return ra.row, None
        return row_judging(self.settings, self.embedded, ra, self.fit_pos, self.attacked)

    def baselines(self) -> dict:
        """The empirical floors (a random auxiliary face, the mean face) through the judges."""
        a = self.attacked
        return judge_baselines(a.judges, baseline_faces(a.kit.aux_faces, len(a.victims), self.settings.seed),
                               a.victims, self.settings.bootstrap, self.settings.seed)


def row_attacks(s: RowSettings, embedded: EmbeddedSet, spec: str, params: dict, fit_pos,
                attacked: Attacked | None, keep_templates: bool = True) -> RowAttacks:
    """A row's first stage: templates, utility and unlinkability, and with attacks every key scenario's
    (and the oracle's) reconstructions."""
    label = row_label(spec, params)
    with progress.stage(f"row {label}: templates, utility, unlinkability"):
        t = protect(embedded, spec, params, fit_pos, s.key, s.seed)
        row = row_estimates(embedded, t, fit_pos, s)
    out = RowAttacks(spec, params, row, [], templates=t if keep_templates else None)
    if attacked is None:
        return out
    split, kit = attacked.split, attacked.kit
    for i, key in enumerate(t.scenarios):
        if t.defense.encrypted and key == "secret":
            row.privacy_key_secret = PrivacyEstimates("", {}, key, not_applicable=CIPHERTEXT)
            continue
        ks = list(s.templates_per_victim if i == 0 else s.templates_per_victim[:1])  # further K: headline key only
        many = f" (K = {', '.join(map(str, ks))} templates per victim)" if ks != [1] else ""
        with progress.stage(f"row {label}: attacks" + (f" (key {key})" if t.defense.keyed else "") + many):
            out.scenarios.append((key, reconstruct(kit, t, key, split, embedded.labels, s.attacks, ks)))
    if s.oracle != "none":
        budget = oracle_queries(s.oracle, s.oracle_queries)
        threshold = system_view(embedded, t, split, kit.target, s.seed)["threshold"]
        with progress.stage(f"row {label}: {s.oracle} oracle ({budget} queries per victim), attacks"):
            out.oracle = oracle_attack(kit, t, embedded, split, s.oracle, budget, threshold, s.attacks)
    return out


def row_judging(s: RowSettings, embedded: EmbeddedSet, ra: RowAttacks, fit_pos, attacked: Attacked
                ) -> tuple[RowEstimates, np.ndarray]:
    """A row's second stage: the judges on every reconstruction, irreversibility, the oracle's figures.
    Returns the row's estimates and its worst reconstructions."""
    label = row_label(ra.spec, ra.params)
    t = ra.templates if ra.templates is not None else protect(embedded, ra.spec, ra.params, fit_pos, s.key, s.seed)
    split, kit, judges, row = attacked.split, attacked.kit, attacked.judges, ra.row
    system = system_view(embedded, t, split, kit.target, s.seed)
    worst_faces = None
    for i, (key, r) in enumerate(ra.scenarios):
        with progress.stage(f"row {label}: judging"):
            block = privacy_block(judges, _judge_all(judges, r.faces, attacked, s), key if t.defense.keyed else None)
        block.queries = r.queries
        _keep_judge_scores(row, block, judges, "" if i == 0 else f" (key {key})")
        for k, (faces_k, queries_k) in r.more.items():
            with progress.stage(f"row {label}: judging, {k} templates per victim"):
                bk = privacy_block(judges, _judge_all(judges, faces_k, attacked, s),
                                   key if t.defense.keyed else None)
            bk.queries = queries_k
            row.privacy_templates[k] = bk
            _keep_judge_scores(row, bk, judges, f" ({k} templates per victim)")
        if i == 0:
            row.privacy = block
            worst_faces = r.faces[block.attack]
            with progress.stage(f"row {label}: irreversibility"):
                row.irreversibility = row_irreversibility(embedded, split, r.recovered, key, worst_faces, judges,
                                                          system, attacked.raw_impostor, s.bootstrap, s.seed)
        else:
            row.privacy_key_secret = block
    if ra.oracle is not None:
        r, res = ra.oracle
        with progress.stage(f"row {label}: judging the oracle's faces"):
            block = privacy_block(judges, _judge_all(judges, r.faces, attacked, s), None)
        block.oracle = oracle_summary(res, embedded, split, attacked.raw_impostor, s.bootstrap, s.seed)
        row.oracle = block
        _keep_judge_scores(row, block, judges, f" ({s.oracle} oracle)")
    return row, worst_faces


def _keep_judge_scores(row: RowEstimates, block: PrivacyEstimates, judges, scenario: str) -> None:
    """The judges' scores behind a privacy block's figures, for the score files (when asked for)."""
    if row.scores is None:
        return
    thresholds = {j.encoder.name: j.threshold for j in judges.values()}
    for attack, figs in block.per_attack.items():
        for name, M in figs.scores.items():
            row.scores.judges.append(JudgeScores(attack + scenario, name, np.asarray(M, np.float32),
                                                 float(thresholds[name])))


def _judge_all(judges, faces: dict, attacked: Attacked, s: RowSettings) -> dict[str, AttackFigures]:
    """Every attack's faces through the judges: attack -> figures. Attacks that made the very same faces
    (e.g. ``inverse`` and ``decoder`` on raw templates: one decoder) are judged once."""
    out, seen = {}, {}
    for a, f in faces.items():
        h = hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest()
        if h not in seen:
            seen[h] = judge_faces(judges, f, attacked.victims, attacked.sources, s.bootstrap, s.seed)
        out[a] = seen[h]
    return out


def row_estimates(embedded, t: Templates, fit_pos, s: RowSettings) -> RowEstimates:
    """A row's utility and ISO/IEC 30136 unlinkability/renewability (no attacks)."""
    row = utility_row(embedded, t, fit_pos, s.bootstrap, s.seed, s.max_memory, s.scores)
    row.unlinkability = unlinkability(embedded, t, s.bootstrap, s.seed)
    return row
