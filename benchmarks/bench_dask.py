"""Dask against in-process: photo embedding throughput, and a sweep of defense rows with their attacks.

    python benchmarks/bench_dask.py [--photos 600] [--encoders sface]
    python benchmarks/bench_dask.py --rows 8 [--budget quick] [--max-identities 200]

With ``--rows N``: a sweep of N noise rows (sigma 0.01 .. 0.15) with every default attack on the shared
subset, run (1) in-process on one core (the process pinned to its first core, so torch, BLAS,
onnxruntime and dlib all have one: the single-threaded unit a worker is), (2) on a local cluster of 2
workers x 1 thread, (3) in-process with two threads; the cache is warmed first (embeddings and the
attacker's face model), so the clock measures the rows. It prints each mode's wall time, the speed-up
and whether the report JSON of (1) and (2) is identical (timings aside).

Without ``--rows``: each mode embeds the same photos of the shared CelebA subset into a fresh cache folder (nothing
cached), through `facepii.stages.embed` exactly as `facepii evaluate` does; the Dask cluster is
started before the clock starts (a cluster's start-up is paid once per session, not per photo).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from distributed import LocalCluster

    from facepii import progress
    from facepii.cache import Cache
    from facepii.config import EvaluateConfig
    from facepii.encoders import get_encoder
    from facepii.executor import DaskExecutor
    from facepii.stages import embed, load_selected

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=600)
    ap.add_argument("--encoders", default="sface")
    ap.add_argument("--dataset", default=f"celeba:{ROOT.parent / 'shared' / 'datasets' / 'celeba-subset'}")
    ap.add_argument("--rows", type=int, default=0, help="benchmark a sweep of this many noise rows instead")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--max-identities", type=int, default=200)
    ap.add_argument("--cache-dir", default=None, help="a cache to start from (default: a fresh one)")
    ap.add_argument("--modes", default="1,2,3", help="with --rows: which modes to run (1: in-process on 1 core, "
                    "2: 2 workers x 1 thread, 3: in-process 2 threads)")
    ap.add_argument("--warm", action="store_true", help="with --rows: the --cache-dir already holds the embeddings "
                    "and the face model (no warm-up run)")
    ap.add_argument("--save", default=None, help="with --rows: write each mode's comparable report JSON here")
    args = ap.parse_args()
    progress.set_enabled(False)
    if args.rows:
        return rows(args)
    cfg = EvaluateConfig.from_options(dataset=args.dataset, max_identities=max(2, args.photos // 20), seed=0)
    fs = load_selected(cfg)
    fs = fs.subset(list(range(min(args.photos, len(fs)))))
    encoders = {f"e{i}": get_encoder(s) for i, s in enumerate(args.encoders.split(","))}
    base = None
    for mode in ("in-process", "dask, 1 worker", "dask, 2 workers"):
        with tempfile.TemporaryDirectory() as tmp:
            ex = cluster = None
            if mode != "in-process":
                cluster = LocalCluster(n_workers=int(mode.split()[1]), threads_per_worker=1, processes=True,
                                       dashboard_address=None)
                ex = DaskExecutor(cluster.scheduler_address)
                ex.map_ordered(lambda x: x, list(range(8)))  # workers up before the clock starts
            t0 = time.perf_counter()
            emb = embed(cfg, fs, encoders, Cache(tmp), ex)
            secs = time.perf_counter() - t0
            if ex is not None:
                ex.close()
                cluster.close()
        n = len(fs)
        base = base or secs
        print(f"{mode:16s} {n} photos in {secs:6.1f} s: {n / secs:6.1f} photos/s ({base / secs:.2f}x the "
              f"in-process run), {emb.dataset['n_used']} usable")


def comparable(report) -> str:
    import json

    d = report.to_dict()
    d.pop("provenance", None)
    d["settings"].pop("executor", None)  # where it ran (the provenance says how); not a figure
    d["dataset"].pop("embedding_stats", None)
    d.get("attacker", {}).pop("face_model", None)
    return json.dumps(d, sort_keys=True)


def rows(args) -> None:
    import numpy as np
    from distributed import LocalCluster

    from facepii.config import EvaluateConfig
    from facepii.executor import DaskExecutor
    from facepii.pipeline import run

    sigmas = [round(float(x), 4) for x in np.linspace(0.01, 0.15, args.rows)]
    cache = args.cache_dir or tempfile.mkdtemp(prefix="facepii-bench-dask-")

    def cfg(threads, executor="local", sig=sigmas):
        return EvaluateConfig.from_options(dataset=args.dataset, max_identities=args.max_identities, seed=0,
                                           defenses=["noise"], params={"sigma": sig}, budget=args.budget,
                                           attacks=["nearest", "inverse", "decoder", "optimize"], threads=threads,
                                           cache_dir=cache, executor=executor)

    t0 = time.perf_counter()
    if not args.warm:
        run(cfg(1, sig=sigmas[:1]))  # embeddings and the attacker's face model into the cache
    print(f"warm-up (embed, face model, one row): {time.perf_counter() - t0:.1f} s; {args.rows} rows, budget "
          f"{args.budget}, sigma {sigmas}")
    times, reports = {}, {}
    modes = ("in-process, 1 core", "dask, 2 workers x 1 thread", "in-process, 2 threads")
    for mode in [modes[int(m) - 1] for m in args.modes.split(",")]:
        cluster = ex = None
        if mode.startswith("dask"):
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
            ex = DaskExecutor(cluster.scheduler_address)
            ex.map_ordered(lambda x: x, list(range(4)))  # workers up before the clock starts
            ex.close()
        cores = os.sched_getaffinity(0)
        if mode.endswith("1 core"):  # onnxruntime's and dlib's pools are sized from the affinity (usable_cpus)
            os.sched_setaffinity(0, {min(cores)})
        t0 = time.perf_counter()
        ev = run(cfg(2 if mode.endswith("2 threads") else 1,
                     executor="local" if cluster is None else f"dask:{cluster.scheduler_address}"))
        times[mode] = time.perf_counter() - t0
        os.sched_setaffinity(0, cores)
        reports[mode] = comparable(ev.report)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            (Path(args.save) / (mode.replace(",", "").replace(" ", "-") + ".json")).write_text(reports[mode])
        if cluster is not None:
            cluster.close()
        stages = ev.report.extra["provenance"]["stage_seconds"]  # on workers: the sum over the workers' tasks
        print(f"  {mode}: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])
                                        if v >= 1.0), flush=True)
        base = times.get("in-process, 1 core", times[mode])
        print(f"{mode:28s} {times[mode]:7.1f} s  ({times[mode] / args.rows:5.1f} s per row; {base / times[mode]:.2f}x "
              "the in-process 1-core run)", flush=True)
    if {"in-process, 1 core", "dask, 2 workers x 1 thread"} <= set(reports):
        same = reports["in-process, 1 core"] == reports["dask, 2 workers x 1 thread"]
        print(f"report JSON identical, in-process 1 core vs 2 workers x 1 thread: {same}")
    if {"in-process, 2 threads", "dask, 2 workers x 1 thread"} <= set(times):
        ratio = times["in-process, 2 threads"] / times["dask, 2 workers x 1 thread"]
        print(f"in-process 2 threads vs 2 workers x 1 thread: {ratio:.2f}x")


if __name__ == "__main__":
    main()
