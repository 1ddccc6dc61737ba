"""Choose ``optimize``'s expectation-over-transformation settings as an attacker can: on auxiliary identities.

    python benchmarks/tune_eot.py [--held 50] [--budget standard] [--cache-dir DIR]

README's job's split (seed 0) is taken as it is and its victims are never looked at. Of the attacker's
auxiliary identities, ``--held`` (seeded) are held aside as stand-in victims (one stolen template each,
their other photos the gallery); the face model is trained on the remaining auxiliary identities only.
For the unprotected row and noise sigma 0.1, the row's decoder is fitted once and ``optimize`` runs
with each setting; the held-aside faces are judged by dlib (a model the attack does not optimise
through; MobileFaceNet, the transfer check of docs/results.md, is not used here). Prints rank-1 and
SAR with 95% intervals, and the seconds ``optimize`` took, per row and setting.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from heldaside import held_aside_split

from attacks.base import RowCache
from attacks.decoder import Decoder
from attacks.optimize import Optimize
from facepii import progress
from facepii.cache import Cache
from facepii.config import EvaluateConfig
from facepii.encoders import get_encoder
from facepii.executor import compute_threads
from facepii.judging import judge_faces, make_judges
from facepii.labels import fmt_est
from facepii.reconstructions import _threat, prepare_attacker
from facepii.stages import embed, load_selected, protect

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {  # name -> (views per step, range in units of attacks.eot.DEFAULT_RANGE)
    "no EOT": (0, 1.0),
    "EOT 1 view": (1, 1.0),
    "EOT 2 views": (2, 1.0),
    "EOT 1 view, 2x range": (1, 2.0),
}

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default=f"celeba:{ROOT.parent / 'shared' / 'datasets' / 'celeba-subset'}")
    ap.add_argument("--held", type=int, default=50)
    ap.add_argument("--budget", default="standard")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    progress.set_enabled(False)
    cfg = EvaluateConfig.from_options(dataset=args.dataset, seed=0, attacks=["decoder", "optimize"],
                                      budget=args.budget, threads=args.threads, cache_dir=args.cache_dir)
    fs = load_selected(cfg)
    encoders = {"target": get_encoder("sface"), "judge": get_encoder("dlib")}
    cache = Cache(args.cache_dir) if args.cache_dir else Cache(None)
    embedded = embed(cfg, fs, encoders, cache)
    labels = embedded.labels
    split, n_victims = held_aside_split(labels, args.held)
    held, train_pos = split.victim_ids, split.aux_pos
    print(f"held-aside auxiliary identities: {len(held)}; the attacker trains on {len(np.unique(labels[train_pos]))} "
          f"identities ({len(train_pos)} photos); README's {n_victims} victims are not used")
    t0 = time.perf_counter()
    with compute_threads(args.threads):
        kit = prepare_attacker(cfg.privacy, 0, embedded, split, encoders["target"], cache)
    print(f"face model: {kit.face_model_source} in {time.perf_counter() - t0:.0f} s", flush=True)
    judges = make_judges(embedded, split, encoders["judge"], encoders["target"])
    victims, sources = labels[split.source_pos], embedded.aligned(split.source_pos)
    for spec, params in (("none", {}), ("noise", {"sigma": 0.1})):
        t = protect(embedded, spec, params, split.victim_pos, "disclosed", 0)
        view = t.attacker["disclosed"]
        T_aux = view(kit.aux_embeddings, kit.aux_users)
        threat = _threat(kit, t.defense, view, view.key, victims)
        T_vic = t.templates[split.source_pos]
        with compute_threads(args.threads):
            rc = RowCache()
            Decoder().fit(T_aux, kit.aux_faces, threat=threat, cache=rc)
            for name, (n_views, rng_range) in SETTINGS.items():
                opt = Optimize(eot=n_views, eot_range=rng_range)
                opt.fit(T_aux, kit.aux_faces, threat=threat, cache=rc)
                t1 = time.perf_counter()
                faces = opt.reconstruct(T_vic, users=victims)
                secs = time.perf_counter() - t1
                f = judge_faces(judges, faces, victims, sources, 1000, 0)
                print(f"{spec} {params}  {name:22s} dlib rank-1 {fmt_est(f.judge.rank1)}  SAR {fmt_est(f.judge.sar)}  "
                      f"target rank-1 {fmt_est(f.target_judge.rank1)}  optimize {secs:.1f} s", flush=True)


if __name__ == "__main__":
    main()
