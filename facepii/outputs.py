"""The only module that writes files a user asked for: the ``--out`` folder, ``--json``, lineup studies.

Rules (docs/security.md):

- every output path is checked BEFORE the long work starts (:mod:`facepii.output_paths`:
  :func:`check_out_dir`, :func:`check_output_file`): a file where a folder belongs, a folder where a
  file belongs, a special file, an unwritable place, or a planted symbolic link
  ends the run at once with one line;
- each file is written to a temporary name beside it and then renamed over the
  destination (``os.replace`` replaces a link itself, never what it points to);
- facepii deletes nothing it did not write: an earlier ``lineup/`` folder is
  replaced only when it holds exactly the files its own manifest lists.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from facepii import lineup
from facepii import scores as S
from facepii.errors import FacepiiError
from facepii.gate import junit_text
from facepii.output_paths import (  # noqa: F401  (checks callers reach as outputs.check_*)
    LINEUP,
    OWNED,
    REPORT_FILES,
    SCORE_INDEX,
    SCORE_SCHEMA,
    SCORES,
    OutputError,
    check_cache_dir,
    check_out_dir,
    check_output_file,
    check_study_dir,
    file_sha256,
    own_lineup_files,
    own_score_files,
)
from facepii.plots import (
    close,
    det_figure,
    irreversibility_figure,
    linkability_figure,
    reconstruction_figure,
    templates_figure,
    tradeoff_figure,
)
from facepii.report import Evaluation, Report
from facepii.report.render import markdown, page

# ---------------------------------------------------------------- writing


def write_bytes(path: Path, data: bytes) -> Path:
    """Write beside the destination, then rename over it (atomic; a link at ``path`` is replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """UTF-8; a file name that is not UTF-8 (held as lone surrogates) is written with its bytes as \\xNN escapes,
    never an error after the work (score files percent-encode such names themselves)."""
    return write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def write_figure(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    close(fig)
    return write_bytes(path, buf.getvalue())


def png_bytes(img: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_json(report: Report, path: str | Path) -> Path:
    return write_text(Path(path), report.to_json() + "\n")


def write_junit(verdicts, path: str | Path) -> Path:
    return write_text(Path(path), junit_text(verdicts))


def write_outputs(evaluation: Evaluation, out_dir: str | Path) -> list[Path]:
    """report.json, report.md, report.html and, with privacy, tradeoff.png, reconstructions.png and
    the lineup material."""
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_debris(out)
    rep = evaluation.report
    paths = [write_json(rep, out / "report.json"), write_text(out / "report.md", markdown(rep))]
    images: dict[str, Path | None] = {}
    fig = det_figure(rep)
    if fig is not None:
        images["det"] = write_figure(fig, out / "det.png")
        paths.append(images["det"])
    if rep.has_unlinkability:
        fig = linkability_figure(rep)
        if fig is not None:
            images["linkability"] = write_figure(fig, out / "linkability.png")
            paths.append(images["linkability"])
    if rep.has_irreversibility:
        fig = irreversibility_figure(rep)
        if fig is not None:
            images["irreversibility"] = write_figure(fig, out / "irreversibility.png")
            paths.append(images["irreversibility"])
    if rep.has_templates:
        fig = templates_figure(rep)
        if fig is not None:
            images["templates"] = write_figure(fig, out / "templates.png")
            paths.append(images["templates"])
    if rep.has_privacy:
        images["tradeoff"] = write_figure(tradeoff_figure(rep), out / "tradeoff.png")
        paths.append(images["tradeoff"])
        if evaluation.reconstructions:
            recon = {rep.rows[n].label: f for n, f in sorted(evaluation.reconstructions.items())}
            images["reconstructions"] = write_figure(
                reconstruction_figure(evaluation.sources, evaluation.gallery, recon), out / "reconstructions.png")
            paths.append(images["reconstructions"])
            material = write_material(evaluation, out)
            if material is not None:
                paths.append(material)
        elif (out / "reconstructions.png").is_file():  # a report rewritten later (gate, lineup score)
            images["reconstructions"] = out / "reconstructions.png"
    paths.append(write_text(out / "report.html", page(rep, images)))
    if evaluation.items is not None:  # an evaluation (not a report rewritten): its scores, and no stale ones
        paths.append(write_scores(evaluation, out))
    return paths


def write_scores(evaluation: Evaluation, out: Path) -> Path:
    """scores/: per row ROW.csv and ROW.4col (utility pairs), ROW.judges.csv (the judges' scores behind the
    privacy figures), and index.json saying what each file holds. Files an earlier run listed in its
    index.json and this run does not write are removed (only those: facepii deletes nothing it did not
    write)."""
    root = out / SCORES
    old = set(own_score_files(root))
    items = evaluation.items
    files: list[dict] = []
    for n, r in enumerate(evaluation.report.rows):
        rs = r.scores
        if rs is None:
            continue
        stem = S.file_stem(n, r.label)
        title = f"facepii {r.label}"
        if rs.utility is not None:
            u = rs.utility
            common = {"row": r.label, "genuine_pairs": int(u.genuine.sum()), "genuine_total": u.genuine_total,
                      "impostor_pairs": int((~u.genuine).sum()), "impostor_total": u.impostor_total,
                      "impostor_sampled": u.sampled, "sample_seed": u.sample_seed, "scores": u.how}
            write_text(root / f"{stem}.csv", S.utility_csv(u, items, f"{title}: protected-vs-protected verification"))
            files.append({"file": f"{stem}.csv", "kind": "utility", "format": "csv", "columns": S.UTILITY_COLUMNS,
                          **common})
            write_text(root / f"{stem}.4col", S.four_column(u, items, f"{title}: protected-vs-protected verification"))
            files.append({"file": f"{stem}.4col", "kind": "utility", "format": "bob.measure four-column", **common})
        if rs.judges and items.gallery is not None:
            write_text(root / f"{stem}.judges.csv", S.judge_csv(rs.judges, items, f"{title}: the judges' scores"))
            files.append({"file": f"{stem}.judges.csv", "kind": "privacy", "format": "csv",
                          "columns": S.JUDGE_COLUMNS, "row": r.label,
                          "attacks": sorted({j.attack for j in rs.judges}),
                          "judges": sorted({j.judge for j in rs.judges}),
                          "thresholds@fmr=1e-3": {j.judge: j.threshold for j in rs.judges}})
    for f in files:
        f["sha256"] = file_sha256(root / f["file"])
    written = {root / f["file"] for f in files} | ({root / SCORE_INDEX} if files else set())
    for f in sorted(old - written):
        f.unlink(missing_ok=True)
    if files:
        write_text(root / SCORE_INDEX, json.dumps({"schema": SCORE_SCHEMA, "files": files}, indent=1) + "\n")
    elif root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    if root.is_dir():
        stale = sorted(p.name for p in root.iterdir() if p not in written)
        if stale:
            print(f"warning: {root}: {len(stale)} file(s) not of this report and not recognisably facepii's, left "
                  f"as they are: {', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''}", file=sys.stderr)
    return root


def write_material(evaluation, out: Path) -> Path | None:
    """The lineup material under ``out/lineup``, crash-safe: built in a fresh folder beside it (marked as
    facepii's), then the earlier one is renamed aside and the new one into place (two renames), and only
    then is the old one removed, file by file from its manifest. A kill at any point leaves either the old
    or the new material complete; the next run removes what facepii itself left half-done."""
    m = lineup.material(evaluation)
    if m is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    clean_debris(out)
    root = out / LINEUP
    own_lineup_files(root)  # an earlier lineup/ is all facepii's (checked before the work too)
    new = Path(tempfile.mkdtemp(dir=out, prefix=".lineup-new-"))
    (new / OWNED).write_text("built by facepii; removed by its next run if left behind\n")
    for name, img in m["images"].items():
        (new / name).parent.mkdir(parents=True, exist_ok=True)
        (new / name).write_bytes(png_bytes(img))
    (new / "manifest.json").write_text(json.dumps(m["manifest"], indent=1))
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(dir=out, prefix=".lineup-old-"))
        old.rmdir()
        root.rename(old)
        (old / OWNED).write_text("facepii's earlier lineup material; removed by its next run if left behind\n")
    new.rename(root)  # the marker stays: lineup/ is facepii's, and says so
    if old is not None:
        _remove_owned(old)
    return root


def _remove_owned(d: Path) -> None:
    """Remove a folder facepii built or moved aside: only the files its manifest lists and its marker."""
    listed = set()
    try:
        m = lineup.read_manifest(d)
        listed = {d / f for g in m["gallery"] for f in g} | {d / f for r in m["rows"] for f in r["files"]}
    except FacepiiError:
        pass  # a half-built folder: its files are all images facepii wrote (the marker says it is facepii's)
    for f in sorted(d.rglob("*"), reverse=True):
        if f.is_symlink():
            continue  # never follow or remove a link facepii did not make
        if f.is_file() and (f in listed or f.suffix == ".png" or f.name in ("manifest.json", OWNED)):
            f.unlink()
        elif f.is_dir():
            try:
                f.rmdir()
            except OSError:
                pass
    try:
        d.rmdir()
    except OSError:
        pass


def clean_debris(out: Path) -> list[Path]:
    """What an earlier run killed mid-write left under ``out`` (facepii's own only): folders it was
    building or moving aside (marked), and temporary files beside the files it writes."""
    removed = []
    for d in sorted(out.glob(".lineup-*-*")):
        if d.is_dir() and not d.is_symlink() and (d / OWNED).is_file():
            _remove_owned(d)
            removed.append(d)
    for name in (*REPORT_FILES, "report.json"):
        for t in out.glob(f".{name}.*"):
            if t.is_file() and not t.is_symlink():
                t.unlink()
                removed.append(t)
    return removed


def write_study(plan, study_dir: str | Path) -> Path:
    """index.html + assets/ (a page that works from disk), share.zip (what raters get), key.json."""
    d = check_study_dir(study_dir)
    lineup_dir = plan.report_dir / LINEUP
    files: dict[str, bytes] = {}
    for material_file, asset in plan.assets.items():
        files[asset] = (lineup_dir / material_file).read_bytes()  # paths checked by read_manifest
    rater_page = lineup.page_template().replace("/*STUDY*/null", json.dumps(plan.page_data()))
    files["index.html"] = rater_page.encode("utf-8")
    for name, data in files.items():
        write_bytes(d / name, data)
    write_text(d / "key.json", json.dumps(plan.key(), indent=1))
    buf_path = d / "share.zip"
    with zipfile.ZipFile(buf_path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            z.writestr(f"study/{name}", files[name])
    return d


def build_study(report_dir: str | Path, study_dir: str | Path, size: int = 5, trials_per_row: int = 20,
                seed: int = 0) -> dict:
    """Plan a lineup study from a report folder and write it (index.html + assets, share.zip, key.json)."""
    check_study_dir(study_dir)
    plan = lineup.plan_study(report_dir, size, trials_per_row, seed)
    write_study(plan, study_dir)
    return {"study": plan.study, "trials": len(plan.trials), "attention_checks": sum(t.attention for t in plan.trials),
            "rows": len(plan.rows), "size": size, "dir": str(study_dir)}


def add_human_figures(result: dict, report_dir: str | Path) -> Path:
    """Add a scored study's ``privacy.human`` to a report folder and rewrite report.json/.md/.html."""
    path = Path(report_dir) / "report.json"
    rep = Report.from_json(path)
    lineup.add_human_figures(rep, result, str(path))
    write_outputs(Evaluation(rep), report_dir)
    return path
