"""The report's system-level tables: ISO/IEC 30136 (unlinkability, renewability, irreversibility and the
operating points behind them), the attacker's capabilities, the utility's DET operating points, the oracle
attack, differential privacy; and the run's own (settings, provenance, skipped photos, the gate's verdicts).
Each a function of the :class:`~facepii.report.Report`, ordered by :mod:`facepii.report.sections` like
:mod:`facepii.report.tables`.
"""

from __future__ import annotations

from collections.abc import Callable

from facepii.labels import fmr_text, fmt_est, fmt_queries, format_eps, isr_key
from facepii.report import Report
from facepii.report.tables import Table, row_params, sub_table
from facepii.threat import row_capabilities


def unlinkability_table(report: Report) -> Table:
    headers = ["defense", "params", "D_sys (linkability)", "old template still matches @FMR1e-3", "re-issue"]
    body = [[r.defense, row_params(r), fmt_est(r.unlinkability.dsys), fmt_est(r.unlinkability.renewal_match),
             r.unlinkability.scenario] for r in report.rows if r.unlinkability is not None]
    return headers, body


FMR_KEYS = tuple(fmr_text(f) for f in (1e-2, 1e-3, 1e-4))


def irreversibility_table(report: Report) -> Table:
    headers = ["defense", "params", "inversion", "ISR@1e-3", "ISR@1e-4",
               *[f"SAR I@{k}" for k in FMR_KEYS], *[f"SAR II@{k}" for k in FMR_KEYS]]
    body = []
    for r in report.rows:
        ir = r.irreversibility
        if ir is None:
            continue
        key = f" (key {ir.key})" if r.key_mode else ""  # unkeyed rows have no key to disclose
        body.append([r.defense, row_params(r), f"{ir.method}{key}", fmt_est(ir.best.get(isr_key(1e-3))),
                     fmt_est(ir.best.get(isr_key(1e-4))), *[fmt_est(ir.type1.sar.get(k)) for k in FMR_KEYS],
                     *[fmt_est(ir.type2.sar.get(k)) for k in FMR_KEYS]])
    return headers, body


def operating_points_table(report: Report) -> Table:
    headers = ["defense", "params", "comparison", "FMR asked", "threshold", "FMR reached", "impostor pairs"]
    body = []
    for r in report.rows:
        ir = r.irreversibility
        if ir is None:
            continue
        for name, levels in (("type I (target system)", ir.type1), (f"type II ({ir.judge})", ir.type2)):
            for k in FMR_KEYS:
                op = levels.operating_points.get(k)
                if op:
                    body.append([r.defense, row_params(r), name, k, f"{op['threshold']:.4g}",
                                 f"{op['fmr_reached']:.2e}", str(op["impostor_pairs"])])
        for k, op in ir.thresholds.items():
            body.append([r.defense, row_params(r), "ISR (unprotected system)", k, f"{op['threshold']:.4g}",
                         f"{op['fmr_reached']:.2e}", str(op["impostor_pairs"])])
    return headers, body


def capabilities_table(report: Report) -> Table:
    """Per row and scenario, what the attacker holds (ISO/IEC 24745 application model in the threat model)."""
    headers = ["defense", "params", "scenario", "stolen", "key", "target model", "matcher access"]
    body = []
    for r in report.rows:
        for c in row_capabilities(r, report.settings or {}):
            body.append([r.defense, row_params(r), *c])
    return headers, body


def det_table(report: Report) -> Table:
    """Each row's utility operating points: the threshold TAR@FAR takes, the FMR it reached on how many
    impostor pairs, the FNMR there (1 - TAR), and whether those pairs support the figure."""
    headers = ["defense", "params", "FMR asked", "threshold", "FMR reached", "FNMR", "impostor pairs", "estimable"]
    body = []
    for r in report.rows:
        for k, op in ((r.det or {}).get("operating_points") or {}).items():
            ok = op.get("supported", True) is True
            t = op.get("threshold")
            body.append([r.defense, row_params(r), k.replace("tar@far=", ""), "n/a" if t is None else f"{t:.4g}",
                         f"{op['fmr_reached']:.2e}", f"{op['fnmr']:.3f}" if ok else "n/a",
                         str(op["impostor_pairs"]), "yes" if ok else "no (fewer than 3 impostors above)"])
    return headers, body


def oracle_table(report: Report) -> Table:
    judge = next((r.oracle.judge for r in report.rows if r.oracle is not None), "judge")
    headers = ["defense", "params", "oracle", "queries/victim", "matched within budget", "median queries to match",
               f"rank-1 re-id ({judge})", "leakage x random", "SAR@FMR1e-3", "ISR@1e-3", "attack"]
    body = []
    for r in report.rows:
        o = r.oracle
        if o is None:
            continue
        q, h = o.oracle or {}, o.headline
        body.append([r.defense, row_params(r), q.get("kind", ""), str(q.get("budget_per_victim", "")),
                     fmt_est(q.get("matched_within_budget")),
                     fmt_queries((q.get("queries_to_match") or {}).get("median")),
                     fmt_est(h.rank1), fmt_est(h.leakage_ratio, 1), fmt_est(h.sar), fmt_est(q.get("isr@fmr=1e-3")),
                     o.attack or ""])
    return headers, body


def dp_table(report: Report) -> Table:
    return (["defense", "params", "epsilon (delta)", "mechanism"],
            [[r.defense, row_params(r), format_eps(r.epsilon, r.delta), r.all_params.get("mechanism", "")]
             for r in report.rows if r.epsilon is not None])


def listed_table(key: str) -> Callable[[Report], Table]:
    return lambda rep: (["path", "reason"], [[s["path"], s["reason"]] for s in rep.dataset.get(key, [])])


def settings_table(report: Report) -> Table:
    return (["setting or package", "value"], [[k, str(v)] for k, v in sorted(report.settings.items())]
            + [[k, str(v)] for k, v in sorted(report.versions.items())])


def provenance_table(report: Report) -> Table:
    pv = sub_table(report.extra.get("provenance"))
    rows = [["comparable", pv.get("comparable")], ["command", pv.get("command")]]
    code = sub_table(pv.get("code"))
    git = sub_table(code.get("git"))
    rows.append(["facepii", f"{code.get('facepii')}" + (f" git {git.get('revision')}"
                                                        f"{' (edited)' if git.get('edited') else ''}" if git else
                                                        " (installed, no checkout)")])
    rows += [[f"model ({role})", v] for role, v in sorted(sub_table(pv.get("models")).items())]
    rows += [["data digest (SHA-256 of the photos' content hashes in order, or of the vectors)",
              pv.get("dataset_digest")],
             ["photos", pv.get("photos")], ["seed", pv.get("seed")]]
    rows += [[f"machine: {k}", v] for k, v in sub_table(pv.get("machine")).items()]
    rows += [[f"kernels: {k}", ", ".join(map(str, v)) if isinstance(v, list) else v]
             for k, v in sub_table(pv.get("kernels")).items()]
    rows += [[f"cache: {k}", v] for k, v in sub_table(pv.get("cache")).items()]
    ex = sub_table(pv.get("executor"))
    rows += [[f"ran: {k}", v] for k, v in ex.items() if k != "rows"]
    rows += [[f"ran: row {k}", v] for k, v in sub_table(ex.get("rows")).items()]
    rows += [[f"seconds: {k}", v] for k, v in sub_table(pv.get("stage_seconds")).items()]
    return ["item", "value"], [[k, "" if v is None else str(v)] for k, v in rows]


def gate_table(report: Report) -> Table:
    return (["verdict", "row", "rule", "detail"],
            [["PASS" if v.get("passed") else "FAIL", v.get("row"), v.get("rule"), v.get("message")]
             for v in report.extra.get("gate") or []])


def gate_lines(report: Report) -> list[str]:
    v = report.extra.get("gate") or []
    failed = sum(not x.get("passed") for x in v)
    head = f"FAIL: {failed} of {len(v)} rules failed" if failed else f"PASS: all {len(v)} rules passed"
    return [f"{head}. Rates are judged on the pessimistic end of their 95% interval."]
