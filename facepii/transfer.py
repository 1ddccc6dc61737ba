"""Several target models (``--encoder sface,dlib``): does leakage transfer between face models?

Each target is evaluated in turn on the same photos, split and seed, with every OTHER target (and the
``--judge`` models) as independent judges; each target also judges its own reconstructions (the
white-box upper bound, the matrix's diagonal). The transfer matrix holds, for every target (row) and
judge (column), the rank-1 and SAR of the unprotected row's reconstructions, each judge with the attack
it re-identifies best. A target without a differentiable graph (dlib) is attacked with queries only
(``--knowledge black``), said in the matrix's notes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from facepii import progress
from facepii.encoder_base import differentiable
from facepii.encoders import get_encoder
from facepii.labels import SAR_1E3, fmt_est
from facepii.pipeline import run
from facepii.report.render import _md_cell

SCHEMA = "facepii.transfer/1"


def slug(spec: str) -> str:
    """A folder name for a target's outputs: ``onnx:/x/m.onnx?size=96`` -> ``onnx-m.onnx``."""
    name, _, arg = spec.partition(":")
    if arg:
        name += "-" + arg.split("?")[0].replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "target"


@dataclass
class Transfer:
    """The per-target evaluations and the target x judge matrix."""

    targets: list[str]
    evaluations: list[Any]                      # facepii.pipeline.Evaluation per target
    matrix: dict[str, dict[str, dict]] = field(default_factory=dict)  # target -> judge -> figures
    notes: list[str] = field(default_factory=list)

    @property
    def judges(self) -> list[str]:
        """Columns: the targets that judge, in the rows' order (the diagonal is the diagonal), then the
        judges that are not targets, in first-seen order."""
        seen: list[str] = []
        for row in self.matrix.values():
            seen += [j for j in row if j not in seen]
        return [t for t in self.matrix if t in seen] + [j for j in seen if j not in self.matrix]

    def rows(self) -> tuple[list[str], list[list[str]]]:
        headers = ["target \\ judge", *self.judges]
        body = []
        for t, row in self.matrix.items():
            line = [t]
            for j in self.judges:
                c = row.get(j)
                line.append("" if c is None else
                            f"{fmt_est(c['rank1'])} / SAR {fmt_est(c[SAR_1E3])}"
                            + (" (upper bound)" if c.get("upper_bound") else ""))
            body.append(line)
        return headers, body

    def table(self, fmt: str = "simple") -> str:
        headers, body = self.rows()
        return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)

    NOTE = ("Cell: rank-1 re-identification [95% interval] / SAR at the judge's own FMR 1e-3 threshold, of the "
            "unprotected row's reconstructions (each judge with the attack it re-identifies best). Row: the "
            "target model the attacker reconstructs from; column: the judge. The diagonal is the target "
            "judging its own reconstructions (white-box upper bound); off the diagonal, leakage that transfers "
            "to another face model.")

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "targets": self.targets, "matrix": self.matrix, "notes": self.notes,
                "reports": {t: ev.report.to_dict() for t, ev in zip(self.targets, self.evaluations)}}

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def markdown(self) -> str:
        headers, body = self.rows()
        # names from a plug-in or a model file are text, never markup
        table = tabulate([[_md_cell(c) for c in r] for r in body], headers=[_md_cell(h) for h in headers],
                         tablefmt="github", disable_numparse=True)
        parts = ["# facepii transfer matrix", "", table, "", self.NOTE, ""]
        parts += [f"- {_md_cell(n)}" for n in self.notes]
        parts += ["", "Each target's full report: " + ", ".join(f"`{slug(t)}/report.md`" for t in self.targets), ""]
        return "\n".join(parts)


def _figures(j) -> dict:
    return {"rank1": j.rank1.to_dict(), "rank5": j.rank5.to_dict(), SAR_1E3: j.sar.to_dict()}


def matrix_row(report, target_name: str) -> dict[str, dict]:
    """One target's row of the matrix from its report's unprotected row: per judge, the attack it
    re-identifies best (rank-1, then SAR), and the target judging itself (the upper bound)."""
    row = next((r for r in report.rows if r.defense == "none" and r.privacy is not None), None)
    if row is None:
        return {}
    p = row.privacy
    per = p.per_attack
    out: dict[str, dict] = {}
    for j, (attack, figures) in (p.judges() or {p.judge: (p.attack, p.headline)}).items():
        out[j] = {"attack": attack, **_figures(figures)}
    best = max(per, key=lambda a: per[a].target_judge.order)
    out[target_name] = {"attack": best, "upper_bound": True, **_figures(per[best].target_judge)}
    return out


def plan(cfg) -> list[tuple[str, Any, list[str]]]:
    """Per target: (spec, its config, notes). Judges: the other targets, then ``--judge``'s models."""
    targets, user = cfg.specs.targets, [s for s in cfg.specs.judges if s is not None]
    out = []
    for t in targets:
        judges = [s for s in targets if s != t] + [s for s in user if s not in targets]
        notes = []
        knowledge = cfg.privacy.knowledge
        if knowledge == "white" and cfg.privacy.attacks and differentiable(get_encoder(t)) is None:
            knowledge = "black"
            notes.append(f"target {t}: no differentiable graph, attacked with queries only (--knowledge black).")
        c = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, encoder=t),
                                privacy=dataclasses.replace(cfg.privacy, judge=",".join(judges) or None,
                                                            knowledge=knowledge))
        out.append((t, c, notes))
    return out


def run_transfer(cfg) -> Transfer:
    steps = plan(cfg)
    evaluations, notes, matrix = [], [], {}
    for t, c, n in steps:
        with progress.stage(f"target {t}"):
            ev = run(c)
        evaluations.append(ev)
        notes += n
        matrix[ev.report.encoder.get("name", t)] = matrix_row(ev.report, ev.report.encoder.get("name", t))
    return Transfer([t for t, _, _ in steps], evaluations, matrix, notes)
