"""The Report: what an evaluation found, as a table, JSON and Markdown.

JSON schema ``facepii.report/1``::

    {"schema": "facepii.report/1",
     "dataset": {spec, source, n_listed, n_used, n_identities, n_skipped,
                 skipped: [{path, reason}], excluded: [{path, reason}]},
     "encoder": {name, version, dim, comparator},
     "seed": N, "versions": {...}, "settings": {...},
     "rows": [{"defense": str, "params": {name: value}, "epsilon": float|null,
               "delta": float|null, "template_bytes": int,
               "utility": {"tar@far=1e-2": {"value", "ci95": [lo, hi]}, "tar@far=1e-3": ...,
                           "tar@far=1e-4": ..., "eer": ..., "auc": ..., "rank1": ...},
               "utility_drop": float|null}]}

Later sections (privacy, threat model, split, gate verdicts) extend it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "facepii.report/1"

UTILITY_COLUMNS = [
    ("tar@far=1e-2", "TAR@1e-2"),
    ("tar@far=1e-3", "TAR@1e-3"),
    ("tar@far=1e-4", "TAR@1e-4"),
    ("eer", "EER"),
    ("auc", "AUC"),
    ("rank1", "rank-1"),
]


@dataclass
class Report:
    dataset: dict
    encoder: dict
    seed: int
    rows: list[dict]
    versions: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # threat_model, split, gate, ... (later sections)
    schema: str = SCHEMA

    # ---- serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        out = {"schema": d.pop("schema"), **d}
        out.update(extra)
        return _jsonable(out)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: dict) -> Report:
        d = dict(d)
        known = {"schema", "dataset", "encoder", "seed", "rows", "versions", "settings"}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(dataset=d.get("dataset", {}), encoder=d.get("encoder", {}), seed=d.get("seed", 0),
                   rows=d.get("rows", []), versions=d.get("versions", {}),
                   settings=d.get("settings", {}), extra=extra, schema=d.get("schema", SCHEMA))

    @classmethod
    def from_json(cls, path: str | Path) -> Report:
        from facepii.errors import FacepiiError

        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise FacepiiError(f"{p}: no such report file.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FacepiiError(f"{p}: not a JSON report ({exc}).") from None
        if not isinstance(d, dict) or not str(d.get("schema", "")).startswith("facepii.report/"):
            schema = d.get("schema") if isinstance(d, dict) else None
            raise FacepiiError(f"{p}: not a facepii report (schema {schema!r}).")
        return cls.from_dict(d)

    # ---- human-readable --------------------------------------------------
    def table(self, fmt: str = "simple") -> str:
        from tabulate import tabulate

        headers, body = self.table_rows()
        return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)

    def table_rows(self) -> tuple[list[str], list[list[str]]]:
        stolen = any(r.get("utility_stolen_token") for r in self.rows)
        headers = ["defense", "params", "eps"] + [h for _, h in UTILITY_COLUMNS] + ["drop", "bytes"]
        if stolen:
            headers.append("TAR@1e-3 stolen token")
        body = []
        for r in self.rows:
            u = r.get("utility", {})
            n_imp = (r.get("pairs") or {}).get("impostor")
            body.append([
                r["defense"], format_params(r.get("params", {})), format_eps(r),
                *[fmt_est(u.get(k)) + _few(k, n_imp) for k, _ in UTILITY_COLUMNS],
                "" if r.get("utility_drop") is None else f"{r['utility_drop']:+.3f}",
                str(r.get("template_bytes", "")),
            ] + ([fmt_est((r.get("utility_stolen_token") or {}).get("tar@far=1e-3"))] if stolen else []))
        return headers, body

    def footnotes(self) -> list[str]:
        notes = ["value [95% interval]; drop = unprotected TAR@1e-3 minus this row's; "
                 "bytes = storage per template."]
        if any(r.get("utility_stolen_token") for r in self.rows):
            notes.append("stolen token: per-user-key defenses measured again with every template made with "
                         "one key (an impostor holding the victim's key), the honest worst case.")
        if any(_few(k, (r.get("pairs") or {}).get("impostor")) for r in self.rows for k, _ in UTILITY_COLUMNS):
            notes.append("* this FAR rests on fewer than 10 impostor scores above the threshold: "
                         "too few impostor pairs to measure it; use more identities.")
        return notes

    def summary_lines(self) -> list[str]:
        d = self.dataset
        lines = [
            f"dataset: {d.get('source')}  identities: {d.get('n_identities')}  images used: "
            f"{d.get('n_used')} of {d.get('n_listed')}  skipped: {d.get('n_skipped')}  "
            f"excluded: {len(d.get('excluded', []))}",
            f"encoder: {self.encoder.get('name')} ({self.encoder.get('version')}, "
            f"{self.encoder.get('comparator')})  seed: {self.seed}  "
            f"intervals: 95% bootstrap over identities ({self.settings.get('n_boot')} replicates)",
        ]
        reasons: dict[str, int] = {}
        for s in d.get("skipped", []):
            key = s["reason"].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        if reasons:
            lines.append("skipped: " + "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])))
        return lines

    def markdown(self) -> str:
        parts = ["# facepii report", ""]
        parts += [f"- {line}" for line in self.summary_lines()]
        parts += ["", self.table("github"), ""] + self.footnotes() + [""]
        skipped = self.dataset.get("skipped", [])
        if skipped:
            parts += ["## Skipped images", "", "| path | reason |", "|---|---|"]
            parts += [f"| {s['path']} | {s['reason']} |" for s in skipped]
            parts.append("")
        return "\n".join(parts)


# ---------------------------------------------------------------- formatting


def fmt_est(e: Any, digits: int = 3) -> str:
    """``0.791 [0.752, 0.826]`` from an Estimate dict; blank when missing."""
    if not e:
        return ""
    v = e.get("value")
    if v is None:
        return "n/a"
    lo, hi = (e.get("ci95") or [None, None])[:2]
    if lo is None or hi is None:
        return f"{v:.{digits}f}"
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _few(key: str, n_impostor: int | None) -> str:
    """'*' when a TAR@FAR figure rests on fewer than 10 impostor scores."""
    if not key.startswith("tar@far=") or not n_impostor:
        return ""
    far = float(key.split("=", 1)[1])
    return "*" if far * n_impostor < 10 else ""


def format_params(params: dict) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in params.items())


def format_eps(row: dict) -> str:
    eps = row.get("epsilon")
    if eps is None:
        return ""
    delta = row.get("delta")
    return f"{eps:.3g}" + (f" (d={delta:.0e})" if delta else "")


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _jsonable(x: Any) -> Any:
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if np.isfinite(f) else None
    if isinstance(x, np.bool_):
        return bool(x)
    if hasattr(x, "to_dict"):
        return _jsonable(x.to_dict())
    return x
