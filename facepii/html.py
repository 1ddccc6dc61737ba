"""The auditor's report: one self-contained HTML file (styles inline, pictures embedded, no network)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from facepii import sections
from facepii.report import Report, aux_identities, format_eps, format_params

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#1b1b1b;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:12.5px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f3f3f3}tr.pareto td:first-child{font-weight:bold}
.pass{color:#0a6b2d;font-weight:bold}.fail{color:#a50e0e;font-weight:bold}.note{color:#555;font-size:12px}
.warn{background:#fff4e5;border:1px solid #f0b429;padding:.6em 1em;border-radius:4px}
img{max-width:100%;border:1px solid #ddd}code{background:#f5f5f5;padding:0 3px}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _table(headers: list[str] | None, rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    out = ["<table>"]
    if headers:
        out += ["<thead><tr>", *[f"<th>{_e(h)}</th>" for h in headers], "</tr></thead>"]
    out.append("<tbody>")
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).is_file():
        return f'<p class="note">({_e(alt)}: not available for this report)</p>'
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def render(report: Report, images: dict[str, Path | None] | None = None, verdicts: list[dict] | None = None) -> str:
    images = images or {}
    d = report.dataset
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>facepii report</title>"
             f"<style>{CSS}</style></head><body>", "<h1>facepii report</h1>",
             f"<p class='note'>{_e(d.get('source'))} &middot; encoder {_e(report.encoder.get('name'))} "
             f"{_e(report.encoder.get('version'))} &middot; seed {report.seed} &middot; facepii "
             f"{_e(report.versions.get('facepii'))}</p>"]
    summary = report.executive_summary()
    if summary:
        parts += ["<h2>Summary</h2>", f"<p>{_e(' '.join(summary))}</p>"]
    if report.extra.get("personal_data"):
        parts.append(f"<p class='warn'>{_e(report.extra['personal_data'])} This file embeds victims' photos and "
                     "reconstructions of their faces: keep it where personal data may be kept.</p>")
    if verdicts is not None:
        failed = sum(not v["passed"] for v in verdicts)
        head = (f"<span class='fail'>FAIL</span>: {failed} of {len(verdicts)} rules failed" if failed
                else f"<span class='pass'>PASS</span>: all {len(verdicts)} rules passed")
        parts += ["<h2>Gate</h2>", f"<p>{head}. Rates are judged on the pessimistic end of their 95% interval.</p>",
                  "<table><thead><tr><th>verdict</th><th>row</th><th>rule</th><th>detail</th></tr></thead><tbody>"]
        for v in verdicts:
            cls = "pass" if v["passed"] else "fail"
            parts.append(f"<tr><td class='{cls}'>{'PASS' if v['passed'] else 'FAIL'}</td><td>{_e(v['row'])}</td>"
                         f"<td>{_e(v['rule'])}</td><td>{_e(v['message'])}</td></tr>")
        parts.append("</tbody></table>")
    if report.extra.get("threat_model"):
        parts += ["<h2>Threat model</h2>", f"<p>{_e(report.extra['threat_model'])}</p>"]
    sp = report.extra.get("split")
    parts += ["<h2>Data</h2>", _table(None, [
        ["dataset", d.get("source")], ["photos listed / used / skipped", f"{d.get('n_listed')} / {d.get('n_used')} / "
                                       f"{d.get('n_skipped')}"],
        ["identities", d.get("n_identities")],
        *([["split", f"{sp['victims']} victims, {aux_identities(sp)} auxiliary identities "
                     f"({sp['auxiliary_images']} photos), {sp['gallery_images']} gallery photos, seed {sp['seed']}"]]
          if sp else []),
    ])]
    headers, body = report.table_rows() if not report.has_privacy else report.tradeoff_rows()
    classes = ["pareto" if (i < len(report.rows) and report.rows[i].get("pareto")) else "" for i in range(len(body))]
    parts += ["<h2>Privacy-utility trade-off</h2>" if report.has_privacy else "<h2>Utility</h2>",
              _table(headers, body, classes), *[f"<p class='note'>{_e(n)}</p>" for n in report.footnotes()]]
    if report.has_privacy:
        parts += ["<h3>Trade-off</h3>", _img(images.get("tradeoff"), "trade-off plot"),
                  "<h3>Reconstructions</h3>", _img(images.get("reconstructions"), "reconstruction grid"),
                  "<h2>Utility (all figures)</h2>", _table(*report.table_rows()),
                  "<h2>Every attack</h2>", _attack_table(report)]
    if report.has_judges:
        parts += ["<h2>Every judge</h2>", report.judge_table("html"), f"<p class='note'>{_e(report.JUDGES_NOTE)}</p>"]
    if report.has_iso:
        parts += ["<h2>ISO/IEC 30136: unlinkability and renewability</h2>", _table(*report.iso_rows()),
                  f"<p class='note'>{_e(report.ISO_NOTE)}</p>", _img(images.get("linkability"), "linkability plot")]
    if report.has_irreversibility:
        parts += ["<h2>ISO/IEC 30136: irreversibility</h2>", _table(*sections.irreversibility_rows(report.rows)),
                  f"<p class='note'>{_e(sections.IRREVERSIBILITY_NOTE)}</p>",
                  _img(images.get("irreversibility"), "SAR against FMR"),
                  "<h3>Operating points</h3>", _table(*sections.operating_points_rows(report.rows))]
    if report.has_oracle:
        parts += ["<h2>Score oracle</h2>", _table(*sections.oracle_rows(report.rows)),
                  f"<p class='note'>{_e(sections.ORACLE_NOTE)}</p>"]
    eps_rows = [[r["defense"], format_params(r.get("params", {})), format_eps(r),
                 (r.get("all_params") or {}).get("mechanism", "")] for r in report.rows if r.get("epsilon") is not None]
    if eps_rows:
        parts += ["<h2>Differential privacy per noise setting</h2>",
                  "<p class='note'>Per-template local DP: one release of each unit-norm embedding (L2 sensitivity 2); "
                  "says nothing about the model or about several templates of one person.</p>",
                  _table(["defense", "params", "epsilon (delta)", "mechanism"], eps_rows)]
    skipped = d.get("skipped", [])
    parts += [f"<h2>Skipped photos ({len(skipped)})</h2>",
              _table(["path", "reason"], [[s["path"], s["reason"]] for s in skipped]) if skipped else "<p>none</p>"]
    excluded = d.get("excluded", [])
    if excluded:
        parts += [f"<h2>Excluded ({len(excluded)})</h2>", _table(["path", "reason"],
                                                                  [[s["path"], s["reason"]] for s in excluded])]
    parts += ["<h2>Settings and versions</h2>",
              _table(["setting", "value"], [[k, v] for k, v in sorted(report.settings.items())]),
              _table(["package", "version"], [[k, v] for k, v in sorted(report.versions.items())]),
              "</body></html>"]
    return "\n".join(parts)


def _attack_table(report: Report) -> str:
    from tabulate import tabulate

    text = report.attack_table("html")
    return text if "<table" in text else f"<pre>{_e(tabulate([]))}</pre>"
