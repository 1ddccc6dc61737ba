"""Human re-identification study kit: lineups from a report, a rater page, and scoring.

Machines and people fail differently: a blurry reconstruction that fools no
face-recognition model may still be recognised by a person (Wenger et al.
measured both). This module turns a report folder written by
``facepii evaluate --out DIR`` into a lineup study and scores the answers.

- ``save_material``: ``evaluate --out`` keeps, under ``DIR/lineup/``, each
  row's reconstructions (the row's worst attack) and up to three gallery
  photos per victim — never the photo a template came from.
- ``build_study``: each trial shows one reconstruction and ``size`` real
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
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepii import metrics
from facepii.errors import FacepiiError, ParameterError

MATERIAL_SCHEMA = "facepii.lineup-material/1"
KEY_SCHEMA = "facepii.lineup-key/1"
ANSWERS_SCHEMA = "facepii.lineup-answers/1"


def _png(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(img, np.uint8)).save(path, optimize=True)


def save_material(evaluation, out_dir: str | Path) -> Path | None:
    """Write the lineup material of an evaluation under ``out_dir/lineup`` (personal data)."""
    if not evaluation.reconstructions or evaluation.gallery_sets is None:
        return None
    root = Path(out_dir) / "lineup"
    if root.exists():
        shutil.rmtree(root)
    victims = [str(v) for v in evaluation.victims]
    gallery = []
    for i, photos in enumerate(evaluation.gallery_sets):
        files = []
        for k, img in enumerate(photos):
            _png(img, root / "gallery" / f"v{i:03d}_{k}.png")
            files.append(f"gallery/v{i:03d}_{k}.png")
        gallery.append(files)
    rows = []
    for r, (label, faces) in enumerate(evaluation.reconstructions.items()):
        files = []
        for i, img in enumerate(faces):
            _png(img, root / "recon" / f"r{r:02d}_v{i:03d}.png")
            files.append(f"recon/r{r:02d}_v{i:03d}.png")
        row = next((x for x in evaluation.report.rows if _label(x) == label), {})
        rows.append({"label": label, "attack": (row.get("privacy") or {}).get("attack"), "files": files})
    manifest = {"schema": MATERIAL_SCHEMA, "victims": victims, "gallery": gallery, "rows": rows,
                "note": "Personal data: victims' photos and reconstructions of their faces."}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


def _label(row: dict) -> str:
    from facepii.pipeline import row_label

    return row_label(row)


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


def build_study(report_dir: str | Path, study_dir: str | Path, size: int = 5, trials_per_row: int = 20,
                seed: int = 0) -> dict:
    """Write a self-contained lineup study; returns a summary."""
    report_dir = Path(report_dir)
    mpath = report_dir / "lineup" / "manifest.json"
    if not mpath.is_file():
        raise FacepiiError(f"{report_dir}: no lineup material (lineup/manifest.json); write it with "
                           "`facepii evaluate ... --out DIR` (with attacks, on photos).")
    manifest = json.loads(mpath.read_text())
    if manifest.get("schema") != MATERIAL_SCHEMA:
        raise FacepiiError(f"{mpath}: not facepii lineup material.")
    trials = make_trials(manifest, size, trials_per_row, seed)
    study_dir = Path(study_dir)
    if (study_dir / "index.html").exists() or (study_dir / "key.json").exists():
        raise FacepiiError(f"{study_dir}: a study is already there; choose another --out (nothing was overwritten).")
    assets = study_dir / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}

    def asset(material_file: str) -> str:
        # anonymous names: nothing in a file name tells a rater which row, victim or attack it is
        if material_file not in names:
            names[material_file] = f"assets/img_{len(names) + 1:04d}.png"
            shutil.copyfile(report_dir / "lineup" / material_file, study_dir / names[material_file])
        return names[material_file]

    digest = hashlib.sha256(json.dumps([t.__dict__ for t in trials], sort_keys=True).encode()).hexdigest()[:10]
    study_id = f"facepii-lineup-{digest}"
    page_trials = [{"id": t.id, "probe": asset(t.probe), "options": [asset(o) for o in t.options]} for t in trials]
    page = PAGE.replace("/*STUDY*/null", json.dumps({"study": study_id, "size": size, "trials": page_trials}))
    (study_dir / "index.html").write_text(page, encoding="utf-8")
    key = {"schema": KEY_SCHEMA, "study": study_id, "size": size, "seed": seed, "report": str(report_dir),
           "rows": [r["label"] for r in manifest["rows"]],
           "trials": [{"id": t.id, "row": t.row, "answer": t.answer, "victim": t.victim, "attention": t.attention}
                      for t in trials]}
    (study_dir / "key.json").write_text(json.dumps(key, indent=1))
    with zipfile.ZipFile(study_dir / "share.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.write(study_dir / "index.html", "study/index.html")
        for f in sorted(assets.iterdir()):
            z.write(f, f"study/assets/{f.name}")
    return {"study": study_id, "trials": len(trials), "attention_checks": sum(t.attention for t in trials),
            "rows": len(manifest["rows"]), "size": size, "dir": str(study_dir)}


# ---------------------------------------------------------------- scoring


def load_answers(paths: list[str | Path], study: str) -> list[dict]:
    from facepii.report import read_json

    out = []
    for p in paths:
        p = Path(p)
        a = read_json(p, "answers")
        if not isinstance(a, dict) or a.get("schema") != ANSWERS_SCHEMA:
            raise FacepiiError(f"{p}: not a facepii lineup answers file.")
        if a.get("study") != study:
            raise FacepiiError(f"{p}: answers for study {a.get('study')!r}, not this study ({study}).")
        a["_file"] = str(p)
        out.append(a)
    return out


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
    kpath = Path(study_dir) / "key.json"
    if not kpath.is_file():
        raise FacepiiError(f"{study_dir}: no key.json (the study's answers); pass the folder `lineup build` wrote.")
    key = json.loads(kpath.read_text())
    if not answer_files:
        raise ParameterError("give at least one ANSWERS.json file.")
    size = int(key["size"])
    trials = key["trials"]
    tindex = {t["id"]: i for i, t in enumerate(trials)}
    raters = load_answers(answer_files, key["study"])
    kept, excluded = [], []
    C = np.full((len(raters), len(trials)), np.nan)
    choice_cant = np.zeros((len(raters), len(trials)), bool)
    for r, a in enumerate(raters):
        for ans in a.get("answers", []):
            i = tindex.get(ans.get("trial"))
            if i is None:
                raise FacepiiError(f"{a['_file']}: unknown trial {ans.get('trial')!r}.")
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
    from tabulate import tabulate

    from facepii.report import fmt_est

    body = [[r["row"], r["trials"], r["responses"], fmt_est(r["accuracy"]), f"{r['chance']:.3f}",
             f"{r['cant_tell_rate']:.2f}"] for r in result["rows"]]
    return tabulate(body, headers=["row", "trials", "responses", "human top-1 [95%]", "chance", "can't tell"],
                    tablefmt="simple", disable_numparse=True)


def add_to_report(result: dict, report_dir: str | Path) -> Path:
    """Add ``privacy.human`` to the report's rows and rewrite report.json/.md/.html."""
    from facepii.pipeline import Evaluation
    from facepii.plots import write_outputs
    from facepii.report import Report

    path = Path(report_dir) / "report.json"
    rep = Report.from_json(path)
    by_label = {r["row"]: r for r in result["rows"]}
    n = 0
    for row in rep.rows:
        h = by_label.get(_label(row))
        if h and row.get("privacy") is not None:
            row["privacy"]["human"] = {"accuracy": h["accuracy"], "chance": h["chance"],
                                       "cant_tell_rate": h["cant_tell_rate"], "responses": h["responses"],
                                       "trials": h["trials"], "raters": result["raters_kept"],
                                       "study": result["study"]}
            n += 1
    if n == 0:
        raise FacepiiError(f"{path}: no row of this report is in the study ({result['study']}).")
    rep.extra["human_study"] = {k: result[k] for k in ("study", "size", "raters", "raters_kept", "min_attention")}
    rep.extra["human_study"]["raters_excluded"] = len(result["raters_excluded"])
    gate = rep.extra.get("gate")
    write_outputs(Evaluation(rep), report_dir, gate)
    return path


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Face lineup study</title>
<style>
body{font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#fafafa;color:#1b1b1b}
main{max-width:1100px;margin:1.5em auto;padding:0 1em}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1.2em 1.5em;margin-bottom:1em}
.probe{text-align:center}.probe img{width:196px;height:196px;border:3px solid #333;border-radius:6px}
.options{display:flex;flex-wrap:wrap;gap:14px;justify-content:center;margin-top:1em}
.opt{border:2px solid #ccc;border-radius:6px;background:#fff;padding:6px;cursor:pointer;font:inherit}
.opt:hover,.opt:focus{border-color:#1a73e8}.opt img{width:150px;height:150px;display:block}
button.main{font:inherit;padding:.5em 1.2em;border-radius:6px;border:1px solid #1a73e8;background:#1a73e8;
color:#fff;cursor:pointer}
button.main:disabled{opacity:.4;cursor:default}
button.cant{font:inherit;padding:.4em 1em;margin-top:1em;border-radius:6px;border:1px solid #999;
background:#eee;cursor:pointer}
.note{color:#555;font-size:14px}.warn{background:#fff4e5;border:1px solid #f0b429;padding:.6em 1em;border-radius:6px}
.hidden{display:none}
</style></head><body><main>
<section id="intro" class="card">
<h1>Who is this?</h1>
<p class="warn">This study shows photos of <b>real people</b> and computer-made faces derived from
them. Please do not copy, share or screenshot them. The page works offline: nothing you do here leaves
this computer except the answers file you choose to download and send back.</p>
<p>In each of <b id="n-trials"></b> questions you see one face at the top, and below it <b id="n-size"></b>
photos of different people. Pick the person the top face shows. If you cannot tell, say so — that is a
useful answer too. Some questions check attention: their top face is an ordinary photo.</p>
<p class="note">Keys: 1–9 pick a photo, 0 = "can't tell". Your progress is kept in this browser if you
close the page.</p>
<p><label>Your participant code: <input id="rater" autocomplete="off"></label></p>
<p><label><input type="checkbox" id="consent"> I have read the above, I take part voluntarily, and I
agree that my answers (participant code, choices, response times) are used for this study.</label></p>
<p><button class="main" id="start" disabled>Start</button></p>
</section>
<section id="trial" class="card hidden">
<p class="note" id="progress"></p>
<div class="probe"><div class="note">Who is this?</div><img id="probe" alt="face to recognise"></div>
<div class="options" id="options"></div>
<div style="text-align:center"><button class="cant" id="cant">Can't tell (0)</button></div>
</section>
<section id="done" class="card hidden">
<h2>Thank you!</h2>
<p>Download your answers and send the file to the researcher. Nothing was sent anywhere.</p>
<p><button class="main" id="download">Download answers</button></p>
<p class="note" id="saved"></p>
</section>
</main>
<script>
const STUDY = /*STUDY*/null;
const KEY = "facepii-lineup-" + STUDY.study;
let state = JSON.parse(localStorage.getItem(KEY) || "null") || {rater: "", answers: [], started: null};
let shownAt = 0;
const $ = id => document.getElementById(id);
$("n-trials").textContent = STUDY.trials.length;
$("n-size").textContent = STUDY.size;
function save() { localStorage.setItem(KEY, JSON.stringify(state)); }
function check() { $("start").disabled = !($("consent").checked && $("rater").value.trim()); }
$("consent").addEventListener("change", check); $("rater").addEventListener("input", check);
if (state.rater) { $("rater").value = state.rater; }
$("start").addEventListener("click", () => {
  state.rater = $("rater").value.trim(); state.started = state.started || new Date().toISOString(); save();
  $("intro").classList.add("hidden"); show();
});
function show() {
  const i = state.answers.length;
  if (i >= STUDY.trials.length) { finish(); return; }
  const t = STUDY.trials[i];
  $("trial").classList.remove("hidden");
  $("progress").textContent = "Question " + (i + 1) + " of " + STUDY.trials.length;
  $("probe").src = t.probe;
  const box = $("options"); box.innerHTML = "";
  t.options.forEach((src, k) => {
    const b = document.createElement("button");
    b.className = "opt"; b.dataset.choice = k; b.title = "photo " + (k + 1);
    b.innerHTML = '<img alt="photo ' + (k + 1) + '" src="' + src + '"><div>' + (k + 1) + "</div>";
    b.addEventListener("click", () => answer(k));
    box.appendChild(b);
  });
  shownAt = performance.now();
}
function answer(choice) {
  const t = STUDY.trials[state.answers.length];
  if (!t) return;
  state.answers.push({trial: t.id, choice: choice, ms: Math.round(performance.now() - shownAt)});
  save(); show();
}
$("cant").addEventListener("click", () => answer("cant_tell"));
document.addEventListener("keydown", e => {
  if ($("trial").classList.contains("hidden")) return;
  if (e.key === "0") answer("cant_tell");
  const k = parseInt(e.key, 10);
  if (k >= 1 && k <= STUDY.size) answer(k - 1);
});
function finish() {
  $("trial").classList.add("hidden"); $("done").classList.remove("hidden");
}
$("download").addEventListener("click", () => {
  const data = {schema: "facepii.lineup-answers/1", study: STUDY.study, rater: state.rater,
                started: state.started, finished: new Date().toISOString(), answers: state.answers};
  const blob = new Blob([JSON.stringify(data, null, 1)], {type: "application/json"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "answers-" + state.rater.replace(/[^A-Za-z0-9_-]/g, "_") + "-" + STUDY.study + ".json";
  document.body.appendChild(a); a.click(); a.remove();
  $("saved").textContent = "Saved as " + a.download;
});
</script></body></html>
"""
