"""Speed of the foundation on the shared CelebA subset (never a test; prints figures).

    python benchmarks/bench_foundation.py [--data ../shared/datasets/celeba-subset] [--n 600]

Measures, in one run on this machine:
- decode + YuNet detection + alignment, ms per photo;
- SFace alone on pre-aligned faces (onnxruntime, batched), ms per face;
- the full cold pipeline (hash + decode + detect + align + embed + cache write), and its
  throughput relative to SFace alone (target >= 0.85x);
- the same stage with a warm cache (target >= 50x faster than cold);
- dlib, ms per face per core (a sample);
- utility metrics (all pairs, 1000 bootstrap replicates) for every usable face of the subset.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from facepii import metrics, progress
from facepii.cache import Cache
from facepii.datasets import load_dataset
from facepii.encoders import DlibEncoder, SFaceEncoder
from facepii.extract import extract
from facepii.faces import FaceAligner, align, read_image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/celeba-subset"))
    ap.add_argument("--n", type=int, default=600, help="photos for the speed figures")
    args = ap.parse_args()
    progress.set_enabled(False)
    fs_all = load_dataset(f"celeba:{args.data}")
    fs = fs_all.subset(np.arange(min(args.n, len(fs_all))))
    print(f"machine: {os.cpu_count()} cores; {len(fs)} photos of {args.data}")

    al = FaceAligner()
    al.detector  # load once
    t = time.perf_counter()
    aligned = []
    for p in fs.paths:
        rgb = read_image(p)
        try:
            aligned.append(align(rgb, al.landmarks(rgb)))
        except Exception:
            pass
    t_det = time.perf_counter() - t
    print(f"decode + detect + align: {1000 * t_det / len(fs):.1f} ms/photo ({len(aligned)} faces)")

    enc = SFaceEncoder()
    faces = np.stack(aligned)
    enc.embed(faces[:16])  # warm-up
    t = time.perf_counter()
    enc.embed(faces)
    t_sface = time.perf_counter() - t
    sface_rate = len(faces) / t_sface
    print(f"SFace alone on aligned faces: {1000 * t_sface / len(faces):.1f} ms/face ({sface_rate:.1f} faces/s)")

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        ex = extract(fs, [enc], Cache(d))
        t_cold = time.perf_counter() - t
        cold_rate = len(ex.faceset) / t_cold
        t = time.perf_counter()
        ex2 = extract(fs, [enc], Cache(d))
        t_warm = time.perf_counter() - t
        assert ex2.stats["computed"] == 0
    print(f"full pipeline, cold: {1000 * t_cold / len(fs):.1f} ms/photo ({cold_rate:.1f} faces/s) "
          f"= {cold_rate / sface_rate:.2f}x SFace alone (target >= 0.85x)")
    print(f"full pipeline, warm cache: {1000 * t_warm / len(fs):.2f} ms/photo, "
          f"{t_cold / t_warm:.0f}x faster than cold (target >= 50x)")

    dl = DlibEncoder(n_jobs=1)
    dl.embed(faces[:2])
    k = min(60, len(faces))
    t = time.perf_counter()
    dl.embed(faces[:k])
    print(f"dlib: {1000 * (time.perf_counter() - t) / k:.0f} ms/face on one core")

    with tempfile.TemporaryDirectory() as d:
        full = extract(fs_all, [enc], Cache(os.environ.get("FACEPII_BENCH_CACHE", d)))
    E, lab = full.for_encoder(enc), full.faceset.labels
    n = len(lab)
    t = time.perf_counter()
    u = metrics.utility(E, lab, metrics.cosine_similarity)
    t_m = time.perf_counter() - t
    print(f"utility metrics, {n} faces ({u['n_impostor'] / 1e6:.1f}M impostor pairs, 1000 bootstrap "
          f"replicates): {t_m:.2f} s (target <= 2 s)")


if __name__ == "__main__":
    main()
