"""The report's tables, lines and notes: each a function of the :class:`~facepii.report.Report` (typed rows).

:mod:`facepii.report.sections` orders them into sections; the renderers turn them into text.
"""

from __future__ import annotations

from facepii.estimates import JudgeFigures, PrivacyEstimates, RowEstimates
from facepii.labels import (
    FAR_LEVELS,
    SAR_1E3,
    fmr_text,
    fmt_est,
    fmt_queries,
    format_eps,
    format_params,
    tar_key,
)
from facepii.metrics._verification import MIN_IMPOSTORS_ABOVE
from facepii.readback import upper
from facepii.report import Report, aux_identities

FOUR_X = 4.0  # the seed paper's line: re-identified at up to 4x a random guess
Table = tuple[list[str], list[list[str]]]


def row_params(r: RowEstimates) -> str:
    """A row's parameters as the tables write them."""
    return format_params(r.params)


def sub_table(x) -> dict:
    """A report's sub-table, or an empty one where a report read back holds something else there."""
    return x if isinstance(x, dict) else {}


# ---------------------------------------------------------------- summary and data


def executive_summary(report: Report) -> list[str]:
    """A few plain sentences: what leaks unprotected, which protection leaks least at what cost, the 4x line."""
    rows = report.rows
    priv = [r for r in rows if r.privacy is not None and r.privacy.headline is not None]
    out: list[str] = []
    base = next((r for r in rows if r.defense == "none"), None)
    n = (report.extra.get("split") or {}).get("victims")
    if base is None or not priv:
        if rows:
            out.append(f"Utility only (no attack was run): the unprotected templates verify at TAR@FMR1e-3 "
                       f"{fmt_est(rows[0].utility.tar_1e3)}.")
        return out
    h0 = base.privacy.headline if base.privacy is not None else None
    if h0 is not None:
        out.append(
            f"Without protection, an attacker who steals the templates reconstructs faces that {base.privacy.judge} "
            f"re-identifies at rank-1 {fmt_est(h0.rank1)} among {n} victims: "
            f"{fmt_est(h0.leakage_ratio, 1)} times a random guess. These templates are personal data.")
    prot = [r for r in priv if r is not base and r.privacy.headline.rank1.value == r.privacy.headline.rank1.value]
    if prot:
        best = min(prot, key=lambda r: (r.privacy.headline.rank1.value, r.privacy.headline.rank1.ci95[1]))
        u0, u = base.utility.tar_1e3, best.utility.tar_1e3
        cost = ""
        if u is not None and u0 is not None and u.value == u.value and u0.value == u0.value:
            cost = (f" at a utility cost of {u0.value - u.value:+.3f} in TAR@FMR1e-3 "
                    f"({u.value:.3f} against {u0.value:.3f} unprotected)")
        hb = best.privacy.headline
        out.append(f"Of the {len(prot)} protected settings tested, {best.label} leaks least: rank-1 "
                   f"{fmt_est(hb.rank1)}, {fmt_est(hb.leakage_ratio, 1)} times random{cost}.")
        below = [r for r in prot if upper(r.privacy.headline.leakage_ratio) is not None
                 and upper(r.privacy.headline.leakage_ratio) < FOUR_X]
        if below:
            out.append(f"{len(below)} of {len(prot)} keep leakage below {FOUR_X:g} times random even at the upper "
                       f"end of the 95% interval: {', '.join(r.label for r in below)}.")
        else:
            out.append(f"None of the tested protections keeps leakage below the {FOUR_X:g}-times-random line "
                       f"(upper end of the 95% interval).")
    if report.has_templates:
        k0, kmax = report.templates_per_victim[0], max(report.templates_ks)
        if kmax != k0:
            rose = []
            for r in priv:
                a, b = report.privacy_at(r, k0), report.privacy_at(r, kmax)
                if a is not None and b is not None and a.headline is not None and b.headline is not None:
                    rose.append(f"{r.label} {a.headline.rank1.value:.2f} -> {fmt_est(b.headline.rank1)}")
            if rose:
                out.append(f"With {kmax} stolen templates per victim instead of {k0}, rank-1 by {report.judge} goes: "
                           + "; ".join(rose) + ".")
    oracle = [r for r in rows if r.oracle is not None and r.oracle.headline is not None]
    if oracle:
        protected = [r for r in oracle if r.defense != "none"] or oracle
        worst = max(protected, key=lambda r: r.oracle.headline.rank1.value)
        o = worst.oracle
        q = o.oracle or {}
        out.append(
            f"Without ever seeing a template, an attacker who reads the matcher's {q.get('kind', 'score')} answers "
            f"({q.get('budget_per_victim')} queries per victim) re-identifies faces at rank-1 "
            f"{fmt_est(o.headline.rank1)} against {worst.label}"
            f"{' (the most leaking protected setting)' if len(protected) > 1 else ''}; median queries to a match "
            f"{fmt_queries((q.get('queries_to_match') or {}).get('median'))}.")
    for r in rows:
        if r.encrypted_matching and r.oracle is not None and r.oracle.headline is not None:
            out.append(f"Homomorphic encryption ({r.label}) keeps utility (TAR@FMR1e-3 "
                       f"{fmt_est(r.utility.tar_1e3)}) and hides the stored templates, "
                       f"but its decrypted scores leak: rank-1 {fmt_est(r.oracle.headline.rank1)} through the score "
                       "oracle.")
    return out


def data_lines(report: Report) -> list[str]:
    d, enc, st = report.dataset, report.encoder, report.settings
    lines = [
        f"dataset: {d.get('source')}  identities: {d.get('n_identities')}  images used: "
        f"{d.get('n_used')} of {d.get('n_listed')}  skipped: {d.get('n_skipped')}  "
        f"excluded: {len(d.get('excluded', []))}",
        f"encoder: {enc.get('name')} ({enc.get('version')}, {enc.get('comparator')})  seed: {report.seed}  "
        "intervals: 95%, rates over victims mid-p, utility bootstrap over identities "
        f"({st.get('bootstrap', st.get('n_boot'))} replicates)",
    ]
    sp = report.extra.get("split")
    if sp:
        lines.append(f"split (seed {sp.get('seed')}): {sp.get('victims')} victims, {aux_identities(sp)} auxiliary "
                     f"identities ({sp.get('auxiliary_images')} photos), {sp.get('gallery_images')} gallery photos")
    stats = d.get("embedding_stats") or {}
    if stats.get("cache_rejected"):
        lines.append(f"cache: {stats['cache_rejected']} entries failed their integrity checks and were recomputed")
    fm = str((report.extra.get("attacker") or {}).get("face_model", ""))
    if fm.startswith("retrained"):
        lines.append(f"attacker's face model: {fm}")
    n_imp = (report.rows[0].pairs or {}).get("impostor") if report.rows else None
    if isinstance(n_imp, int) and n_imp > 0:
        lines.append(f"operating points: {n_imp} impostor pairs behind the unprotected row's utility; the lowest "
                     f"FMR they support is {MIN_IMPOSTORS_ABOVE / n_imp:.1e} ({MIN_IMPOSTORS_ABOVE} impostor "
                     "scores above the threshold); rates at a lower FMR are n/a (not estimable)")
    pv = report.extra.get("provenance")
    if isinstance(pv, dict):
        code = sub_table(pv.get("code"))
        git = sub_table(code.get("git"))
        rev = f", git {str(git.get('revision'))[:12]}{' (edited)' if git.get('edited') else ''}" if git else ""
        m = sub_table(pv.get("machine"))
        lines.append(f"provenance: comparable {pv.get('comparable')} (equal for runs whose figures must agree); "
                     f"facepii {code.get('facepii')}{rev}; photos digest "
                     f"{str(pv.get('dataset_digest'))[:16]}; {m.get('cpu')}, {m.get('cores')} cores")
        kern = sub_table(pv.get("kernels"))
        if kern.get("note"):
            lines.append(f"kernels: {kern['note']}")
    reasons: dict[str, int] = {}
    for s in d.get("skipped", []):
        key = s["reason"].split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    if reasons:
        lines.append("skipped: " + "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])))
    return lines


# ---------------------------------------------------------------- the trade-off and utility


UTILITY_COLUMNS = [(tar_key(f), f"TAR@{fmr_text(f)}") for f in FAR_LEVELS] + \
    [("eer", "EER"), ("auc", "AUC"), ("rank1", "rank-1")]


def _few(key: str, n_impostor: int | None) -> str:
    """'*' when a TAR@FAR figure rests on fewer than 10 impostor scores."""
    if not key.startswith("tar@far=") or not n_impostor:
        return ""
    far = float(key.split("=", 1)[1])
    return "*" if far * n_impostor < 10 else ""


def utility_table(report: Report) -> Table:
    stolen = any(r.utility_stolen_token is not None for r in report.rows)
    headers = ["defense", "params", "eps"] + [h for _, h in UTILITY_COLUMNS] + ["drop", "bytes"]
    if stolen:
        headers.append("TAR@1e-3 stolen token")
    body = []
    for r in report.rows:
        n_imp = r.pairs.get("impostor")
        body.append([r.defense, row_params(r), format_eps(r.epsilon, r.delta),
                     *[fmt_est(r.utility.get(k)) + _few(k, n_imp) for k, _ in UTILITY_COLUMNS],
                     "" if r.utility_drop is None else f"{r.utility_drop:+.3f}", str(r.template_bytes or "")]
                    + ([fmt_est(r.utility_stolen_token.tar_1e3 if r.utility_stolen_token else None)] if stolen else []))
    return headers, body


def tradeoff_table(report: Report) -> Table:
    secret = any(r.privacy_key_secret is not None for r in report.rows)
    human = any(r.privacy is not None and r.privacy.human for r in report.rows)
    queried = any(r.privacy is not None and r.privacy.queries for r in report.rows)
    several = report.has_judges
    headers = ["", "defense", "params", "eps", "TAR@1e-3", "EER", f"rank-1 re-id ({report.judge})",
               "leakage x random", "SAR@FMR1e-3", "worst attack"]
    if several:
        headers.append("worst judge: rank-1")
    if secret:
        headers.append("leakage, key secret")
    if human:
        headers.append("human top-1 (chance)")
    if queried:
        headers.append("target queries per victim")
    body = []
    for r in report.rows:
        p = r.privacy
        h = None if p is None else p.headline
        line = ["*" if r.pareto else "", r.defense, row_params(r), format_eps(r.epsilon, r.delta),
                fmt_est(r.utility.tar_1e3), fmt_est(r.utility.get("eer")),
                fmt_est(h and h.rank1), fmt_est(h and h.leakage_ratio, 1), fmt_est(h and h.sar),
                (p.attack or "") if p else ""]
        if several:
            w = p.worst_judge if p else None
            line.append(f"{fmt_est(p.judges()[w][1].rank1)} ({w})" if w else "")
        if secret:
            ps = r.privacy_key_secret
            line.append("" if ps is None else "n/a: ciphertext" if ps.not_applicable
                        else fmt_est(ps.headline.leakage_ratio, 1))
        if human:
            hu = p.human if p else None
            line.append(f"{fmt_est(hu['accuracy'])} ({hu['chance']:.2f})" if hu else "")
        if queried:
            q = p.queries if p else None
            line.append(f"{q['per_victim']:g}" if q else "")
        body.append(line)
    base = report.extra.get("privacy_baselines") or {}
    if base:
        pad = [""] * (int(several) + int(secret) + int(human) + int(queried))
        g = base.get("random_guess_rank1")
        body.append(["", "random guess", "", "", "", "", f"{g:.3f}", "1.0", "", ""] + pad)
        for name in ("random_face", "mean_face"):
            b = (base.get(name) or {}).get("judge")
            if b:
                body.append(["", name.replace("_", " "), "", "", "", "", fmt_est(b["rank1"]),
                             fmt_est(b["leakage_ratio"], 1), fmt_est(b[SAR_1E3]), ""] + pad)
    return headers, body


def main_table(report: Report) -> Table:
    return tradeoff_table(report) if report.has_privacy else utility_table(report)


def footnotes(report: Report) -> list[str]:
    if report.has_privacy:
        notes = ["value [95% interval]. rank-1 re-id: share of victims whose reconstruction the judge "
                 "ranks first among all victims; leakage x random = rank-1 / (1/N); SAR = share of "
                 "reconstruction-vs-genuine comparisons passing the judge's threshold at FMR 1e-3; "
                 "worst attack = the attack with the highest rank-1; * = Pareto-optimal "
                 "(TAR@1e-3 up, leakage down)."]
        if report.has_judges:
            notes.append("worst judge: the highest rank-1 of the independent judges (each with its own worst "
                         "attack); the rank-1 column is the first judge's.")
        if any(r.privacy_key_secret is not None for r in report.rows):
            notes.append("keyed rows: the headline privacy figures assume a disclosed key (stolen token); "
                         "the last column keeps the key secret.")
        return notes + [f"note: {n}" for n in report.extra.get("notes", [])]
    notes = ["value [95% interval]; drop = unprotected TAR@1e-3 minus this row's; "
             "bytes = storage per template."]
    if any(r.utility_stolen_token is not None for r in report.rows):
        notes.append("stolen token: per-user-key defenses measured again with every template made with "
                     "one key (an impostor holding the victim's key), the honest worst case.")
    if any(_few(k, r.pairs.get("impostor")) for r in report.rows for k, _ in UTILITY_COLUMNS):
        notes.append("* this FAR rests on fewer than 10 impostor scores above the threshold: "
                     "too few impostor pairs to measure it; use more identities.")
    return notes + [f"note: {n}" for n in report.extra.get("notes", [])]


# ---------------------------------------------------------------- privacy in detail


def _blocks(r: RowEstimates, with_oracle: bool = False) -> list[tuple[str, PrivacyEstimates]]:
    out = [(b.key or "", b) for b in (r.privacy, r.privacy_key_secret) if b is not None and not b.not_applicable]
    if with_oracle and r.oracle is not None:
        out.append(("oracle", r.oracle))
    return out


def judge_table(report: Report) -> Table:
    headers = ["defense", "params", "key", "judge", "attack", "rank-1", "rank-5", "SAR@FMR1e-3", "leakage x random"]
    body = []
    for r in report.rows:
        for key, block in _blocks(r, with_oracle=True):
            every = block.judges()
            worst = block.worst_judge
            for name, (attack, j) in every.items():
                mark = " (worst)" if name == worst and len(every) > 1 else ""
                body.append([r.defense, row_params(r), key, name + mark, attack, fmt_est(j.rank1), fmt_est(j.rank5),
                             fmt_est(j.sar), fmt_est(j.leakage_ratio, 1)])
    return headers, body


def templates_table(report: Report) -> Table:
    """Per row and independent judge: rank-1 and SAR (its worst attack) with K stolen templates per victim."""
    ks = report.templates_ks
    headers = ["defense", "params", "judge", *[f"K={k}: rank-1 / SAR@FMR1e-3 (attack)" for k in ks]]
    body = []
    for r in report.rows:
        blocks = {k: report.privacy_at(r, k) for k in ks}
        first = next((b for b in blocks.values() if b is not None and not b.not_applicable), None)
        if first is None or not r.privacy_templates:
            continue
        names = list(first.judges()) or [first.judge]
        for name in names:
            line = [r.defense, row_params(r), name]
            for k in ks:
                b = blocks[k]
                if b is None or b.not_applicable:
                    line.append("")
                    continue
                attack, j = b.judges().get(name) or (b.attack, b.headline)
                line.append(f"{fmt_est(j.rank1)} / {fmt_est(j.sar)} ({attack})")
            body.append(line)
    return headers, body


def templates_notes(report: Report) -> list[str]:
    return [f"K stolen templates per victim (--templates-per-victim {','.join(map(str, report.templates_per_victim))}"
            f"): the attacker holds K templates of each victim, made from K different photos, none of them in "
            "the judge's gallery, and combines them (each template's estimate of the raw embedding averaged on "
            "the unit sphere; nearest: the mean of its K scores). Every K uses the same victims, gallery and "
            "fitted attacks; the first K is the headline of the other sections. Headline key scenario only."]


def attack_table(report: Report) -> Table:
    headers = ["defense", "params", "key", "attack", "rank-1 (judge)", "rank-5 (judge)", "SAR (judge)",
               "rank-1 (target as judge)", "SSIM"]
    body = []
    for r in report.rows:
        for key, block in _blocks(r):
            for name, a in block.per_attack.items():
                j: JudgeFigures = a.judge
                body.append([r.defense, row_params(r), key, name, fmt_est(j.rank1), fmt_est(j.rank5), fmt_est(j.sar),
                             fmt_est(a.target_judge.rank1), fmt_est(a.ssim)])
    return headers, body


def realism_table(report: Report) -> Table:
    """Per row and attack: what a person would see (facepii.judging.realism)."""
    headers = ["defense", "params", "key", "attack", "sharpness (x real photos)", "face found", "detector score",
               "score to nearest real stranger"]
    body = []
    for r in report.rows:
        for key, block in _blocks(r):
            for name, a in block.per_attack.items():
                if not a.realism:
                    continue
                g = a.realism.get
                mark = " (worst)" if name == block.attack else ""
                body.append([r.defense, row_params(r), key, name + mark, fmt_est(g("sharpness"), 2),
                             fmt_est(g("face_found")), fmt_est(g("detector_score")), fmt_est(g("nearest_real"))])
    return headers, body


def realism_notes(report: Report) -> list[str]:
    prior = (report.extra.get("attacker") or {}).get("prior")
    prior = prior if isinstance(prior, dict) else {}
    out = ["Sharpness: fine detail (variance of the Laplacian of the grey face) of the reconstructions over that of "
           "the victims' real aligned photos, 1 = as much as a photo. Face found: the share in which a face "
           "detector (YuNet) finds a face, and its mean score. Score to the nearest real stranger: the headline "
           "judge's score between each reconstruction and the closest real photo of ANOTHER victim (how close it "
           "lies to real faces in the judge's feature space). Intervals over victims."]
    if prior.get("kind"):
        out.append(f"The attacker's face prior: {prior.get('kind')} ({prior.get('photos')} photos of "
                   f"{prior.get('identities')} identities, {prior.get('source') or 'given'}; {prior.get('from')}).")
    return out
