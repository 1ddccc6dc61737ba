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

THREAT_MODEL = (
    "The attacker has stolen the protected templates of the victims. It knows the target encoder "
    "({knowledge}) and the defense's algorithm and public parameters (Kerckhoffs), and holds public "
    "photos of {n_aux} OTHER people (no identity in common with the {n_victims} victims), whose "
    "protected templates it computes itself: the attacks are trained on protected templates "
    "(adaptive). Keyed defenses: {key}. Success: an independent judge ({judge}) matches the "
    "reconstruction to the victim in a gallery of other photos of the {n_victims} victims (never "
    "the photo the template came from). Rates carry 95% bootstrap intervals over victims."
)


def threat_model(knowledge: str, key: str, n_aux: int, n_victims: int, judge: str, judge_is_target: bool,
                 oracle: str = "none", queries: int | None = None) -> str:
    """The threat model paragraph every report with attacks states."""
    from facepii.config import KEY_SCENARIOS, KNOWLEDGE, ORACLES

    note = (" Note: the judge is the target model itself, not an independent system: its figures are the "
            "white-box upper bound.") if judge_is_target else ""
    if oracle != "none":
        note += (f" Oracle attacker (a second threat): it never sees a victim's template; {ORACLES[oracle]}, "
                 f"for probes it chooses ({queries} queries per victim), and reconstructs the face from what it "
                 "recovers.")
    return THREAT_MODEL.format(knowledge=KNOWLEDGE[knowledge], n_aux=n_aux, n_victims=n_victims,
                               key=KEY_SCENARIOS[key], judge=judge) + note


def aux_identities(split: dict) -> str:
    """"150", or "1000 (a seeded sample of 24000, --max-aux)" when the attacker's set was sampled."""
    n, avail = split.get("auxiliary_identities"), split.get("auxiliary_identities_available")
    if isinstance(avail, int) and isinstance(n, int) and avail > n:
        return f"{n} (a seeded sample of {avail}, --max-aux)"
    return str(n)


def row_label(row: dict) -> str:
    """``noise sigma=0.05``: how a row is named in tables, plots, gate rules and lineups."""
    p = format_params(row.get("params", {}))
    return row["defense"] + (f" {p}" if p else "")

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
        d = read_json(p, "report")
        if not isinstance(d, dict) or not str(d.get("schema", "")).startswith("facepii.report/"):
            schema = d.get("schema") if isinstance(d, dict) else None
            raise FacepiiError(f"{p}: not a facepii report (schema {schema!r}).")
        return cls.from_dict(d)

    # ---- human-readable --------------------------------------------------
    @property
    def has_privacy(self) -> bool:
        return any(r.get("privacy") for r in self.rows)

    def table(self, fmt: str = "simple") -> str:
        """The trade-off table when attacks ran, else the utility table."""
        from tabulate import tabulate

        headers, body = self.tradeoff_rows() if self.has_privacy else self.table_rows()
        return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)

    def utility_table(self, fmt: str = "simple") -> str:
        from tabulate import tabulate

        headers, body = self.table_rows()
        return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)

    def tradeoff_rows(self) -> tuple[list[str], list[list[str]]]:
        secret = any(r.get("privacy_key_secret") for r in self.rows)
        human = any((r.get("privacy") or {}).get("human") for r in self.rows)
        judge = next((r["privacy"].get("judge", "judge") for r in self.rows if r.get("privacy")), "judge")
        headers = ["", "defense", "params", "eps", "TAR@1e-3", "EER", f"rank-1 re-id ({judge})",
                   "leakage x random", "SAR@FMR1e-3", "worst attack"]
        several = self.has_judges
        if several:
            headers.append("worst judge: rank-1")
        if secret:
            headers.append("leakage, key secret")
        if human:
            headers.append("human top-1 (chance)")
        body = []
        for r in self.rows:
            u, p = r.get("utility", {}), r.get("privacy") or {}
            line = ["*" if r.get("pareto") else "", r["defense"], format_params(r.get("params", {})),
                    format_eps(r), fmt_est(u.get("tar@far=1e-3")), fmt_est(u.get("eer")),
                    fmt_est(p.get("rank1")), fmt_est(p.get("leakage_ratio"), 1),
                    fmt_est(p.get("sar@fmr=1e-3")), p.get("attack", "")]
            if several:
                w = p.get("worst_judge")
                line.append(f"{fmt_est(p['judges'][w]['rank1'])} ({w})" if w else "")
            if secret:
                ps = r.get("privacy_key_secret") or {}
                line.append("n/a: ciphertext" if ps.get("not_applicable") else fmt_est(ps.get("leakage_ratio"), 1))
            if human:
                h = p.get("human")
                line.append(f"{fmt_est(h['accuracy'])} ({h['chance']:.2f})" if h else "")
            body.append(line)
        base = self.extra.get("privacy_baselines") or {}
        if base:
            blank = ["", "", "", ""]
            g = base.get("random_guess_rank1")
            pad = [""] * (int(several) + int(secret) + int(human))
            body.append(["", "random guess", "", "", *blank[:2], f"{g:.3f}", "1.0", "", ""] + pad)
            for name in ("random_face", "mean_face"):
                b = (base.get(name) or {}).get("judge")
                if b:
                    body.append(["", name.replace("_", " "), "", "", *blank[:2], fmt_est(b["rank1"]),
                                 fmt_est(b["leakage_ratio"], 1), fmt_est(b["sar@fmr=1e-3"]), ""] + pad)
        return headers, body

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
        if self.has_privacy:
            notes = ["value [95% interval]. rank-1 re-id: share of victims whose reconstruction the judge "
                     "ranks first among all victims; leakage x random = rank-1 / (1/N); SAR = share of "
                     "reconstruction-vs-genuine comparisons passing the judge's threshold at FMR 1e-3; "
                     "worst attack = the attack with the highest rank-1; * = Pareto-optimal "
                     "(TAR@1e-3 up, leakage down)."]
            if self.has_judges:
                notes.append("worst judge: the highest rank-1 of the independent judges (each with its own worst "
                             "attack); the rank-1 column is the first judge's.")
            for r in self.rows:
                if r.get("privacy_key_secret"):
                    notes.append("keyed rows: the headline privacy figures assume a disclosed key (stolen token); "
                                 "the last column keeps the key secret.")
                    break
            notes += [f"note: {n}" for n in self.extra.get("notes", [])]
            return notes
        notes = ["value [95% interval]; drop = unprotected TAR@1e-3 minus this row's; "
                 "bytes = storage per template."]
        if any(r.get("utility_stolen_token") for r in self.rows):
            notes.append("stolen token: per-user-key defenses measured again with every template made with "
                         "one key (an impostor holding the victim's key), the honest worst case.")
        if any(_few(k, (r.get("pairs") or {}).get("impostor")) for r in self.rows for k, _ in UTILITY_COLUMNS):
            notes.append("* this FAR rests on fewer than 10 impostor scores above the threshold: "
                         "too few impostor pairs to measure it; use more identities.")
        return notes

    @property
    def has_iso(self) -> bool:
        return any(r.get("iso30136") for r in self.rows)

    def iso_rows(self) -> tuple[list[str], list[list[str]]]:
        headers = ["defense", "params", "D_sys (linkability)", "old template still matches @FMR1e-3", "re-issue"]
        body = []
        for r in self.rows:
            iso = r.get("iso30136") or {}
            if not iso:
                continue
            body.append([r["defense"], format_params(r.get("params", {})),
                         fmt_est((iso.get("unlinkability") or {}).get("dsys")),
                         fmt_est((iso.get("renewability") or {}).get("old_template_match@fmr=1e-3")),
                         str(iso.get("scenario", ""))])
        return headers, body

    def iso_table(self, fmt: str = "simple") -> str:
        from tabulate import tabulate

        headers, body = self.iso_rows()
        return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)

    ISO_NOTE = ("ISO/IEC 30136: D_sys (Gomez-Barrero et al. 2018) tells mated pairs (one person's stored template "
                "vs the template enrolled again after the defense is re-issued) from non-mated pairs: 1 = fully "
                "linkable, 0 = unlinkable. Renewability: share of old templates that still match the re-issued "
                "one at the system's FMR 1e-3 threshold (about 0.001 when renewal works).")

    @property
    def has_judges(self) -> bool:
        """Several independent judges (``--judge a,b``): per-judge figures and a worst-judge column."""
        return any((r.get("privacy") or {}).get("judges") for r in self.rows)

    def judge_table(self, fmt: str = "simple") -> str:
        """Every independent judge per row (and key scenario): its own worst attack's figures."""
        from tabulate import tabulate

        headers = ["defense", "params", "key", "judge", "attack", "rank-1", "rank-5", "SAR@FMR1e-3",
                   "leakage x random"]
        body = []
        for r in self.rows:
            for block in (r.get("privacy"), r.get("privacy_key_secret"), r.get("privacy_oracle")):
                if not block or not block.get("judges"):
                    continue
                key = "oracle" if block is r.get("privacy_oracle") else block.get("key", "")
                for name, j in block["judges"].items():
                    mark = " (worst)" if name == block.get("worst_judge") and len(block["judges"]) > 1 else ""
                    body.append([r["defense"], format_params(r.get("params", {})), key, name + mark, j["attack"],
                                 fmt_est(j.get("rank1")), fmt_est(j.get("rank5")), fmt_est(j.get("sar@fmr=1e-3")),
                                 fmt_est(j.get("leakage_ratio"), 1)])
        return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)

    JUDGES_NOTE = ("Each judge embeds the reconstructions and searches the victims' gallery with its own "
                   "threshold, calibrated at FMR 1e-3 on its own impostor scores of the victims' real photos; "
                   "per judge, the attack it re-identifies best. The headline column of the trade-off table "
                   "is the first judge's; 'worst judge' is the highest of all.")

    def attack_table(self, fmt: str = "simple") -> str:
        from tabulate import tabulate

        headers = ["defense", "params", "key", "attack", "rank-1 (judge)", "rank-5 (judge)", "SAR (judge)",
                   "rank-1 (target as judge)", "SSIM"]
        body = []
        for r in self.rows:
            for block in (r.get("privacy"), r.get("privacy_key_secret")):
                if not block:
                    continue
                for name, a in block.get("per_attack", {}).items():
                    body.append([r["defense"], format_params(r.get("params", {})), block.get("key", ""), name,
                                 fmt_est(a.get("rank1")), fmt_est(a.get("rank5")), fmt_est(a.get("sar@fmr=1e-3")),
                                 fmt_est((a.get("target_judge") or {}).get("rank1")), fmt_est(a.get("ssim"))])
        return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)

    def summary_lines(self) -> list[str]:
        d = self.dataset
        lines = [
            f"dataset: {d.get('source')}  identities: {d.get('n_identities')}  images used: "
            f"{d.get('n_used')} of {d.get('n_listed')}  skipped: {d.get('n_skipped')}  "
            f"excluded: {len(d.get('excluded', []))}",
            f"encoder: {self.encoder.get('name')} ({self.encoder.get('version')}, "
            f"{self.encoder.get('comparator')})  seed: {self.seed}  "
            f"intervals: 95% bootstrap over identities "
            f"({self.settings.get('bootstrap', self.settings.get('n_boot'))} replicates)",
        ]
        st = d.get("embedding_stats") or {}
        if st.get("cache_rejected"):
            lines.append(f"cache: {st['cache_rejected']} entries failed their integrity checks and were recomputed")
        fm = str((self.extra.get("attacker") or {}).get("face_model", ""))
        if fm.startswith("retrained"):
            lines.append(f"attacker's face model: {fm}")
        reasons: dict[str, int] = {}
        for s in d.get("skipped", []):
            key = s["reason"].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        if reasons:
            lines.append("skipped: " + "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])))
        return lines

    def executive_summary(self) -> list[str]:
        from facepii.sections import executive_summary

        return executive_summary(self.rows, self.extra)

    @property
    def has_irreversibility(self) -> bool:
        return any((r.get("iso30136") or {}).get("irreversibility") for r in self.rows)

    @property
    def has_oracle(self) -> bool:
        return any(r.get("privacy_oracle") for r in self.rows)

    def section_table(self, name: str, fmt: str = "simple") -> str:
        """``irreversibility``, ``operating_points`` or ``oracle`` (see :mod:`facepii.sections`)."""
        from tabulate import tabulate

        from facepii import sections

        headers, body = getattr(sections, f"{name}_rows")(self.rows)
        return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)

    def markdown(self) -> str:
        from facepii.sections import IRREVERSIBILITY_NOTE, ORACLE_NOTE

        parts = ["# facepii report", ""]
        summary = self.executive_summary()
        if summary:
            parts += ["## Summary", "", " ".join(summary), ""]
        parts += [f"- {line}" for line in self.summary_lines()]
        if self.extra.get("threat_model"):
            parts += ["", "## Threat model", "", self.extra["threat_model"], ""]
            sp = self.extra.get("split", {})
            parts += [f"Split (seed {sp.get('seed')}): {sp.get('victims')} victims, "
                      f"{aux_identities(sp)} auxiliary identities ({sp.get('auxiliary_images')} "
                      f"photos), {sp.get('gallery_images')} gallery photos.", ""]
            parts += ["## Privacy-utility trade-off"]
        parts += ["", self.table("github"), ""] + self.footnotes() + [""]
        if self.has_judges:
            parts += ["## Every judge", "", self.judge_table("github"), "", self.JUDGES_NOTE, ""]
        if self.has_iso:
            parts += ["## ISO/IEC 30136: unlinkability and renewability", "", self.iso_table("github"), "",
                      self.ISO_NOTE, ""]
        if self.has_irreversibility:
            parts += ["## ISO/IEC 30136: irreversibility", "", self.section_table("irreversibility", "github"), "",
                      IRREVERSIBILITY_NOTE, "", "Operating points:", "",
                      self.section_table("operating_points", "github"), ""]
        if self.has_oracle:
            parts += ["## Score oracle", "", self.section_table("oracle", "github"), "", ORACLE_NOTE, ""]
        if self.has_privacy:
            parts += ["## Utility", "", self.utility_table("github"), ""]
            parts += ["## Every attack", "", self.attack_table("github"), ""]
            if self.extra.get("personal_data"):
                parts += [self.extra["personal_data"], ""]
        skipped = self.dataset.get("skipped", [])
        if skipped:
            parts += ["## Skipped images", "", "| path | reason |", "|---|---|"]
            parts += [f"| {s['path']} | {s['reason']} |" for s in skipped]
            parts.append("")
        return "\n".join(parts)


# ---------------------------------------------------------------- formatting


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file a user named, with one-line errors for a missing or broken file."""
    from facepii.errors import FacepiiError

    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise FacepiiError(f"{p}: no such {what} file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FacepiiError(f"{p}: not a JSON {what} file ({exc}).") from None


def mark_pareto(rows: list[dict]) -> None:
    """Mark rows no other row beats on both TAR@1e-3 (higher) and leakage ratio (lower)."""
    pts = []
    for r in rows:
        t = (r.get("utility", {}).get("tar@far=1e-3") or {}).get("value")
        lk = ((r.get("privacy") or {}).get("leakage_ratio") or {}).get("value")
        pts.append((t, lk))
    for i, r in enumerate(rows):
        t, lk = pts[i]
        if t is None or lk is None:
            r["pareto"] = False
            continue
        r["pareto"] = not any(
            t2 is not None and l2 is not None and t2 >= t and l2 <= lk and (t2 > t or l2 < lk)
            for j, (t2, l2) in enumerate(pts) if j != i)


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
