"""README's main job, side by side: a baseline revision against this checkout, in one run (a script, never a test).

    python benchmarks/bench_readme_job.py [--baseline REV[,REV...]] [--data ../shared/datasets/celeba-subset]
                                          [--cache FILE] [--work DIR]

Both run the README's command (SFace target, dlib judge, noise sigma=0.02,0.05,0.1, standard budget)
the way a user who has embedded the photos once runs it again after changing the attack settings:
the embedding cache warm (a copy of ``--cache``, the SQLite file of a previous run, default the user
cache), the attacker's face model NOT cached. Each baseline runs from a ``git worktree`` of its revision
with the same Python; one run after the other on the same machine. Prints each run's wall time,
peak RSS, per-stage times (from the log lines), each row's rank-1 and SAR with their intervals for every
judge, the unprotected row's rank-1 (dlib) and whether its interval overlaps the reference [0.62, 0.86]
(the figure measured before the attacks were made faster: a faster attack must not be a weaker one), and
each run's time against the first baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (0.62, 0.86)
COMMAND = ["-m", "facepii", "evaluate", "--defense", "noise", "--param", "sigma=0.02,0.05,0.1", "--judge",
           f"dlib,onnx:{ROOT.parent / 'shared/models/mobilefacenet/model.onnx'}"]


def run(label: str, tree: Path, data: Path, cache_file: Path, work: Path) -> dict:
    cache = work / f"cache-{label}"
    out = work / f"out-{label}"
    cache.mkdir(parents=True)
    shutil.copy(cache_file, cache / cache_file.name)  # embeddings only: no face model
    cmd = [sys.executable, *COMMAND, "--dataset", f"celeba:{data}", "--cache-dir", str(cache), "--out", str(out),
           "--json", str(work / f"report-{label}.json")]
    env = dict(os.environ, PYTHONPATH=str(tree), CI="true")
    print(f"[{label}] {tree}: {' '.join(cmd[1:])}", flush=True)
    log = work / f"{label}.stderr"
    t = time.perf_counter()
    with open(log, "w") as err:
        p = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    stderr = log.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"[{label}] exit {os.waitstatus_to_exitcode(status)}:\n{stderr[-3000:]}")
    stages = re.findall(r"\] (stage [^\n]+?): done in ([0-9.]+) s", stderr)
    rows = json.loads((work / f"report-{label}.json").read_text())["rows"]
    none = next(r for r in rows if r["defense"] == "none")["privacy"]["rank1"]
    per_row = {f"{r['defense']} {r['params']}".strip(): {
        judge: {"attack": f["attack"], "rank1": f["rank1"], "sar": f["sar@fmr=1e-3"]}
        for judge, f in (r["privacy"].get("judges") or {"dlib": r["privacy"]}).items()} for r in rows}
    return {"wall_s": wall, "peak_rss_gb": usage.ru_maxrss / 2**20, "stages": stages, "rank1_none": none,
            "rows": per_row}


def fmt(est: dict) -> str:
    return f"{est['value']:.3f} [{est['ci95'][0]:.3f}, {est['ci95'][1]:.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="437e60d", help="git revisions to compare against, comma-separated, "
                    "each run in turn before this checkout (default: the version before the attacks were made faster)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/datasets/celeba-subset"))
    ap.add_argument("--cache", default=str(Path.home() / ".cache/facepii/facepii-cache.sqlite3"),
                    help="an embedding cache (SQLite) holding the subset's SFace and dlib embeddings")
    ap.add_argument("--work", default=None, help="folder for worktree, caches and outputs (default: a temporary one)")
    ap.add_argument("--only", choices=["baseline", "current"], default=None)
    args = ap.parse_args()
    cache_file = Path(args.cache)
    if not cache_file.is_file():
        raise SystemExit(f"{cache_file}: no embedding cache; run README's job once first (or give --cache).")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-readme-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.only in (None, "baseline"):
        for rev in args.baseline.split(","):
            tree = work / f"baseline-tree-{rev}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), rev],
                           check=True, capture_output=True)
            try:
                results[f"baseline {rev}"] = run(f"baseline-{rev}", tree, Path(args.data).resolve(), cache_file, work)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
    if args.only in (None, "current"):
        results["this checkout"] = run("current", ROOT, Path(args.data).resolve(), cache_file, work)
    for name, r in results.items():
        lo, hi = r["rank1_none"]["ci95"]
        overlap = lo <= REFERENCE[1] and hi >= REFERENCE[0]
        print(f"\n{name}: {r['wall_s']:.0f} s ({r['wall_s'] / 60:.1f} min), peak RSS {r['peak_rss_gb']:.1f} GB; "
              f"unprotected rank-1 (dlib) {r['rank1_none']['value']:.3f} [{lo:.3f}, {hi:.3f}], "
              f"overlaps {list(REFERENCE)}: {overlap}")
        for row, judges in r["rows"].items():
            for judge, f in judges.items():
                print(f"  {row} / {judge}: rank-1 {fmt(f['rank1'])}, SAR@1e-3 {fmt(f['sar'])} ({f['attack']})")
        for stage, secs in r["stages"]:
            print(f"  {stage}: {float(secs):.1f} s")
    if len(results) >= 2:
        (b, rb), *others = results.items()
        for c, rc in others:
            print(f"\n{c} against {b}: {rc['wall_s'] / rb['wall_s']:.2f}x the time ({rb['wall_s']:.0f} s -> "
                  f"{rc['wall_s']:.0f} s)")
    (work / "bench_readme_job.json").write_text(json.dumps(results, indent=1))
    print(f"\nlogs and reports in {work}")


if __name__ == "__main__":
    main()
