"""The release gate: rules on a report -> PASS/FAIL per rule, exit code, JUnit XML.

Configuration (``facepii.toml``, or ``[tool.facepii]`` in ``pyproject.toml``)::

    [evaluate]                 # the options of `facepii evaluate`
    dataset = "celeba:../shared/datasets/celeba-subset"
    defenses = ["noise"]
    params = { sigma = [0.05] }
    budget = "standard"

    [gate]                     # rules for every protected row
    max_leakage_ratio = 10.0   # upper end of the 95% interval of rank-1 / random
    max_sar = 0.05             # upper end of the interval of the success attack rate
    min_tar_at_far = { far = 1e-3, value = 0.7 }   # lower end of the interval
    max_utility_drop = 0.1     # unprotected TAR@1e-3 minus the lower end of this row's

    [gate.rows."noise sigma=0.05"]   # rules for one row only (they replace the general ones)
    max_leakage_ratio = 5.0

    [gate.templates_per_victim."4"]  # privacy rules with 4 stolen templates per victim (evaluate with
    max_rank1 = 0.3                  # --templates-per-victim 1,4), on every row the gate judges

A rule on a rate is judged on the pessimistic end of its 95% interval: the
upper bound for leakage and SAR, the lower bound for utility. Rules apply to
the protected rows; a report with no protected row gates its unprotected
row. A rule whose figure is missing fails (it never passes silently).
With a baseline report (an earlier release), a row also fails when its
leakage interval lies wholly above the baseline's, or its TAR@1e-3 interval
wholly below. The configuration is read and checked by :mod:`facepii.gate_config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np

from facepii.errors import ConfigError, ReportError
from facepii.gate_config import (  # noqa: F401  (the configuration's entry points, reached as gate.*)
    PRIVACY_RULES,
    RULES,
    check_evaluate,
    check_gate,
    evaluate_config,
    load_config,
)
from facepii.labels import LEAKAGE, PRIVACY_ORACLE, PRIVACY_TEMPLATES, RANK1, SAR_1E3, TAR_1E3, label_of, tar_key

# upper-bound rules on a figure inside the row: rule -> (path of tables, figure key, what it is)
UPPER_RULES = {
    "max_dsys": (("iso30136", "unlinkability"), "dsys", "ISO/IEC 30136 unlinkability"),
    "max_renewal_match": (("iso30136", "renewability"), "old_template_match@fmr=1e-3", "ISO/IEC 30136 renewability"),
    "max_isr": (("iso30136", "irreversibility"), "isr@fmr=1e-3", "ISO/IEC 30136 irreversibility"),
    "max_sar_type1": (("iso30136", "irreversibility", "faces", "type1"), SAR_1E3, "SAR type I"),
    "max_sar_type2": (("iso30136", "irreversibility", "faces", "type2"), SAR_1E3, "SAR type II"),
    "max_oracle_rank1": ((PRIVACY_ORACLE,), RANK1, "score oracle"),
}

TOL = 1e-9  # rates are compared with this slack for floating-point rounding (0.80 - 0.65 != 0.15)

@dataclass
class Verdict:
    row: str
    rule: str
    passed: bool
    value: float | None
    ci95: tuple[float, float] | None
    judged: float | None        # the number compared (the interval end)
    threshold: float | str | None
    message: str

    def line(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        return f"{status}  {self.row:<28} {self.rule:<20} {self.message}"


# ---------------------------------------------------------------- judging


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _est(d, where: str) -> tuple[float | None, tuple[float, float] | None]:
    """(value, interval) of a figure; (None, None) when absent; an error when malformed."""
    if d is None:
        return None, None
    if not isinstance(d, dict):
        raise ReportError(f"{where}: not a figure ({{\"value\": ..., \"ci95\": [lo, hi]}}), got {d!r}.")
    v, ci = d.get("value"), d.get("ci95")
    if v is None:
        return None, None
    if not _num(v):
        raise ReportError(f"{where}: value {v!r} is not a number.")
    if ci is None or (isinstance(ci, list) and len(ci) == 2 and all(c is None for c in ci)):
        return float(v), None
    if not (isinstance(ci, list) and len(ci) == 2 and all(_num(c) for c in ci) and ci[0] <= ci[1]):
        raise ReportError(f"{where}: ci95 {ci!r} is not an interval [lo, hi].")
    return float(v), (float(ci[0]), float(ci[1]))


def _show(v: float, ci) -> str:
    return f"{v:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else f"{v:.4g} (no interval)"


def _no_interval(label: str, rule: str, figure: str, v: float, threshold) -> Verdict:
    """A figure without its interval fails: a gate judges the pessimistic end, and there is none."""
    return Verdict(label, rule, False, v, None, None, threshold,
                   f"{figure} {v:.4g} has no 95% interval in the report: a gate needs its pessimistic end")


def headline_k(report: dict) -> int:
    """The K of a report's rows' ``privacy`` (the first of --templates-per-victim; 1 when not recorded)."""
    ks = (report.get("settings") or {}).get("templates_per_victim") if isinstance(report, dict) else None
    ok = isinstance(ks, list) and ks and isinstance(ks[0], int) and not isinstance(ks[0], bool) and ks[0] >= 1
    return ks[0] if ok else 1


def at_k(row: dict, k: int, headline: int) -> dict | None:
    """A row with K stolen templates per victim: its ``privacy`` replaced by that K's (None: not in the report)."""
    if k == headline:
        return row
    per = row.get(PRIVACY_TEMPLATES)
    if per is not None and not isinstance(per, dict):
        raise ReportError(f"row {label_of(row)!r}: {PRIVACY_TEMPLATES} is not a table.")
    block = (per or {}).get(str(k))
    return None if block is None else {**row, "privacy": block}


def judge_rule(rule: str, threshold: Any, row: dict, base_tar: float | None) -> Verdict:
    label = label_of(row)
    priv = row.get("privacy") or {}
    if not isinstance(priv, dict):
        raise ReportError(f"row {label!r}: privacy is not a table.")
    if rule == "max_worst_judge_rank1" and isinstance(priv.get("judges"), dict):
        worst = priv["judges"].get(priv.get("worst_judge"))
        if not isinstance(worst, dict):
            raise ReportError(f"row {label!r}: privacy.worst_judge names no judge of privacy.judges.")
        priv = {**worst, "judge": priv.get("worst_judge")}
    if rule in ("max_leakage_ratio", "max_sar", "max_rank1", "max_worst_judge_rank1"):
        key = {"max_leakage_ratio": LEAKAGE, "max_sar": SAR_1E3}.get(rule, RANK1)
        v, ci = _est(priv.get(key), f"row {label!r} privacy.{key}")
        if v is None:
            return Verdict(label, rule, False, None, None, None, threshold,
                           f"no privacy figure '{key}' in the report (run evaluate with attacks)")
        if ci is None:
            return _no_interval(label, rule, key, v, threshold)
        end = ci[1]
        ok = end <= float(threshold) + TOL
        return Verdict(label, rule, ok, v, ci, end, threshold,
                       f"upper bound {end:.4g} {'<=' if ok else '>'} {threshold:g}  "
                       f"({_show(v, ci)}, attack {priv.get('attack')}, judge {priv.get('judge')})")
    if rule in UPPER_RULES:
        path, key, what = UPPER_RULES[rule]
        block: Any = row
        for part in path:
            block = block.get(part) if isinstance(block, dict) else None
        where = f"row {label!r} {'.'.join(path)}.{key}"
        v, ci = _est(block.get(key) if isinstance(block, dict) else None, where)
        if v is None:
            return Verdict(label, rule, False, None, None, None, threshold,
                           f"no {what} figure '{key}' in the report (run evaluate with attacks"
                           f"{' and --oracle' if path[0] == PRIVACY_ORACLE else ''})")
        if ci is None:
            return _no_interval(label, rule, key, v, threshold)
        ok = ci[1] <= float(threshold) + TOL
        note = (row.get("iso30136") or {}).get("scenario") if rule in ("max_dsys", "max_renewal_match") else what
        return Verdict(label, rule, ok, v, ci, ci[1], threshold,
                       f"upper bound {ci[1]:.4g} {'<=' if ok else '>'} {threshold:g}  ({_show(v, ci)}, {note})")
    if rule == "min_oracle_queries_to_match":
        return _oracle_queries(label, row, float(threshold))
    utility = row.get("utility") or {}
    if not isinstance(utility, dict):
        raise ReportError(f"row {label!r}: utility is not a table.")
    if rule == "min_tar_at_far":
        far, want = float(threshold["far"]), float(threshold["value"])
        key = tar_key(far)
        v, ci = _est(utility.get(key), f"row {label!r} utility.{key}")
        if v is None:
            return Verdict(label, rule, False, None, None, None, want, f"no {key} in the report")
        if ci is None:
            return _no_interval(label, rule, key, v, want)
        end = ci[0]
        ok = end >= want - TOL
        return Verdict(label, rule, ok, v, ci, end, want,
                       f"TAR@FAR={far:g} lower bound {end:.4g} {'>=' if ok else '<'} {want:g}  ({_show(v, ci)})")
    if rule == "max_utility_drop":
        v, ci = _est(utility.get(TAR_1E3), f"row {label!r} utility.{TAR_1E3}")
        if v is None or base_tar is None:
            return Verdict(label, rule, False, None, None, None, threshold, "no TAR@1e-3 to compare")
        if ci is None:
            return _no_interval(label, rule, "TAR@1e-3", v, threshold)
        end = base_tar - ci[0]
        ok = end <= float(threshold) + TOL
        return Verdict(label, rule, ok, base_tar - v, None, end, threshold,
                       f"drop at the lower bound {end:.4g} {'<=' if ok else '>'} {threshold:g}  "
                       f"(unprotected {base_tar:.4g}, this row {_show(v, ci)})")
    raise ConfigError(f"unknown rule {rule!r}")


def _oracle_queries(label: str, row: dict, want: float) -> Verdict:
    """Lower 95% bound (bootstrap over victims) of the median queries to a match; a victim not matched
    within the budget counts as needing more than the budget."""
    rule = "min_oracle_queries_to_match"
    o = row.get(PRIVACY_ORACLE)
    q = ((o or {}).get("oracle") or {}) if isinstance(o, dict) else {}
    qm = q.get("queries_to_match") if isinstance(q, dict) else None
    per = qm.get("per_victim") if isinstance(qm, dict) else None
    budget = q.get("budget_per_victim") if isinstance(q, dict) else None
    if not isinstance(per, list) or not per or not all(isinstance(x, int) and not isinstance(x, bool) for x in per) \
            or not _num(budget):
        return Verdict(label, rule, False, None, None, None, want,
                       "no oracle queries per victim in the report (run evaluate with --oracle)")
    beyond = float(budget) + 1  # not matched within the budget: more than the budget
    x = np.array([v if v > 0 else beyond for v in per], float)
    rng = np.random.default_rng(0)  # replicates in blocks: memory bounded whatever the number of victims
    rows = max(1, (1 << 24) // max(len(x), 1))
    reps = np.concatenate([np.median(x[rng.integers(0, len(x), (min(rows, 1000 - s), len(x)))], axis=1)
                           for s in range(0, 1000, rows)])
    lo, med = float(np.quantile(reps, 0.025)), float(np.median(x))
    show = lambda v: f"more than {budget:g}" if v >= beyond else f"{v:g}"  # noqa: E731
    if lo >= beyond and budget < want:
        return Verdict(label, rule, False, None, None, None, want,
                       f"the median victim was not matched within {budget:g} queries, but the budget is below "
                       f"{want:g}: rerun with --oracle-queries >= the rule's value")
    ok = lo >= want - TOL
    return Verdict(label, rule, ok, None if med >= beyond else med, None, lo, want,
                   f"median queries to a match, lower bound {show(lo)} {'>=' if ok else '<'} {want:g}  "
                   f"(median {show(med)}; {q.get('kind')} oracle, budget {budget:g})")


def check_rows(report: dict, what: str = "the report") -> list[dict]:
    rows = report.get("rows") if isinstance(report, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ReportError(f"{what} has no rows.")
    for i, r in enumerate(rows):
        if not (isinstance(r, dict) and isinstance(r.get("defense"), str)
                and isinstance(r.get("params", {}), dict)):
            raise ReportError(f"{what}: row {i} is not a report row (a table with a 'defense' name and 'params').")
        for part in ("utility", "privacy", "iso30136"):
            if not isinstance(r.get(part) or {}, dict):
                raise ReportError(f"{what}: row {i}: {part} is not a table.")
    return rows


def run_gate(report: dict, gate: dict, baseline: dict | None = None) -> list[Verdict]:
    """Every rule on every row it applies to, plus the baseline comparison."""
    rows = check_rows(report)
    labels = [label_of(r) for r in rows]
    scoped = gate.get("rows", {})
    for label in scoped:
        if label not in labels:
            raise ConfigError(f'[gate.rows."{label}"]: no such row in the report; rows: {", ".join(labels)}.')
    general = {k: v for k, v in gate.items() if k not in ("rows", "templates_per_victim")}
    per_k = {int(k): t for k, t in (gate.get("templates_per_victim") or {}).items()}
    head = headline_k(report)
    protected = [r for r in rows if r["defense"] != "none"] or rows
    base_tar = _est((rows[0].get("utility") or {}).get(TAR_1E3), "unprotected row")[0] \
        if rows[0]["defense"] == "none" else None
    verdicts = []
    for r in rows:
        label = label_of(r)
        if label in scoped:
            rules = scoped[label]
        elif r in protected:
            rules = general
        else:
            continue
        for rule, threshold in rules.items():
            verdicts.append(judge_rule(rule, threshold, r, base_tar))
        for k, table in sorted(per_k.items()):
            rk = at_k(r, k, head)
            for rule, threshold in table.items():
                name = f"{rule}@K={k}"
                if rk is None:
                    verdicts.append(Verdict(label, name, False, None, None, None, threshold,
                                            f"no privacy figures with {k} stolen templates per victim in the report "
                                            f"(run evaluate with --templates-per-victim {head},{k})"))
                    continue
                v = judge_rule(rule, threshold, rk, base_tar)
                v.rule, v.message = name, f"{v.message} [{k} stolen templates per victim]"
                verdicts.append(v)
    if baseline is not None:
        verdicts += compare_baseline(report, baseline)
    return verdicts


def compare_baseline(report: dict, baseline: dict) -> list[Verdict]:
    """Regression check against an earlier release's report: flag a row whose leakage interval lies
    wholly above the baseline's, or whose TAR@1e-3 interval lies wholly below."""
    old = {label_of(r): r for r in check_rows(baseline, "the baseline report")}
    out = []
    for r in check_rows(report):
        label = label_of(r)
        if label not in old:
            continue
        o = old[label]
        v, ci = _est((r.get("privacy") or {}).get(LEAKAGE), f"row {label!r} {LEAKAGE}")
        ov, oci = _est((o.get("privacy") or {}).get(LEAKAGE), f"baseline row {label!r} {LEAKAGE}")
        if ci is not None and oci is not None:
            rose = ci[0] > oci[1]
            what = "rose beyond the intervals" if rose else "no rise beyond the intervals"
            out.append(Verdict(label, "baseline_leakage", not rose, v, ci, ci[0], oci[1],
                               f"leakage {v:.4g} [{ci[0]:.4g}, {ci[1]:.4g}] vs baseline {ov:.4g} "
                               f"[{oci[0]:.4g}, {oci[1]:.4g}]: {what}"))
        v, ci = _est((r.get("utility") or {}).get(TAR_1E3), f"row {label!r} {TAR_1E3}")
        ov, oci = _est((o.get("utility") or {}).get(TAR_1E3), f"baseline row {label!r} {TAR_1E3}")
        if ci is not None and oci is not None:
            fell = ci[1] < oci[0]
            what = "fell beyond the intervals" if fell else "no fall beyond the intervals"
            out.append(Verdict(label, "baseline_tar@1e-3", not fell, v, ci, ci[1], oci[0],
                               f"TAR@1e-3 {v:.4g} [{ci[0]:.4g}, {ci[1]:.4g}] vs baseline {ov:.4g} "
                               f"[{oci[0]:.4g}, {oci[1]:.4g}]: {what}"))
    if not out:
        out.append(Verdict("(all)", "baseline", False, None, None, None, None,
                           "no row in common with the baseline report to compare"))
    return out


def junit_text(verdicts: list[Verdict], name: str = "facepii.gate") -> str:
    """JUnit XML, one test case per rule (classname = row, name = rule); failures carry the message."""
    suite = ET.Element("testsuite", name=name, tests=str(len(verdicts)),
                       failures=str(sum(not v.passed for v in verdicts)), errors="0", skipped="0")
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=v.row, name=v.rule, time="0")
        if not v.passed:
            f = ET.SubElement(case, "failure", message=v.message, type="GateFailure")
            f.text = v.line()
        else:
            ET.SubElement(case, "system-out").text = v.line()
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def verdicts_to_dict(verdicts: list[Verdict]) -> list[dict]:
    return [{"row": v.row, "rule": v.rule, "passed": v.passed, "value": v.value,
             "ci95": list(v.ci95) if v.ci95 else None, "judged": v.judged, "threshold": v.threshold,
             "message": v.message} for v in verdicts]
