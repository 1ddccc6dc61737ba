"""ISO/IEC 30136 figures of one defense setting, typed: unlinkability and renewability
(:class:`Unlinkability`), irreversibility (:class:`Irreversibility`: ISR per inversion method, SAR type I
and II of the reconstructed faces as :class:`SarLevels`). A part of :class:`facepii.estimates.RowEstimates`;
``to_dict`` writes report.json's form, ``from_dict`` reads it back checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from facepii import labels as K
from facepii.errors import ReportError
from facepii.metrics import Estimate
from facepii.readback import RATE, SIMILARITY, est_from, nan_estimate, order_key, table


@dataclass
class Unlinkability:
    """Unlinkability (D_sys) and renewability of one defense setting (ISO/IEC 30136)."""

    scenario: str
    dsys: Estimate
    mated: int
    nonmated: int
    histogram: dict
    renewal_match: Estimate               # old templates still matching the re-issued one, FMR 1e-3
    renewal_threshold: float
    renewal_impostor_pairs: int

    def to_dict(self) -> dict:
        return {"scenario": self.scenario,
                "unlinkability": {"dsys": self.dsys.to_dict(), "mated": self.mated, "nonmated": self.nonmated,
                                  "histogram": self.histogram},
                "renewability": {"old_template_match@fmr=1e-3": self.renewal_match.to_dict(),
                                 "threshold@fmr=1e-3": self.renewal_threshold,
                                 "impostor_pairs": self.renewal_impostor_pairs}}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> Unlinkability | None:
        u = table(d.get("unlinkability"), f"{where}.unlinkability")
        r = table(d.get("renewability"), f"{where}.renewability")
        if not u and not r:
            return None
        return cls(str(d.get("scenario", "")), est_from(u.get("dsys"), f"{where}.unlinkability.dsys") or nan_estimate(),
                   u.get("mated"), u.get("nonmated"), table(u.get("histogram"), f"{where}.unlinkability.histogram"),
                   est_from(r.get("old_template_match@fmr=1e-3"), f"{where}.renewability") or nan_estimate(),
                   r.get("threshold@fmr=1e-3"), r.get("impostor_pairs"))


@dataclass
class SarLevels:
    """Success attack rates of reconstructions at several FMRs, each with its operating point, and the curve."""

    sar: dict[str, Estimate]              # "1e-2" -> SAR
    operating_points: dict[str, dict]     # "1e-2" -> {threshold, fmr_reached, impostor_pairs}
    curve: dict                           # {"fmr": [...], "sar": [...]}

    def to_dict(self) -> dict:
        out: dict = {}
        for k in self.sar:
            out[f"sar@fmr={k}"] = self.sar[k].to_dict()
            if k in self.operating_points:
                out[f"operating_point@fmr={k}"] = self.operating_points[k]
        out["curve"] = self.curve
        return out

    @classmethod
    def from_dict(cls, d: Any, where: str) -> SarLevels:
        d = table(d, where)
        sar, ops = {}, {}
        for k, v in d.items():
            if k.startswith("sar@fmr="):
                sar[k.split("=", 1)[1]] = est_from(v, f"{where}.{k}")
            elif k.startswith("operating_point@fmr="):
                ops[k.split("=", 1)[1]] = table(v, f"{where}.{k}")
        return cls(sar, ops, table(d.get("curve"), f"{where}.curve"))


@dataclass
class Irreversibility:
    """ISO/IEC 30136 irreversibility: template inversion (ISR per method) and face-level SAR type I / II."""

    key: str
    per_method: dict[str, dict[str, Estimate]]   # method -> isr@fmr=..., cosine_to_source
    thresholds: dict[str, dict]                  # the unprotected system's operating points
    type1: SarLevels                             # through the target system and the defense
    type2: SarLevels                             # through the independent judge
    judge: str

    @property
    def method(self) -> str:
        """The better inversion: the higher ISR at FMR 1e-3, then at 1e-4; the first on a tie."""
        k1, k2 = K.isr_key(1e-3), K.isr_key(1e-4)
        per = self.per_method
        return max(per, key=lambda m: (order_key(per[m].get(k1)), order_key(per[m].get(k2))))

    @property
    def best(self) -> dict[str, Estimate]:
        return self.per_method[self.method]

    def to_dict(self) -> dict:
        return {"method": self.method, "key": self.key, **{k: v.to_dict() for k, v in self.best.items()},
                "per_method": {m: {k: v.to_dict() for k, v in f.items()} for m, f in self.per_method.items()},
                "thresholds": self.thresholds,
                "faces": {"type1": self.type1.to_dict(), "type2": self.type2.to_dict(), "judge": self.judge}}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Irreversibility | None:
        if d is None:
            return None
        d = table(d, where)
        per = {str(m): {k: est_from(v, f"{where}.per_method.{m}.{k}", SIMILARITY if k.startswith("cosine") else RATE)
                        for k, v in table(f, where).items()}
               for m, f in table(d.get("per_method"), f"{where}.per_method").items()}
        if not per:
            raise ReportError(f"{where}.per_method: no inversion method's figures.")
        faces = table(d.get("faces"), f"{where}.faces")
        return cls(str(d.get("key", "")), per, table(d.get("thresholds"), f"{where}.thresholds"),
                   SarLevels.from_dict(faces.get("type1"), f"{where}.faces.type1"),
                   SarLevels.from_dict(faces.get("type2"), f"{where}.faces.type2"), str(faces.get("judge", "")))
