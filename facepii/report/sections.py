"""The report's sections, in one ordered list: :data:`SECTIONS`.

A :class:`Section` has a title, says when it applies, and holds a table (headers and body), lines
of text, notes and pictures, each a function of the :class:`~facepii.report.Report`
(:mod:`facepii.report.tables`). The CLI text, the Markdown and the HTML page
(:mod:`facepii.report.render`) all walk this list, so they cannot drift: a format leaves a section
out only where the section says so (``formats``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from facepii.report import Report
from facepii.report.system_tables import (
    capabilities_table,
    det_table,
    dp_table,
    gate_lines,
    gate_table,
    irreversibility_table,
    listed_table,
    operating_points_table,
    oracle_table,
    provenance_table,
    settings_table,
    unlinkability_table,
)
from facepii.report.tables import (
    Table,
    attack_table,
    data_lines,
    executive_summary,
    footnotes,
    judge_table,
    main_table,
    realism_notes,
    realism_table,
    templates_notes,
    templates_table,
    utility_table,
)


@dataclass(frozen=True)
class Section:
    title: str
    applies: Callable[[Report], bool]
    table: Callable[[Report], Table] | None = None
    text: Callable[[Report], list[str]] | None = None     # paragraphs or lines
    notes: Callable[[Report], list[str]] | None = None
    images: Callable[[Report], list[tuple[str, str]]] | None = None  # (file stem, caption): what the HTML embeds
    formats: tuple[str, ...] = ("text", "markdown", "html")
    lines: bool = False                                   # text is a list of lines (else one paragraph)
    title_of: Callable[[Report], str] | None = None       # a title that depends on the report

    def heading(self, report: Report) -> str:
        return self.title_of(report) if self.title_of else self.title


JUDGES_NOTE = ("Each judge embeds the reconstructions and searches the victims' gallery with its own threshold, "
               "calibrated at FMR 1e-3 on its own impostor scores of the victims' real photos; per judge, the "
               "attack it re-identifies best. The headline column of the trade-off table is the first judge's; "
               "'worst judge' is the highest of all.")
ISO_NOTE = ("ISO/IEC 30136: D_sys (Gomez-Barrero et al. 2018) tells mated pairs (one person's stored template "
            "vs the template enrolled again after the defense is re-issued) from non-mated pairs: 1 = fully "
            "linkable, 0 = unlinkable. Renewability: share of old templates that still match the re-issued "
            "one at the system's FMR 1e-3 threshold (about 0.001 when renewal works).")
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
DET_NOTE = ("DET: false non-match rate against false match rate of protected-vs-protected verification, "
            "both on normal-deviate (probit) axes as bob.measure and pyeer draw them, from the same pairs as the "
            "utility figures; the marks are the operating points at FMR 1e-2, 1e-3 and 1e-4 (unmarked where "
            "the impostor pairs cannot support them). scores/ under --out holds the scores themselves.")
DP_NOTE = ("Per-template local DP: one release of each unit-norm embedding (L2 sensitivity 2); says nothing about "
           "the model or about several templates of one person.")
PERSONAL_DATA = ("Reconstructions and victim photos are personal data: they are written only under --out, never "
                 "elsewhere.")


def _always(_: Report) -> bool:
    return True


#: Every section of a report, in the order all three formats show them.
SECTIONS: list[Section] = [
    Section("Summary", lambda r: bool(executive_summary(r)), text=executive_summary),
    Section("Data", _always, text=data_lines, lines=True),
    Section("Gate", lambda r: r.extra.get("gate") is not None, table=gate_table, text=gate_lines),
    Section("Threat model", lambda r: bool(r.extra.get("threat_model")),
            text=lambda r: [r.extra["threat_model"]]),
    Section("The attacker's capabilities per row", lambda r: r.has_privacy, table=capabilities_table,
            formats=("markdown", "html")),
    Section("Privacy-utility trade-off", _always, table=main_table, notes=footnotes,
            images=lambda r: [("tradeoff", "trade-off plot"), ("reconstructions", "reconstruction grid")]
            if r.has_privacy else [],
            title_of=lambda r: "Privacy-utility trade-off (worst attack per row)" if r.has_privacy else "Utility"),
    Section("Utility (all figures)", lambda r: r.has_privacy, table=utility_table),
    Section("DET curves and operating points", lambda r: any(x.det for x in r.rows), table=det_table,
            notes=lambda r: [DET_NOTE], images=lambda r: [("det", "DET curves")]),
    Section("Every judge", lambda r: r.has_judges, table=judge_table, notes=lambda r: [JUDGES_NOTE]),
    Section("Several stolen templates per victim", lambda r: r.has_templates, table=templates_table,
            notes=templates_notes, images=lambda r: [("templates", "leakage against K")]),
    Section("Every attack", lambda r: r.has_privacy, table=attack_table,
            notes=lambda r: [r.extra.get("personal_data") or PERSONAL_DATA]),
    Section("What a person would see", lambda r: any(x.privacy is not None and x.privacy.worst is not None
                                                     and x.privacy.worst.realism for x in r.rows),
            table=realism_table, notes=realism_notes,
            images=lambda r: [("reconstructions", "the victims' photos and their reconstructions")]),
    Section("ISO/IEC 30136: unlinkability and renewability", lambda r: r.has_unlinkability, table=unlinkability_table,
            notes=lambda r: [ISO_NOTE], images=lambda r: [("linkability", "linkability plot")]),
    Section("ISO/IEC 30136: irreversibility", lambda r: r.has_irreversibility, table=irreversibility_table,
            notes=lambda r: [IRREVERSIBILITY_NOTE],
            images=lambda r: [("irreversibility", "SAR against FMR")]),
    Section("Operating points", lambda r: r.has_irreversibility, table=operating_points_table),
    Section("Score oracle", lambda r: r.has_oracle, table=oracle_table, notes=lambda r: [ORACLE_NOTE]),
    Section("Differential privacy per noise setting", lambda r: any(x.epsilon is not None for x in r.rows),
            table=dp_table, notes=lambda r: [DP_NOTE]),
    Section("Skipped photos", lambda r: bool(r.dataset.get("skipped")), table=listed_table("skipped"),
            formats=("markdown", "html"), title_of=lambda r: f"Skipped photos ({len(r.dataset['skipped'])})"),
    Section("Excluded photos", lambda r: bool(r.dataset.get("excluded")), table=listed_table("excluded"),
            formats=("markdown", "html"), title_of=lambda r: f"Excluded photos ({len(r.dataset['excluded'])})"),
    Section("Settings and versions", _always, table=settings_table, formats=("markdown", "html")),
    Section("Provenance", lambda r: isinstance(r.extra.get("provenance"), dict), table=provenance_table,
            formats=("markdown", "html")),
]
