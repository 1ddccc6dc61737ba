"""Human re-identification study kit: lineups from a report, a rater page, and scoring.

Machines and people fail differently: a blurry reconstruction that fools no
face-recognition model may still be recognised by a person (Wenger et al.
measured both). This module turns a report folder written by
``facepii evaluate --out DIR`` into a lineup study and scores the answers.

- ``material`` (written by :mod:`facepii.outputs`): ``evaluate --out`` keeps, under ``DIR/lineup/``, each
  row's reconstructions (the row's worst attack) and up to three gallery
  photos per victim — never the photo a template came from.
- ``plan_study`` / ``build_study``: each trial shows one reconstruction and ``size`` real
  photos: one of the victim and ``size - 1`` of other victims, in a seeded
  order; trials from every row are interleaved; attention checks show a real
  photo instead of a reconstruction. Writes ``index.html`` + ``assets/`` (a
  page that works from disk, no network, no server), ``share.zip`` (what a
  rater receives) and ``key.json`` (the answers: stays with the researcher).
- ``score_study``: per row, human top-1 accuracy with a 95% interval
  (bootstrap over raters and trials), chance 1/size, the "can't tell" rate;
  raters who fail the attention checks are excluded and counted. A "can't
  tell" is scored as a guess (1/size), so accuracy compares with chance.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

from facepii import metrics
from facepii.errors import FacepiiError, ParameterError
from facepii.labels import fmt_est
from facepii.report import Report, read_json

MATERIAL_SCHEMA = "facepii.lineup-material/1"
KEY_SCHEMA = "facepii.lineup-key/1"
ANSWERS_SCHEMA = "facepii.lineup-answers/1"


def material(evaluation) -> dict | None:
    """The lineup material of an evaluation as data: file name -> image, and the manifest."""
    if not evaluation.reconstructions or evaluation.gallery_sets is None:
        return None
    images: dict[str, np.ndarray] = {}
    gallery = []
    for i, photos in enumerate(evaluation.gallery_sets):
        files = []
        for k, img in enumerate(photos):
            files.append(f"gallery/v{i:03d}_{k}.png")
            images[files[-1]] = img
        gallery.append(files)
    rows = []
    for r, (n, faces) in enumerate(sorted(evaluation.reconstructions.items())):
        files = []
        for i, img in enumerate(faces):
            files.append(f"recon/r{r:02d}_v{i:03d}.png")
            images[files[-1]] = img
        row = evaluation.report.rows[n]
        rows.append({"label": row.label, "attack": row.privacy.attack if row.privacy else None, "files": files})
    manifest = {"schema": MATERIAL_SCHEMA, "victims": [str(v) for v in evaluation.victims], "gallery": gallery,
                "rows": rows, "note": "Personal data: victims' photos and reconstructions of their faces."}
    return {"manifest": manifest, "images": images}


MATERIAL_FILE = re.compile(r"^(gallery|recon)/[A-Za-z0-9_.-]{1,100}\.png$")


def read_manifest(lineup_dir: Path) -> dict:
    """A lineup folder's manifest, checked: its schema and shape, and every file it names is a plain
    file inside that folder (a manifest is untrusted input: it never makes facepii read elsewhere)."""
    mpath = lineup_dir / "manifest.json"
    m = read_json(mpath, "lineup manifest")
    bad = FacepiiError(f"{mpath}: not facepii lineup material (schema {MATERIAL_SCHEMA}).")
    if not isinstance(m, dict) or m.get("schema") != MATERIAL_SCHEMA:
        raise bad
    victims, gallery, rows = m.get("victims"), m.get("gallery"), m.get("rows")
    if not (isinstance(victims, list) and isinstance(gallery, list) and isinstance(rows, list)
            and len(victims) == len(gallery) and all(isinstance(v, str) for v in victims)
            and all(isinstance(g, list) and g for g in gallery)
            and all(isinstance(r, dict) and isinstance(r.get("label"), str) and isinstance(r.get("files"), list)
                    and len(r["files"]) == len(victims) for r in rows)):
        raise bad
    root = lineup_dir.resolve()
    for f in [f for g in gallery for f in g] + [f for r in rows for f in r["files"]]:
        if not isinstance(f, str) or not MATERIAL_FILE.match(f):
            raise FacepiiError(f"{mpath}: names {f!r}, not a lineup material file (gallery/NAME.png or "
                               "recon/NAME.png inside the lineup folder).")
        p = lineup_dir / f
        if p.is_symlink() or not p.is_file() or root not in p.resolve().parents:
            raise FacepiiError(f"{mpath}: {f} is missing or not a plain file inside {lineup_dir}.")
    return m


# ---------------------------------------------------------------- building


@dataclass
class Trial:
    id: str
    row: str              # the report row, or "attention check"
    probe: str            # material file shown as the face to recognise
    options: list[str]    # material files of the lineup photos, in display order
    answer: int           # index of the victim's photo in options
    victim: str
    attention: bool


def make_trials(manifest: dict, size: int = 5, trials_per_row: int = 20, seed: int = 0,
                n_attention: int | None = None) -> list[Trial]:
    """The trials of a study (seeded): every row's, plus attention checks, interleaved."""
    victims = manifest["victims"]
    gallery = manifest["gallery"]
    nv = len(victims)
    if size < 2:
        raise ParameterError(f"--size must be >= 2 (one victim photo and at least one other), got {size}.")
    if size > nv:
        raise ParameterError(f"--size {size}: only {nv} victims to fill a lineup; use --size {nv} or less.")
    if trials_per_row < 1:
        raise ParameterError(f"--trials-per-row must be >= 1, got {trials_per_row}.")
    rng = np.random.default_rng(seed)

    def lineup(v: int, exclude: str | None = None) -> tuple[list[str], int]:
        own = [f for f in gallery[v] if f != exclude] or gallery[v]
        genuine = own[int(rng.integers(len(own)))]
        others = rng.choice([u for u in range(nv) if u != v], size=size - 1, replace=False)
        opts = [genuine] + [gallery[int(u)][int(rng.integers(len(gallery[int(u)])))] for u in others]
        order = rng.permutation(size)
        opts = [opts[i] for i in order]
        return opts, int(np.flatnonzero(order == 0)[0])

    trials: list[Trial] = []
    for row in manifest["rows"]:
        k = min(trials_per_row, nv)
        for v in rng.choice(nv, size=k, replace=False):
            v = int(v)
            opts, ans = lineup(v)
            trials.append(Trial("", row["label"], row["files"][v], opts, ans, victims[v], False))
    n_att = max(2, round(0.1 * len(trials))) if n_attention is None else n_attention
    for _ in range(n_att):
        v = int(rng.integers(nv))
        probe = gallery[v][int(rng.integers(len(gallery[v])))]
        opts, ans = lineup(v, exclude=probe)
        trials.append(Trial("", "attention check", probe, opts, ans, victims[v], True))
    order = rng.permutation(len(trials))
    trials = [trials[i] for i in order]
    for i, t in enumerate(trials):
        t.id = f"t{i + 1:03d}"
    return trials


@dataclass
class StudyPlan:
    """A lineup study as data; :func:`facepii.outputs.write_study` writes it."""

    study: str
    size: int
    seed: int
    report_dir: Path
    trials: list[Trial]
    assets: dict[str, str]     # material file (relative to report_dir/lineup) -> anonymous asset name
    rows: list[str]

    def page_data(self) -> dict:
        return {"study": self.study, "size": self.size,
                "trials": [{"id": t.id, "probe": self.assets[t.probe], "options": [self.assets[o] for o in t.options]}
                           for t in self.trials]}

    def key(self) -> dict:
        return {"schema": KEY_SCHEMA, "study": self.study, "size": self.size, "seed": self.seed,
                "report": str(self.report_dir), "rows": self.rows,
                "trials": [{"id": t.id, "row": t.row, "answer": t.answer, "victim": t.victim,
                            "attention": t.attention} for t in self.trials]}


def plan_study(report_dir: str | Path, size: int = 5, trials_per_row: int = 20, seed: int = 0) -> StudyPlan:
    """Seeded trials from a report folder's lineup material; assets get anonymous names (nothing in a
    file name tells a rater which row, victim or attack it is)."""
    report_dir = Path(report_dir)
    lineup_dir = report_dir / "lineup"
    if not (lineup_dir / "manifest.json").is_file():
        raise FacepiiError(f"{report_dir}: no lineup material (lineup/manifest.json); write it with "
                           "`facepii evaluate ... --out DIR` (with attacks, on photos).")
    manifest = read_manifest(lineup_dir)
    trials = make_trials(manifest, size, trials_per_row, seed)
    assets: dict[str, str] = {}
    for t in trials:
        for f in [t.probe, *t.options]:
            assets.setdefault(f, f"assets/img_{len(assets) + 1:04d}.png")
    digest = hashlib.sha256(json.dumps([t.__dict__ for t in trials], sort_keys=True).encode()).hexdigest()[:10]
    return StudyPlan(f"facepii-lineup-{digest}", size, seed, report_dir, trials, assets,
                     [r["label"] for r in manifest["rows"]])


def page_template() -> str:
    from importlib.resources import files

    return files("facepii").joinpath("assets/lineup.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------- scoring


def load_answers(paths: list[str | Path], study: str, size: int, trial_ids: set[str]) -> list[dict]:
    """Raters' answer files, checked: this study's, one answer per trial at most, each choice a
    lineup position (0..size-1) or "cant_tell". Anything else is refused, never scored."""
    out = []
    for p in paths:
        p = Path(p)
        a = read_json(p, "answers")
        if not isinstance(a, dict) or a.get("schema") != ANSWERS_SCHEMA:
            raise FacepiiError(f"{p}: not a facepii lineup answers file.")
        if a.get("study") != study:
            raise FacepiiError(f"{p}: answers for study {a.get('study')!r}, not this study ({study}).")
        answers = a.get("answers")
        if not isinstance(answers, list):
            raise FacepiiError(f"{p}: 'answers' must be a list.")
        seen = set()
        for ans in answers:
            t = ans.get("trial") if isinstance(ans, dict) else None
            if t not in trial_ids:
                raise FacepiiError(f"{p}: unknown trial {t!r}.")
            if t in seen:
                raise FacepiiError(f"{p}: trial {t} is answered twice; keep one answer per trial.")
            seen.add(t)
            c = ans.get("choice")
            if not (c == "cant_tell" or (isinstance(c, int) and not isinstance(c, bool) and 0 <= c < size)):
                raise FacepiiError(f"{p}: trial {t}: choice {c!r} is not a lineup position 0..{size - 1} "
                                   "or \"cant_tell\".")
        a["_file"] = str(p)
        out.append(a)
    return out


def read_key(study_dir: Path) -> dict:
    kpath = study_dir / "key.json"
    if not kpath.is_file():
        raise FacepiiError(f"{study_dir}: no key.json (the study's answers); pass the folder `lineup build` wrote.")
    key = read_json(kpath, "study key")
    bad = FacepiiError(f"{kpath}: not a facepii lineup key ({KEY_SCHEMA}).")
    if not isinstance(key, dict) or key.get("schema") != KEY_SCHEMA or not isinstance(key.get("study"), str):
        raise bad
    size, trials, rows = key.get("size"), key.get("trials"), key.get("rows")
    if not (isinstance(size, int) and not isinstance(size, bool) and size >= 2 and isinstance(trials, list)
            and isinstance(rows, list) and all(isinstance(r, str) for r in rows)):
        raise bad
    for t in trials:
        if not (isinstance(t, dict) and isinstance(t.get("id"), str) and isinstance(t.get("row"), str)
                and isinstance(t.get("answer"), int) and not isinstance(t.get("answer"), bool)
                and 0 <= t["answer"] < size and isinstance(t.get("attention"), bool)):
            raise bad
    if len({t["id"] for t in trials}) != len(trials):
        raise bad
    return key


def credit(choice, answer: int, size: int) -> float:
    """1 for the victim's photo, 1/size for "can't tell" (a guess), 0 otherwise."""
    if choice == "cant_tell":
        return 1.0 / size
    return 1.0 if choice == answer else 0.0


def two_way_bootstrap(A: np.ndarray, n_boot: int = metrics.N_BOOT, seed: int = 0) -> metrics.Estimate:
    """Mean of a raters x trials matrix (NaN = no answer), resampling raters and trials."""
    mask = ~np.isnan(A)
    if not mask.any():
        return metrics.Estimate(float("nan"), (float("nan"), float("nan")))
    X = np.where(mask, A, 0.0)
    value = float(X.sum() / mask.sum())
    Wr = metrics.bootstrap_weights(A.shape[0], n_boot, seed)
    Wt = metrics.bootstrap_weights(A.shape[1], n_boot, seed + 1)
    num = np.einsum("br,rt,bt->b", Wr, X, Wt)
    den = np.einsum("br,rt,bt->b", Wr, mask.astype(float), Wt)
    with np.errstate(invalid="ignore", divide="ignore"):
        return metrics.Estimate(value, metrics.percentile_ci(num / den))


def score_study(study_dir: str | Path, answer_files: list[str | Path], min_attention: float = 1.0,
                n_boot: int = metrics.N_BOOT, seed: int = 0) -> dict:
    """Per-row human top-1 accuracy (see the module docstring)."""
    key = read_key(Path(study_dir))
    if not answer_files:
        raise ParameterError("give at least one ANSWERS.json file.")
    size = int(key["size"])
    trials = key["trials"]
    tindex = {t["id"]: i for i, t in enumerate(trials)}
    raters = load_answers(answer_files, key["study"], size, set(tindex))
    kept, excluded = [], []
    C = np.full((len(raters), len(trials)), np.nan)
    choice_cant = np.zeros((len(raters), len(trials)), bool)
    for r, a in enumerate(raters):
        for ans in a["answers"]:
            i = tindex[ans["trial"]]
            C[r, i] = credit(ans.get("choice"), trials[i]["answer"], size)
            choice_cant[r, i] = ans.get("choice") == "cant_tell"
        att = [i for i, t in enumerate(trials) if t["attention"]]
        passed = float(np.mean([C[r, i] == 1.0 for i in att])) if att else 1.0
        entry = {"rater": a.get("rater"), "file": a["_file"], "attention_passed": passed,
                 "answered": int((~np.isnan(C[r])).sum())}
        (kept if passed >= min_attention else excluded).append((r, entry))
    keep = [r for r, _ in kept]
    rows = []
    for label in key["rows"] + ["attention check"]:
        cols = [i for i, t in enumerate(trials) if t["row"] == label]
        A = C[np.ix_(keep, cols)] if keep else np.zeros((0, len(cols)))
        answered = ~np.isnan(A)
        cant = choice_cant[np.ix_(keep, cols)] if keep else np.zeros((0, len(cols)), bool)
        est = two_way_bootstrap(A, n_boot, seed) if keep else metrics.Estimate(float("nan"), (float("nan"),) * 2)
        rows.append({
            "row": label, "trials": len(cols), "responses": int(answered.sum()),
            "accuracy": est.to_dict(), "chance": 1.0 / size,
            "cant_tell_rate": float(cant.sum() / max(answered.sum(), 1)),
            "accuracy_when_answered": float(np.nanmean(np.where(cant, np.nan, A))) if (answered & ~cant).any()
            else None,
        })
    return {"study": key["study"], "size": size, "raters": len(raters), "raters_kept": len(kept),
            "raters_excluded": [e for _, e in excluded], "min_attention": min_attention, "rows": rows}


def score_table(result: dict) -> str:
    body = [[r["row"], r["trials"], r["responses"], fmt_est(r["accuracy"]), f"{r['chance']:.3f}",
             f"{r['cant_tell_rate']:.2f}"] for r in result["rows"]]
    return tabulate(body, headers=["row", "trials", "responses", "human top-1 [95%]", "chance", "can't tell"],
                    tablefmt="simple", disable_numparse=True)


def add_human_figures(report: Report, result: dict, where: str = "report") -> int:
    """Put a scored study's figures into the report: ``privacy.human`` of every row in the study and the
    study's summary (``human_study``). Returns how many rows got figures (0 is an error)."""
    by_label = {r["row"]: r for r in result["rows"]}
    n = 0
    for row in report.rows:
        h = by_label.get(row.label)
        if h and row.privacy is not None:
            row.privacy.human = {"accuracy": h["accuracy"], "chance": h["chance"],
                                 "cant_tell_rate": h["cant_tell_rate"], "responses": h["responses"],
                                 "trials": h["trials"], "raters": result["raters_kept"], "study": result["study"]}
            n += 1
    if n == 0:
        raise FacepiiError(f"{where}: no row of this report is in the study ({result['study']}).")
    report.extra["human_study"] = {k: result[k] for k in ("study", "size", "raters", "raters_kept", "min_attention")}
    report.extra["human_study"]["raters_excluded"] = len(result["raters_excluded"])
    return n
