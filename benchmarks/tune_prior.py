"""Choose the attacker's face prior as an attacker can: on auxiliary identities, never on the victims.

    python benchmarks/tune_prior.py [--held 50] [--budget standard] [--priors eigenfaces,detail] [--cache-dir DIR]

README's job's split (seed 0) is taken as it is and its victims are never looked at. Of the attacker's
auxiliary identities, ``--held`` (seeded) are held aside as stand-in victims (one stolen template each,
their other photos the gallery); the prior and the face model are trained on the remaining auxiliary
identities only. For the unprotected row and noise sigma 0.1, ``decoder`` and ``optimize`` run with each
prior; the held-aside faces are judged by dlib and MobileFaceNet (models the attack does not optimise
through). Prints, per prior and row, every judge's rank-1 and SAR and what a person would see (sharpness
relative to the real photos, the face detector's rate and score), with 95% intervals, and the seconds.
``--out DIR`` writes ``priors.png`` there: the held-aside identities' photos in the first row, then per
prior the unprotected row's ``optimize`` faces, side by side (real people's faces: personal data, keep
it out of the repository).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default=f"celeba:{ROOT.parent / 'shared' / 'datasets' / 'celeba-subset'}")
    ap.add_argument("--mobilefacenet", default=str(ROOT.parent / "shared" / "models" / "mobilefacenet" / "model.onnx"))
    ap.add_argument("--held", type=int, default=50)
    ap.add_argument("--budget", default="standard")
    ap.add_argument("--priors", default="eigenfaces,detail")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    progress.set_enabled(False)
    cfg = EvaluateConfig.from_options(dataset=args.dataset, seed=0, attacks=["decoder", "optimize"],
                                      budget=args.budget, threads=args.threads, cache_dir=args.cache_dir)
    fs = load_selected(cfg)
    encoders = {"target": get_encoder("sface"), "judge": get_encoder("dlib"),
                "judge2": get_encoder(f"onnx:{args.mobilefacenet}")}
    cache = Cache(args.cache_dir) if args.cache_dir else Cache(None)
    embedded = embed(cfg, fs, encoders, cache)
    labels = embedded.labels
    split, n_victims = held_aside_split(labels, args.held)
    print(f"held-aside auxiliary identities: {len(split.victim_ids)}; the attacker trains on "
          f"{len(np.unique(labels[split.aux_pos]))} identities ({len(split.aux_pos)} photos); README's {n_victims} "
          "victims are not used")
    judges = make_judges(embedded, split, encoders["judge"], encoders["target"], [encoders["judge2"]])
    victims, sources = labels[split.source_pos], embedded.aligned(split.source_pos)
    shown = [sources[:8]]
    for prior in args.priors.split(","):
        p = replace(cfg.privacy, prior=prior)
        t0 = time.perf_counter()
        with compute_threads(args.threads):
            kit = prepare_attacker(p, 0, embedded, split, encoders["target"], cache)
        print(f"\n== prior {prior}: prior {kit.prior_source}, face model {kit.face_model_source}, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        for spec, params in (("none", {}), ("noise", {"sigma": 0.1})):
            t = protect(embedded, spec, params, split.victim_pos, "disclosed", 0)
            view = t.attacker["disclosed"]
            T_aux = view(kit.aux_embeddings, kit.aux_users)
            threat = _threat(kit, t.defense, view, view.key, victims)
            T_vic = t.templates[split.source_pos]
            with compute_threads(args.threads):
                rc = RowCache()
                t1 = time.perf_counter()
                dec = Decoder().fit(T_aux, kit.aux_faces, threat=threat, cache=rc)
                opt = Optimize().fit(T_aux, kit.aux_faces, threat=threat, cache=rc)
                out = {"decoder": dec.reconstruct(T_vic, users=victims),
                       "optimize": opt.reconstruct(T_vic, users=victims)}
                secs = time.perf_counter() - t1
            for name, faces in out.items():
                f = judge_faces(judges, faces, victims, sources, 1000, 0)
                js = "  ".join(f"{j} rank-1 {fmt_est(v.rank1)} SAR {fmt_est(v.sar)}" for j, v in f.judges.items())
                r = f.realism
                print(f"{spec:5s} {name:8s} {js}  | sharpness {fmt_est(r['sharpness'])} face found "
                      f"{fmt_est(r['face_found'])} detector {fmt_est(r['detector_score'])}  ({secs:.0f} s both)",
                      flush=True)
            if spec == "none":
                shown.append(out["optimize"][:8])
    if args.out:
        from PIL import Image

        grid = np.concatenate([np.concatenate(list(row), axis=1) for row in shown], axis=0)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(Path(args.out) / "priors.png")
        print(f"written {Path(args.out) / 'priors.png'}: photos, then " + ", ".join(args.priors.split(",")))


if __name__ == "__main__":
    main()
