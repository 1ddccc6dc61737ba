"""The Report: what an evaluation found (typed rows), and its JSON form ``facepii.report/1``.

    {"schema": "facepii.report/1",
     "dataset": {spec, source, n_listed, n_used, n_identities, n_skipped,
                 skipped: [{path, reason}], excluded: [{path, reason}]},
     "encoder": {name, version, dim, comparator},
     "seed": N, "versions": {...}, "settings": {...},
     "rows": [RowEstimates.to_dict(), ...],
     ...the report-level sections: threat_model, split, privacy_baselines, judges, attacker, notes,
     gate, human_study}

The rows are :class:`facepii.estimates.RowEstimates`; :meth:`Report.to_dict` serialises them (at
the edge, :mod:`facepii.outputs`), :meth:`Report.from_dict` reads a report back and checks it.
What a report shows, and in which order, is :mod:`facepii.report.sections`; the CLI text, the
Markdown and the HTML page are :mod:`facepii.report.render`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facepii.errors import FacepiiError, ReportError
from facepii.estimates import RowEstimates
from facepii.readback import value

SCHEMA = "facepii.report/1"
MAX_REPORT_BYTES = 256 << 20  # a report facepii writes is a few MB at most


@dataclass
class Report:
    dataset: dict
    encoder: dict
    seed: int
    rows: list[RowEstimates]
    versions: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # threat_model, split, gate, ... (report-level sections)
    schema: str = SCHEMA

    # ---- serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        out = {"schema": self.schema, "dataset": self.dataset, "encoder": self.encoder, "seed": self.seed,
               "rows": [r.to_dict() for r in self.rows], "versions": self.versions, "settings": self.settings}
        out.update(self.extra)
        return jsonable(out)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict, where: str = "report") -> Report:
        known = {"schema", "dataset", "encoder", "seed", "rows", "versions", "settings"}
        rows = d.get("rows", [])
        if not isinstance(rows, list):
            raise ReportError(f"{where}: rows is not a list.")
        for k in ("dataset", "encoder", "versions", "settings"):
            if not isinstance(d.get(k, {}), dict):
                raise ReportError(f"{where}: {k} is not a table.")
        return cls(dataset=d.get("dataset", {}), encoder=d.get("encoder", {}), seed=d.get("seed", 0),
                   rows=[RowEstimates.from_dict(r, f"{where}: row {i}") for i, r in enumerate(rows)],
                   versions=d.get("versions", {}), settings=d.get("settings", {}),
                   extra={k: v for k, v in d.items() if k not in known}, schema=d.get("schema", SCHEMA))

    @classmethod
    def from_json(cls, path: str | Path) -> Report:
        return cls.from_dict(read_report(path), str(path))

    # ---- what the report holds -------------------------------------------
    @property
    def has_privacy(self) -> bool:
        return any(r.privacy is not None for r in self.rows)

    @property
    def has_judges(self) -> bool:
        """Several independent judges (``--judge a,b``): per-judge figures and a worst-judge column."""
        return any(r.privacy is not None and r.privacy.several_judges for r in self.rows)

    @property
    def has_unlinkability(self) -> bool:
        return any(r.unlinkability is not None for r in self.rows)

    @property
    def has_irreversibility(self) -> bool:
        return any(r.irreversibility is not None for r in self.rows)

    @property
    def has_oracle(self) -> bool:
        return any(r.oracle is not None for r in self.rows)

    @property
    def templates_per_victim(self) -> list[int]:
        """The K of --templates-per-victim (the first is the rows' ``privacy``); [1] when not recorded."""
        ks = self.settings.get("templates_per_victim")
        ok = isinstance(ks, list) and ks and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                                                 for k in ks)
        return list(ks) if ok else [1]

    @property
    def has_templates(self) -> bool:
        """Leakage at several K stolen templates per victim."""
        return any(r.privacy_templates for r in self.rows)

    @property
    def templates_ks(self) -> list[int]:
        """Every K of the rows, ascending."""
        ks = {self.templates_per_victim[0]}
        for r in self.rows:
            ks |= set(r.privacy_templates)
        return sorted(ks)

    def privacy_at(self, r, k: int):
        """Row ``r``'s privacy (headline key scenario) with ``k`` stolen templates per victim, or None."""
        return r.privacy if k == self.templates_per_victim[0] else r.privacy_templates.get(k)

    @property
    def judge(self) -> str:
        """The headline judge's name."""
        return next((r.privacy.judge for r in self.rows if r.privacy is not None and r.privacy.judge), "judge")


@dataclass
class Evaluation:
    """A report plus what only ``--out`` writes: reconstructions and the faces they are judged on."""

    report: Report
    reconstructions: dict[int, np.ndarray] = field(default_factory=dict)  # row index -> worst attack's faces
    sources: np.ndarray | None = None    # victims' source faces (the stolen templates' photos)
    gallery: np.ndarray | None = None    # one other photo per victim
    victims: np.ndarray | None = None
    gallery_sets: list[np.ndarray] | None = None  # up to 3 other photos per victim (lineups)
    items: Any = None  # facepii.scores.Items: names of the photos the score files list


def aux_identities(split: dict) -> str:
    """"150", or "1000 (a seeded sample of 24000, --max-aux)" when the attacker's set was sampled."""
    n, avail = split.get("auxiliary_identities"), split.get("auxiliary_identities_available")
    if isinstance(avail, int) and isinstance(n, int) and avail > n:
        return f"{n} (a seeded sample of {avail}, --max-aux)"
    return str(n)


def mark_pareto(rows: list[RowEstimates]) -> None:
    """Mark rows no other row beats on both TAR@1e-3 (higher) and leakage ratio (lower)."""
    pts = [(value(r.utility.tar_1e3), None if r.privacy is None else value(r.privacy.headline.leakage_ratio))
           for r in rows]
    for i, r in enumerate(rows):
        t, lk = pts[i]
        if t is None or lk is None:
            r.pareto = False
            continue
        r.pareto = not any(
            t2 is not None and l2 is not None and t2 >= t and l2 <= lk and (t2 > t or l2 < lk)
            for j, (t2, l2) in enumerate(pts) if j != i)


def read_report(path: str | Path) -> dict:
    """A report file as JSON data (its schema checked; the gate judges its figures itself)."""
    p = Path(path)
    d = read_json(p, "report")
    schema = d.get("schema") if isinstance(d, dict) else None
    if not isinstance(schema, str) or not schema.startswith("facepii.report/"):
        raise FacepiiError(f"{p}: not a facepii report (schema {schema!r}).")
    if schema != SCHEMA:
        raise FacepiiError(f"{p}: a report of schema {schema!r}, which this facepii ({SCHEMA}) does not read; use "
                           "the facepii version that wrote it.")
    return d


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file a user named, with one-line errors for a missing, huge or broken file."""
    p = Path(path)
    try:
        if p.is_dir():
            raise FacepiiError(f"{p}: is a folder, not a {what} file.")
        if p.stat().st_size > MAX_REPORT_BYTES:
            raise FacepiiError(f"{p}: larger than {MAX_REPORT_BYTES >> 20} MB, not a {what} file facepii wrote.")
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FacepiiError(f"{p}: no such {what} file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FacepiiError(f"{p}: not a JSON {what} file ({exc}).") from None
    except RecursionError:
        raise FacepiiError(f"{p}: nested too deeply to be a {what} file facepii wrote.") from None


def jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if np.isfinite(f) else None
    if isinstance(x, np.bool_):
        return bool(x)
    if hasattr(x, "to_dict"):
        return jsonable(x.to_dict())
    return x
