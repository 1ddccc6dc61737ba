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
    _ = al.detector  # load the model once, outside the timing
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
    import onnxruntime as ort

    from facepii import onnx_graph

    so = ort.SessionOptions()
    so.log_severity_level = 3

    # the shipped file with only the unused inputs dropped and a dynamic batch (no folding)
    raw = onnx_graph.load(enc.path)
    inits = {i.name for i in raw.graph.initializer}
    used = {x for n in raw.graph.node for x in n.input}
    keep = [i for i in raw.graph.input if i.name not in inits and i.name in used]
    del raw.graph.input[:]
    raw.graph.input.extend(keep)
    for vi in (raw.graph.input[0], raw.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    sess = ort.InferenceSession(raw.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = faces.transpose(0, 3, 1, 2).astype(np.float32)
    sess.run(None, {"data": x[:8]})
    t = time.perf_counter()
    for i in range(0, len(x), 8):
        sess.run(None, {"data": x[i:i + 8]})
    shipped_rate = len(x) / (time.perf_counter() - t)
    print(f"SFace as shipped (int8 weights dequantised at every run), alone: {1000 / shipped_rate:.1f} ms/face")

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
          f"= {cold_rate / sface_rate:.2f}x facepii's SFace alone, {cold_rate / shipped_rate:.2f}x the "
          f"shipped SFace graph alone (target >= 0.85x)")
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
