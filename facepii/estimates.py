"""Typed estimates: what the evaluation found for one defense setting (a report row).

A row (:class:`facepii.rows.RowJob`) produces a :class:`RowEstimates`; the report holds them,
its renderers read their fields, and they are serialised once, at the edge, by ``to_dict`` into
report.json's schema ``facepii.report/1`` (``from_dict`` reads a report back, checking every
figure: a report file is untrusted input, :mod:`facepii.readback`). The JSON keys are written here and in
:mod:`facepii.iso_estimates` (the ISO/IEC 30136 parts), nowhere else.

    RowEstimates
      utility: UtilityEstimates (TAR@FAR, EER, AUC, rank-1), stolen-token utility
      unlinkability: Unlinkability (ISO/IEC 30136 D_sys, renewability)
      irreversibility: Irreversibility (ISR per inversion method, SAR type I / II)
      privacy, privacy_key_secret, oracle: PrivacyEstimates
          per attack: AttackFigures (every judge's JudgeFigures, SSIM); the worst attack, each
          judge's worst attack and the worst judge are derived from them, never stored apart
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from facepii import labels as K
from facepii.errors import ReportError
from facepii.iso_estimates import Irreversibility, Unlinkability
from facepii.metrics import Estimate
from facepii.readback import (
    COUNT,
    RATE,
    SIMILARITY,
    det_from,
    est_from,
    is_number,
    nan_estimate,
    order_key,
    table,
)

# ---------------------------------------------------------------- utility


UTILITY_KEYS = (*(K.tar_key(f) for f in K.FAR_LEVELS), "eer", "auc", "rank1")


@dataclass
class UtilityEstimates:
    """Verification and identification of protected templates against protected templates."""

    figures: dict[str, Estimate]   # tar@far=..., eer, auc, rank1 (keys of UTILITY_KEYS)

    def tar(self, far: float) -> Estimate | None:
        return self.figures.get(K.tar_key(far))

    @property
    def tar_1e3(self) -> Estimate | None:
        return self.figures.get(K.TAR_1E3)

    def get(self, key: str) -> Estimate | None:
        return self.figures.get(key)

    def to_dict(self) -> dict:
        return {k: v.to_dict() for k, v in self.figures.items()}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> UtilityEstimates:
        d = table(d, where)
        return cls({k: est_from(v, f"{where}.{k}") for k, v in d.items() if k in UTILITY_KEYS or isinstance(v, dict)})


# ---------------------------------------------------------------- privacy


@dataclass
class JudgeFigures:
    """One judge's re-identification of one attack's faces (rates over victims, with intervals)."""

    rank1: Estimate
    rank5: Estimate
    leakage_ratio: Estimate
    sar: Estimate                  # at the judge's FMR 1e-3 threshold
    baseline_rank1: float | None = None

    @property
    def order(self) -> tuple[float, float]:
        """How attacks and judges are ranked: rank-1, then SAR."""
        return order_key(self.rank1), order_key(self.sar)

    def to_dict(self, with_baseline: bool = True) -> dict:
        out = {K.RANK1: self.rank1.to_dict(), "rank5": self.rank5.to_dict(), K.LEAKAGE: self.leakage_ratio.to_dict(),
               K.SAR_1E3: self.sar.to_dict()}
        if with_baseline:
            out["baseline_rank1"] = self.baseline_rank1
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str) -> JudgeFigures:
        d = table(d, where)
        get = (lambda k, b=RATE: est_from(d.get(k), f"{where}.{k}", b) or nan_estimate())  # noqa: E731
        b = d.get("baseline_rank1")
        if b is not None and not (is_number(b) and 0 < b <= 1):
            raise ReportError(f"{where}.baseline_rank1: {b!r} is not a rate.")
        return cls(get(K.RANK1), get("rank5"), get(K.LEAKAGE, COUNT), get(K.SAR_1E3), b)


#: the realism figures and the range each can take (nearest_real: the judge's own score units)
REALISM = {"sharpness": COUNT, "face_found": RATE, "detector_score": RATE, "nearest_real": None}


@dataclass
class AttackFigures:
    """One attack's faces, judged: by the headline judge, by every independent judge, by the target."""

    judge: JudgeFigures                        # the headline (first) judge
    ssim: Estimate
    target_judge: JudgeFigures                 # the target model as judge: the white-box upper bound
    judges: dict[str, JudgeFigures] | None = None  # every independent judge by name (several judges)
    #: each judge's (victims x gallery) scores behind these figures, by judge name, target included: for
    #: the score files only (never serialised, absent from a report read back)
    scores: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: what a person would see (facepii.judging.realism): sharpness relative to real photos, the share a face
    #: detector finds a face in and its score, the headline judge's score to the nearest real stranger
    realism: dict[str, Estimate] | None = None

    def to_dict(self) -> dict:
        out = {**self.judge.to_dict(), "ssim": self.ssim.to_dict(), "target_judge": self.target_judge.to_dict()}
        if self.judges is not None:
            # the headline judge's entry repeats its rates (schema facepii.report/1: without the baseline)
            out["judges"] = {n: j.to_dict(with_baseline=j is not self.judge) for n, j in self.judges.items()}
        if self.realism is not None:
            out["realism"] = {k: e.to_dict() for k, e in self.realism.items()}
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str, headline: str) -> AttackFigures:
        d = table(d, where)
        judge = JudgeFigures.from_dict(d, where)
        judges = None
        if d.get("judges") is not None:
            js = table(d["judges"], f"{where}.judges")
            judges = {str(n): (judge if n == headline else JudgeFigures.from_dict(j, f"{where}.judges.{n}"))
                      for n, j in js.items()}
        looks = None
        if d.get("realism") is not None:
            r = table(d["realism"], f"{where}.realism")
            looks = {k: est_from(r.get(k), f"{where}.realism.{k}", bounds) or nan_estimate()
                     for k, bounds in REALISM.items() if k in r}
        return cls(judge, est_from(d.get("ssim"), f"{where}.ssim", SIMILARITY) or nan_estimate(),
                   JudgeFigures.from_dict(d.get("target_judge"), f"{where}.target_judge"), judges, realism=looks)


@dataclass
class PrivacyEstimates:
    """One row and key scenario (or the oracle attacker): every attack's figures; the worst derived."""

    judge: str                               # the headline judge's name
    per_attack: dict[str, AttackFigures]
    key: str | None = None                   # the key scenario (keyed defenses)
    oracle: dict | None = None               # the oracle's queries and recovered embeddings (oracle rows)
    human: dict | None = None                # a lineup study's figures (facepii lineup score)
    not_applicable: str | None = None        # why no attack applies (ciphertexts with a secret key)
    queries: dict | None = None              # a black-box attacker's queries to the target

    @property
    def attack(self) -> str | None:
        """The worst attack: the highest rank-1 (then SAR) of the headline judge; the first on a tie."""
        if not self.per_attack:
            return None
        return max(self.per_attack, key=lambda a: self.per_attack[a].judge.order)

    @property
    def headline(self) -> JudgeFigures | None:
        a = self.attack
        return None if a is None else self.per_attack[a].judge

    @property
    def worst(self) -> AttackFigures | None:
        a = self.attack
        return None if a is None else self.per_attack[a]

    @property
    def several_judges(self) -> bool:
        w = self.worst
        return w is not None and w.judges is not None

    def judges(self) -> dict[str, tuple[str, JudgeFigures]]:
        """Per independent judge: its own worst attack and figures (several judges only)."""
        if not self.several_judges:
            return {}
        out = {}
        for j in self.worst.judges:
            a = max(self.per_attack, key=lambda x: self.per_attack[x].judges[j].order)
            out[j] = (a, self.per_attack[a].judges[j])
        return out

    @property
    def worst_judge(self) -> str | None:
        every = self.judges()
        return max(every, key=lambda j: every[j][1].order) if every else None

    def to_dict(self) -> dict:
        if self.not_applicable is not None:
            return {"key": self.key, "not_applicable": self.not_applicable}
        worst = self.worst
        block = {"attack": self.attack, "judge": self.judge, **worst.judge.to_dict(), "ssim": worst.ssim.to_dict(),
                 "target_judge": worst.target_judge.to_dict(),
                 "per_attack": {a: f.to_dict() for a, f in self.per_attack.items()}}
        if self.key is not None:
            block["key"] = self.key
        every = self.judges()
        if every:
            block["judges"] = {j: {"attack": a, **f.to_dict(with_baseline=f is not self.per_attack[a].judge)}
                               for j, (a, f) in every.items()}
            block["worst_judge"] = self.worst_judge
        if self.queries is not None:
            block["queries"] = self.queries
        if self.oracle is not None:
            block["oracle"] = self.oracle
        if self.human is not None:
            block["human"] = self.human
        return block

    @classmethod
    def from_dict(cls, d: Any, where: str) -> PrivacyEstimates | None:
        if d is None:
            return None
        d = table(d, where)
        if d.get("not_applicable") is not None:
            return cls("", {}, d.get("key"), not_applicable=str(d["not_applicable"]))
        judge = d.get("judge")
        if not isinstance(judge, str):
            raise ReportError(f"{where}.judge: not a judge's name, got {judge!r}.")
        per = table(d.get("per_attack"), f"{where}.per_attack")
        if not per:
            raise ReportError(f"{where}.per_attack: no attack's figures.")
        for k in ("oracle", "human", "queries"):
            if d.get(k) is not None and not isinstance(d[k], dict):
                raise ReportError(f"{where}.{k}: not a table.")
        per_attack = {str(a): AttackFigures.from_dict(f, f"{where}.per_attack.{a}", judge) for a, f in per.items()}
        names = {None if f.judges is None else tuple(f.judges) for f in per_attack.values()}
        if len(names) > 1:
            raise ReportError(f"{where}.per_attack: the attacks were judged by different judges "
                              f"({sorted(map(str, names))}).")
        return cls(judge, per_attack, d.get("key"), d.get("oracle"), d.get("human"), queries=d.get("queries"))


# ---------------------------------------------------------------- a row


def templates_from(d: Any, where: str) -> dict[int, PrivacyEstimates]:
    """``{"2": privacy, "4": privacy}`` -> {2: ..., 4: ...}: keys whole numbers 1..1000, each a privacy block."""
    out = {}
    for k, b in table(d, where).items():
        # as facepii writes it: ASCII digits, no leading zero ("2" and "02" would be one K, the second silently
        # replacing the first; "²" passes str.isdigit() but not int())
        if not (isinstance(k, str) and re.fullmatch(r"[1-9][0-9]{0,3}", k) and int(k) <= 1000):
            raise ReportError(f"{where}: {k!r} is not a number of templates per victim.")
        block = PrivacyEstimates.from_dict(b, f"{where}.{k}")
        if block is None or block.not_applicable is not None:
            raise ReportError(f"{where}.{k}: not the figures of an attack.")
        out[int(k)] = block
    return out


@dataclass
class RowEstimates:
    """Everything the evaluation found for one defense setting."""

    defense: str
    params: dict[str, Any]
    utility: UtilityEstimates
    epsilon: float | None = None
    delta: float | None = None
    template_bytes: int | None = None
    all_params: dict[str, Any] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)       # genuine / impostor pairs behind the utility
    impostor_sampling: dict | None = None                      # past --max-memory: the sample and its share
    det: dict | None = None                                    # DET curve and operating points (det_from)
    key_mode: str | None = None
    encrypted_matching: dict | None = None
    utility_stolen_token: UtilityEstimates | None = None
    unlinkability: Unlinkability | None = None
    irreversibility: Irreversibility | None = None
    privacy: PrivacyEstimates | None = None                    # the headline key scenario
    privacy_key_secret: PrivacyEstimates | None = None         # keyed rows with --key both: the secret key
    oracle: PrivacyEstimates | None = None
    #: --templates-per-victim 1,2,4: the headline key scenario's privacy with each further K stolen templates
    #: per victim (``privacy`` holds the first K's)
    privacy_templates: dict[int, PrivacyEstimates] = field(default_factory=dict)
    utility_drop: float | None = None
    pareto: bool | None = None
    extras: dict[str, Any] = field(default_factory=dict)       # fields of a report read back that facepii
    #                                                           does not know (kept, written back unchanged)
    scores: Any = field(default=None, compare=False, repr=False)  # facepii.scores.RowScores: for the score
    #                                                           files only (never serialised)

    @property
    def label(self) -> str:
        return K.row_label(self.defense, self.params)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"defense": self.defense, "params": self.params, "epsilon": self.epsilon,
                               "delta": self.delta, "template_bytes": self.template_bytes,
                               "all_params": self.all_params, "utility": self.utility.to_dict(), "pairs": self.pairs}
        if self.impostor_sampling is not None:
            out["impostor_sampling"] = self.impostor_sampling
        if self.det:
            out["det"] = self.det
        out["key_mode"] = self.key_mode
        if self.encrypted_matching is not None:
            out["encrypted_matching"] = self.encrypted_matching
        if self.utility_stolen_token is not None:
            out["utility_stolen_token"] = self.utility_stolen_token.to_dict()
        iso = None if self.unlinkability is None else self.unlinkability.to_dict()
        if self.irreversibility is not None:
            iso = {**(iso or {}), "irreversibility": self.irreversibility.to_dict()}
        out["iso30136"] = iso
        if self.privacy is not None:
            out[K.PRIVACY] = self.privacy.to_dict()
        if self.privacy_key_secret is not None:
            out[K.PRIVACY_SECRET] = self.privacy_key_secret.to_dict()
        if self.oracle is not None:
            out[K.PRIVACY_ORACLE] = self.oracle.to_dict()
        if self.privacy_templates:
            out[K.PRIVACY_TEMPLATES] = {str(k): b.to_dict() for k, b in sorted(self.privacy_templates.items())}
        out["utility_drop"] = self.utility_drop
        if self.pareto is not None:
            out["pareto"] = self.pareto
        out.update(self.extras)
        return out

    KNOWN = ("defense", "params", "epsilon", "delta", "template_bytes", "all_params", "utility", "pairs",
             "impostor_sampling", "det", "key_mode", "encrypted_matching", "utility_stolen_token", "iso30136",
             K.PRIVACY, K.PRIVACY_SECRET, K.PRIVACY_ORACLE, K.PRIVACY_TEMPLATES, "utility_drop", "pareto")

    @classmethod
    def from_dict(cls, d: Any, where: str) -> RowEstimates:
        if not (isinstance(d, dict) and isinstance(d.get("defense"), str) and isinstance(d.get("params", {}), dict)):
            raise ReportError(f"{where} is not a report row (a table with a 'defense' name and 'params').")
        iso = table(d.get("iso30136"), f"{where}.iso30136")
        stolen = d.get("utility_stolen_token")
        drop = d.get("utility_drop")
        if drop is not None and not is_number(drop):
            raise ReportError(f"{where}.utility_drop: {drop!r} is not a number.")
        return cls(
            defense=d["defense"], params=d.get("params", {}),
            utility=UtilityEstimates.from_dict(d.get("utility"), f"{where}.utility"),
            epsilon=d.get("epsilon"), delta=d.get("delta"), template_bytes=d.get("template_bytes"),
            all_params=table(d.get("all_params"), f"{where}.all_params"),
            pairs=table(d.get("pairs"), f"{where}.pairs"),
            impostor_sampling=d.get("impostor_sampling"), det=det_from(d.get("det"), f"{where}.det"),
            key_mode=d.get("key_mode"),
            encrypted_matching=d.get("encrypted_matching"),
            utility_stolen_token=None if stolen is None
            else UtilityEstimates.from_dict(stolen, f"{where}.utility_stolen_token"),
            unlinkability=Unlinkability.from_dict(iso, f"{where}.iso30136") if iso else None,
            irreversibility=Irreversibility.from_dict(iso.get("irreversibility"), f"{where}.iso30136.irreversibility"),
            privacy=PrivacyEstimates.from_dict(d.get(K.PRIVACY), f"{where}.privacy"),
            privacy_key_secret=PrivacyEstimates.from_dict(d.get(K.PRIVACY_SECRET), f"{where}.privacy_key_secret"),
            oracle=PrivacyEstimates.from_dict(d.get(K.PRIVACY_ORACLE), f"{where}.privacy_oracle"),
            privacy_templates=templates_from(d.get(K.PRIVACY_TEMPLATES), f"{where}.{K.PRIVACY_TEMPLATES}"),
            utility_drop=drop, pareto=d.get("pareto"),
            extras={k: v for k, v in d.items() if k not in cls.KNOWN})
