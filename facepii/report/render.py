"""The report as CLI text, Markdown, and one self-contained HTML page (styles inline, pictures embedded,
no network). All three walk :data:`facepii.report.sections.SECTIONS`, in its order."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from tabulate import tabulate

from facepii.report import Report
from facepii.report.sections import SECTIONS, Section

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


def _sections(report: Report, fmt: str) -> list[Section]:
    return [s for s in SECTIONS if fmt in s.formats and s.applies(report)]


def _tab(table, fmt: str) -> str:
    headers, body = table
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def text(report: Report) -> str:
    """What ``facepii evaluate`` prints."""
    out: list[str] = []
    for s in _sections(report, "text"):
        out.append(f"\n{s.heading(report).lower()}:")
        if s.text:
            out += s.text(report) if s.lines else [" ".join(s.text(report))]
        if s.table:
            out.append(_tab(s.table(report), "simple"))
        if s.notes:
            out += s.notes(report)
    return "\n".join(out).lstrip("\n")


def _md_cell(x) -> str:
    """A Markdown table cell: names from a dataset or a plug-in are text, never markup."""
    s = "" if x is None else str(x)
    for ch in "\\`*_[]<>|#":
        s = s.replace(ch, "\\" + ch)
    return s.replace("\n", " ")


def markdown(report: Report) -> str:
    parts = ["# facepii report", ""]
    for s in _sections(report, "markdown"):
        parts += [f"## {s.heading(report)}", ""]
        if s.text:
            lines = [_md_cell(x) for x in s.text(report)]
            parts += ([f"- {x}" for x in lines] if s.lines else [" ".join(lines)]) + [""]
        if s.table:
            headers, body = s.table(report)
            cells = ([_md_cell(h) for h in headers], [[_md_cell(c) for c in row] for row in body])
            parts += [_tab(cells, "github"), ""]
        if s.notes:
            parts += [*(_md_cell(n) for n in s.notes(report)), ""]
    return "\n".join(parts)


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _html_table(headers: list[str] | None, rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    out = ["<table>"]
    if headers:
        out += ["<thead><tr>", *[f"<th>{_e(h)}</th>" for h in headers], "</tr></thead>"]
    out.append("<tbody>")
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and i < len(row_classes) and row_classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).is_file():
        return f'<p class="note">({_e(alt)}: not available for this report)</p>'
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def page(report: Report, images: dict[str, Path | None] | None = None) -> str:
    """report.html: every section, the pictures in ``images`` (file stem -> PNG path) embedded."""
    images = images or {}
    d = report.dataset
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>facepii report</title>"
             f"<style>{CSS}</style></head><body>", "<h1>facepii report</h1>",
             f"<p class='note'>{_e(d.get('source'))} &middot; encoder {_e(report.encoder.get('name'))} "
             f"{_e(report.encoder.get('version'))} &middot; seed {_e(report.seed)} &middot; facepii "
             f"{_e(report.versions.get('facepii'))}</p>"]
    if report.has_privacy:
        parts.append("<p class='warn'>This file embeds victims' photos and reconstructions of their faces: personal "
                     "data; keep it where personal data may be kept.</p>")
    for s in _sections(report, "html"):
        parts.append(f"<h2>{_e(s.heading(report))}</h2>")
        if s.text:
            lines = s.text(report)
            parts += [f"<p>{_e(x)}</p>" for x in lines] if s.lines else [f"<p>{_e(' '.join(lines))}</p>"]
        if s.table:
            headers, body = s.table(report)
            classes = None
            if s.title == "Privacy-utility trade-off":
                classes = ["pareto" if i < len(report.rows) and report.rows[i].pareto else "" for i in range(len(body))]
            parts.append(_html_table(headers, body, classes))
        if s.notes:
            parts += [f"<p class='note'>{_e(n)}</p>" for n in s.notes(report)]
        for stem, caption in (s.images(report) if s.images else ()):
            parts.append(_img(images.get(stem), caption))
    parts.append("</body></html>")
    return "\n".join(parts)
