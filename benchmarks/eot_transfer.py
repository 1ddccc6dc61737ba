"""Before and after EOT, for two judges: does expectation over transformation make reconstructions that
more face models recognise?

    python benchmarks/eot_transfer.py [--cache-dir DIR] [--json OUT.json]

README's job (SFace target, the shared CelebA subset, noise sigma 0.02/0.05/0.1) plus a keyed row
(random projection, disclosed and secret key), standard budget, seed 0, judged by dlib and by the public
MobileFaceNet of ../shared/models (the attacks never use it). One run holds both: the attacks
``nearest``, ``inverse``, ``decoder``, ``optimize-plain`` (registered here: ``optimize`` with EOT off,
``eot=0``, the refinement as it was before EOT, bit for bit) and ``optimize-eot`` (registered here:
``optimize`` with ``eot=--eot-views`` random views per step, default 2: the setting
benchmarks/tune_eot.py chose on held-aside auxiliary identities), all from the same fitted decoder.
"before" is, per row and judge, the attack it re-identifies best among nearest, inverse, decoder and
optimize-plain; "after" among nearest, inverse, decoder and optimize-eot. Prints rank-1 and SAR with 95%
intervals for each, and the run's stage times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from attacks.optimize import Optimize
from facepii import progress
from facepii.config import EvaluateConfig
from facepii.labels import fmt_est
from facepii.pipeline import run
from facepii.registry import attacks as registry

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


class OptimizeEot(Optimize):
    """``optimize`` with expectation over transformation: ``VIEWS`` random views per step (attacks.eot)."""

    name = "optimize-eot"
    VIEWS = 2

    def __init__(self, steps: int | None = None, lr: float = 0.05, prior: float = 1e-3, eot: int | None = None,
                 eot_range: float = 1.0):
        super().__init__(steps, lr, prior, self.VIEWS if eot is None else eot, eot_range)


class OptimizePlain(Optimize):
    """``optimize`` without expectation over transformation (``eot=0``): the refinement before EOT."""

    name = "optimize-plain"

    def __init__(self, steps: int | None = None, lr: float = 0.05, prior: float = 1e-3, eot: int = 0,
                 eot_range: float = 1.0):
        super().__init__(steps, lr, prior, eot, eot_range)


BEFORE = ["nearest", "inverse", "decoder", "optimize-plain"]
AFTER = ["nearest", "inverse", "decoder", "optimize-eot"]


def fmt(d: dict) -> str:
    return f"{d['value']:.2f} [{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}]"


def best(block, judge: str, attacks: list[str]):
    """The attack ``judge`` re-identifies best among ``attacks`` (rank-1, then SAR) and its figures."""
    def figs(a):
        f = block.per_attack[a]
        return f.judges[judge] if f.judges is not None else f.judge
    a = max(attacks, key=lambda x: figs(x).order)
    return a, figs(a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eot-views", type=int, default=2, help="optimize-eot's views per step (default 2)")
    ap.add_argument("--templates-per-victim", default="1", help="also K = 1,2,4 stolen templates per victim "
                    "(victims then need K_max + 1 photos: another split than README's)")
    args = ap.parse_args()
    OptimizeEot.VIEWS = args.eot_views
    registry.register(OptimizeEot.name, OptimizeEot)
    registry.register(OptimizePlain.name, OptimizePlain)
    progress.set_enabled(False)
    mfn = SHARED / "models" / "mobilefacenet" / "model.onnx"
    cfg = EvaluateConfig.from_options(
        dataset=f"celeba:{SHARED / 'datasets' / 'celeba-subset'}", defenses=["noise", "projection"],
        params={"sigma": [0.02, 0.05, 0.1]}, attacks=BEFORE + ["optimize-eot"], judge=f"dlib,onnx:{mfn}",
        cache_dir=args.cache_dir, threads=args.threads, seed=0, templates_per_victim=args.templates_per_victim)
    t0 = time.perf_counter()
    ev = run(cfg)
    secs = time.perf_counter() - t0
    rep = ev.report
    out = []
    print(f"run: {secs:.0f} s; stages (s): " + json.dumps(rep.extra["provenance"]["stage_seconds"]))
    for r in rep.rows:
        for block in (r.privacy, r.privacy_key_secret):
            if block is None or block.not_applicable:
                continue
            judges = list(block.worst.judges or {block.judge: None})
            for j in judges:
                line = {"row": r.label, "key": block.key, "judge": j}
                for when, atk in (("before", BEFORE), ("after", AFTER)):
                    a, f = best(block, j, atk)
                    line[when] = {"attack": a, "rank1": f.rank1.to_dict(), "sar": f.sar.to_dict()}
                    line[f"{when}_text"] = f"{fmt_est(f.rank1)} / SAR {fmt_est(f.sar)} ({a})"
                out.append(line)
                print(f"{r.label:22s} {block.key or '':9s} {j:14s} before {line['before_text']:55s} "
                      f"after {line['after_text']}", flush=True)
    ks = rep.templates_ks
    per_k = []
    if len(ks) > 1:
        for r in rep.rows:
            for j in list(r.privacy.worst.judges or {r.privacy.judge: None}):
                line = {"row": r.label, "judge": j}
                for k in ks:
                    b = rep.privacy_at(r, k)
                    for when, atk in (("before", BEFORE), ("after", AFTER)):
                        a, f = best(b, j, atk)
                        line[f"K={k} {when}"] = {"attack": a, "rank1": f.rank1.to_dict(), "sar": f.sar.to_dict()}
                print(f"{r.label:22s} {j:14s} " + "  ".join(
                    f"K={k}: rank-1 {fmt(line[f'K={k} before']['rank1'])} -> {fmt(line[f'K={k} after']['rank1'])}"
                    for k in ks), flush=True)
                per_k.append(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": secs, "rows": out, "templates_per_victim": per_k,
                                               "stage_seconds": rep.extra["provenance"]["stage_seconds"]}, indent=1))


if __name__ == "__main__":
    main()
