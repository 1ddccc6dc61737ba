"""Utility at vendor scale: `facepii evaluate --dataset embeddings:FILE.npz --no-privacy` on synthetic
clustered embeddings of 10^5 and 10^6 templates, wall time and peak memory of the whole command.

    python benchmarks/bench_scale.py                 # 10^5 templates (target: <= 60 s, <= 4 GB)
    python benchmarks/bench_scale.py --sizes 1e5,1e6 # and 10^6 (target: <= 15 min, <= 8 GB)

The embeddings: 20 photos per identity, 128 dimensions, identity centres N(0, I) plus per-photo
noise N(0, 1.1^2 I) (TAR@1e-3 about 0.9, like a real face model), float32, written to a temporary
folder. Every impostor pair of 10^5 templates (5x10^9) does not fit the default 4 GB, so the
report's impostor figures rest on a seeded sample of 10^7 pairs; the script prints how much of each
interval's variance that sampling accounts for, and the row's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = {100_000: (60.0, 4.0), 1_000_000: (15 * 60.0, 8.0)}  # seconds, GB


def synthetic(path: Path, n: int, per: int = 20, d: int = 128, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_ids = n // per
    labels = np.repeat(np.arange(n_ids), per)
    centres = rng.normal(size=(n_ids, d)).astype(np.float32)
    E = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        E[s:e] = centres[labels[s:e]] + 1.1 * rng.normal(size=(e - s, d)).astype(np.float32)
    np.savez(path, embeddings=E, labels=labels)


def run(npz: Path, out: Path, extra: list[str]) -> tuple[float, float, int]:
    """(seconds, peak RSS in GB, exit code) of one facepii evaluate run."""
    cmd = [sys.executable, "-m", "facepii", "evaluate", "--dataset", f"embeddings:{npz}", "--no-privacy",
           "--no-cache", "--json", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(err[-2000:], file=sys.stderr)
    return secs, usage.ru_maxrss / 1e6, code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1e5", help="comma-separated template counts (default 1e5)")
    ap.add_argument("--extra", default="", help="more options for facepii evaluate, e.g. '--defense projection'")
    args = ap.parse_args()
    sizes = [int(float(x)) for x in args.sizes.split(",")]
    ok = True
    with tempfile.TemporaryDirectory(prefix="facepii-scale-") as tmp:
        for n in sizes:
            npz = Path(tmp) / f"e{n}.npz"
            t0 = time.perf_counter()
            synthetic(npz, n)
            print(f"{n:>9,} templates: synthetic data written in {time.perf_counter() - t0:.0f} s")
            secs, gb, code = run(npz, Path(tmp) / f"r{n}.json", args.extra.split())
            if code != 0:
                print(f"{n:>9,} templates: facepii exited {code}")
                ok = False
                continue
            rep = json.loads((Path(tmp) / f"r{n}.json").read_text())
            row = rep["rows"][0]
            u = row["utility"]
            samp = row.get("impostor_sampling")
            t_max, gb_max = TARGETS.get(n, (None, None))
            verdict = "" if t_max is None else (
                "  [meets target]" if secs <= t_max and gb <= gb_max else f"  [MISSES target <= {t_max:.0f} s, "
                                                                        f"<= {gb_max:.0f} GB]")
            print(f"{n:>9,} templates: {secs:7.1f} s, peak RSS {gb:5.2f} GB{verdict}")
            print(f"           TAR@1e-3 {u['tar@far=1e-3']['value']:.4f} {u['tar@far=1e-3']['ci95']}, "
                  f"EER {u['eer']['value']:.4f}, rank-1 {u['rank1']['value']:.4f}; genuine pairs "
                  f"{row['pairs']['genuine']:,}, impostor pairs {row['pairs']['impostor']:,}")
            if samp:
                shares = ", ".join(f"{k} {v['share_of_variance']:.3f}" for k, v in samp["figures"].items()
                                   if v.get("share_of_variance") is not None)
                print(f"           impostor pairs sampled {samp['sampled']:,} of {samp['total']:,}; "
                      f"sampling's share of each interval's variance: {shares}")
            ok = ok and (t_max is None or (secs <= t_max and gb <= gb_max))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
