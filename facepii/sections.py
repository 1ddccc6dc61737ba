"""Report sections an auditor reads first: the executive summary, ISO/IEC 30136 tables, the oracle table.

Each function takes the report's rows (plain dicts, as in report.json) and returns text or
(headers, body) for :mod:`tabulate`; :class:`facepii.report.Report`, the Markdown and the HTML
page all use these, so the three never disagree.
"""

from __future__ import annotations

from typing import Any

FOUR_X = 4.0  # the seed paper's line: re-identified at up to 4x a random guess


def _fmt(e: Any, digits: int = 3) -> str:
    from facepii.report import fmt_est

    return fmt_est(e, digits)


def _label(r: dict) -> str:
    from facepii.report import row_label

    return row_label(r)


def executive_summary(rows: list[dict], extra: dict) -> list[str]:
    """A few plain sentences: what leaks unprotected, which protection leaks least at what cost, the 4x line."""
    priv = [r for r in rows if (r.get("privacy") or {}).get("rank1")]
    out: list[str] = []
    base = next((r for r in rows if r.get("defense") == "none"), None)
    sp = extra.get("split") or {}
    n = sp.get("victims")
    if base is None or not priv:
        if rows:
            r0 = rows[0]
            out.append(f"Utility only (no attack was run): the unprotected templates verify at TAR@FMR1e-3 "
                       f"{_fmt(r0.get('utility', {}).get('tar@far=1e-3'))}.")
        return out
    p0 = base.get("privacy") or {}
    judge = p0.get("judge", "an independent face-recognition model")
    if p0.get("rank1"):
        out.append(
            f"Without protection, an attacker who steals the templates reconstructs faces that {judge} "
            f"re-identifies at rank-1 {_fmt(p0.get('rank1'))} among {n} victims: "
            f"{_fmt(p0.get('leakage_ratio'), 1)} times a random guess. These templates are personal data.")
    prot = [r for r in priv if r is not base and (r.get("privacy") or {}).get("rank1", {}).get("value") is not None]
    if prot:
        best = min(prot, key=lambda r: (r["privacy"]["rank1"]["value"], r["privacy"]["rank1"]["ci95"][1]))
        u0 = (base.get("utility") or {}).get("tar@far=1e-3") or {}
        u = (best.get("utility") or {}).get("tar@far=1e-3") or {}
        cost = ""
        if u.get("value") is not None and u0.get("value") is not None:
            cost = (f" at a utility cost of {u0['value'] - u['value']:+.3f} in TAR@FMR1e-3 "
                    f"({u['value']:.3f} against {u0['value']:.3f} unprotected)")
        out.append(f"Of the {len(prot)} protected settings tested, {_label(best)} leaks least: rank-1 "
                   f"{_fmt(best['privacy']['rank1'])}, {_fmt(best['privacy'].get('leakage_ratio'), 1)} times "
                   f"random{cost}.")
        below = [r for r in prot if (r["privacy"].get("leakage_ratio") or {}).get("ci95", [None, None])[1]
                 is not None and r["privacy"]["leakage_ratio"]["ci95"][1] < FOUR_X]
        if below:
            out.append(f"{len(below)} of {len(prot)} keep leakage below {FOUR_X:g} times random even at the upper "
                       f"end of the 95% interval: {', '.join(_label(r) for r in below)}.")
        else:
            out.append(f"None of the tested protections keeps leakage below the {FOUR_X:g}-times-random line "
                       f"(upper end of the 95% interval).")
    oracle = [r for r in rows if (r.get("privacy_oracle") or {}).get("rank1")]
    if oracle:
        protected = [r for r in oracle if r.get("defense") != "none"] or oracle
        worst = max(protected, key=lambda r: r["privacy_oracle"]["rank1"]["value"])
        o = worst["privacy_oracle"]
        q = o.get("oracle") or {}
        kind = q.get("kind", "score")
        out.append(
            f"Without ever seeing a template, an attacker who reads the matcher's {kind} answers "
            f"({q.get('budget_per_victim')} queries per victim) re-identifies faces at rank-1 {_fmt(o['rank1'])} "
            f"against {_label(worst)}{' (the most leaking protected setting)' if len(protected) > 1 else ''}; "
            f"median queries to a match "
            f"{_q((q.get('queries_to_match') or {}).get('median'))}.")
    enc = [r for r in rows if r.get("encrypted_matching")]
    for r in enc:
        o = r.get("privacy_oracle") or {}
        if o.get("rank1"):
            out.append(f"Homomorphic encryption ({_label(r)}) keeps utility (TAR@FMR1e-3 "
                       f"{_fmt((r.get('utility') or {}).get('tar@far=1e-3'))}) and hides the stored templates, "
                       f"but its decrypted scores leak: rank-1 {_fmt(o['rank1'])} through the score oracle.")
    return out


def _q(x: Any) -> str:
    return "none within the budget" if x is None else f"{x:g}"


FMR_KEYS = ("1e-2", "1e-3", "1e-4")


def _irreversible(rows: list[dict]):
    """(row, its irreversibility block, the block's face-level part) of the rows that have one."""
    for r in rows:
        ir = (r.get("iso30136") or {}).get("irreversibility")
        if ir:
            yield r, ir, ir.get("faces") or {}


def irreversibility_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["defense", "params", "inversion", "ISR@1e-3", "ISR@1e-4",
               *[f"SAR I@{k}" for k in FMR_KEYS], *[f"SAR II@{k}" for k in FMR_KEYS]]
    body = []
    for r, ir, f in _irreversible(rows):
        t1, t2 = f.get("type1") or {}, f.get("type2") or {}
        key = f" (key {ir.get('key')})" if r.get("key_mode") else ""  # unkeyed rows have no key to disclose
        body.append([r["defense"], _params(r), f"{ir.get('method')}{key}",
                     _fmt(ir.get("isr@fmr=1e-3")), _fmt(ir.get("isr@fmr=1e-4")),
                     *[_fmt(t1.get(f"sar@fmr={k}")) for k in FMR_KEYS],
                     *[_fmt(t2.get(f"sar@fmr={k}")) for k in FMR_KEYS]])
    return headers, body


def operating_points_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["defense", "params", "comparison", "FMR asked", "threshold", "FMR reached", "impostor pairs"]
    body = []
    for r, ir, f in _irreversible(rows):
        for name, block in (("type I (target system)", f.get("type1")),
                            (f"type II ({f.get('judge')})", f.get("type2"))):
            for k in FMR_KEYS:
                op = (block or {}).get(f"operating_point@fmr={k}")
                if op:
                    body.append([r["defense"], _params(r), name, k, f"{op['threshold']:.4g}",
                                 f"{op['fmr_reached']:.2e}", str(op["impostor_pairs"])])
        for k, op in (ir.get("thresholds") or {}).items():
            body.append([r["defense"], _params(r), "ISR (unprotected system)", k, f"{op['threshold']:.4g}",
                         f"{op['fmr_reached']:.2e}", str(op["impostor_pairs"])])
    return headers, body


def oracle_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    judge = next((r["privacy_oracle"].get("judge", "judge") for r in rows if r.get("privacy_oracle")), "judge")
    headers = ["defense", "params", "oracle", "queries/victim", "matched within budget", "median queries to match",
               f"rank-1 re-id ({judge})", "leakage x random", "SAR@FMR1e-3", "ISR@1e-3", "attack"]
    body = []
    for r in rows:
        o = r.get("privacy_oracle")
        if not o:
            continue
        q = o.get("oracle") or {}
        body.append([r["defense"], _params(r), q.get("kind", ""), str(q.get("budget_per_victim", "")),
                     _fmt(q.get("matched_within_budget")), _q((q.get("queries_to_match") or {}).get("median")),
                     _fmt(o.get("rank1")), _fmt(o.get("leakage_ratio"), 1), _fmt(o.get("sar@fmr=1e-3")),
                     _fmt(q.get("isr@fmr=1e-3")), o.get("attack", "")])
    return headers, body


IRREVERSIBILITY_NOTE = (
    "Irreversibility (ISO/IEC 30136): ISR = share of victims' genuine comparisons that the UNPROTECTED system "
    "accepts for the embedding recovered from the protected template (learned inverse, or a numerical solver "
    "when the key is disclosed; the better is shown). SAR type I: the reconstructed face through the target "
    "model and the defense against the victim's stored templates; type II: the independent judge against the "
    "victim's other photos. Thresholds are calibrated on real impostor pairs; the FMR each reaches is listed.")
ORACLE_NOTE = (
    "Score oracle: the attacker never sees the victim's template; it submits probes and reads the matcher's "
    "answer against the victim (a score, or accept/reject at the FMR 1e-3 threshold), recovers the embedding "
    "and reconstructs the face. matched = a submitted estimate was accepted within the query budget.")


def _params(r: dict) -> str:
    from facepii.report import format_params

    return format_params(r.get("params", {}))
