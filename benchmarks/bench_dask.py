"""Throughput of photo detection + embedding: in-process against a local Dask cluster of 1 and 2 workers.

    python benchmarks/bench_dask.py [--photos 600] [--encoders sface]

Each mode embeds the same photos of the shared CelebA subset into a fresh cache folder (nothing
cached), through `facepii.stages.embed` exactly as `facepii evaluate` does; the Dask cluster is
started before the clock starts (a cluster's start-up is paid once per session, not per photo).
"""

from __future__ import annotations

import argparse
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
    args = ap.parse_args()
    progress.set_enabled(False)
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


if __name__ == "__main__":
    main()
