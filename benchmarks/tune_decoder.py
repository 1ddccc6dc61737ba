"""Choose the face decoder's training (steps, learning rate, schedule) as an attacker can: on auxiliary identities.

    python benchmarks/tune_decoder.py [--held 50] [--variants NAME,...] [--cache-dir DIR] [--threads 2]

The same held-aside split as benchmarks/tune_eot.py: README's job's split (seed 0) is taken as it is and
its victims are never looked at; ``--held`` of the attacker's auxiliary identities (seeded) stand in for
victims (one stolen template each, their other photos the gallery), and the face model trains on the
remaining auxiliary identities only. The face space, the mirrored copies and the ridge start are computed
once; then, for each variant, the raw decoder is trained (standard budget otherwise) and

- its loss on the held-aside identities' photos (pixel L1, and the identity loss 1 - cos(F(x_hat), e)
  through the target: what training minimises, on faces it never saw),
- the unprotected row: ``decoder`` (the raw decoder itself) and ``optimize`` (standard: 30 steps, 2 EOT
  views) judged by dlib (a model the attack does not optimise through),
- noise sigma 0.1: the row's fine-tuned ``decoder`` and ``optimize`` from it, judged by dlib,

with the seconds each took. Prints one line per variant and row.
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
from attacks.facemodel import BUDGETS, FaceModel, to_unit
from attacks.optimize import Optimize
from facepii import progress
from facepii import reconstructions as recon
from facepii.cache import Cache
from facepii.config import EvaluateConfig
from facepii.encoders import get_encoder
from facepii.executor import compute_threads
from facepii.judging import judge_faces, make_judges
from facepii.labels import fmt_est
from facepii.stages import embed, load_selected, protect

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {  # name -> (decoder steps, peak learning rate, schedule)
    "150 steps 1e-3 constant": (150, 1e-3, "constant"),
    "150 steps 2e-3 cosine": (150, 2e-3, "cosine"),
    "100 steps 2e-3 cosine": (100, 2e-3, "cosine"),
}


def held_out_loss(fm: FaceModel, torch_encoder, E: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """(pixel L1, identity loss) of the raw decoder on photos it never saw."""
    import torch

    with torch.no_grad():
        e = torch.from_numpy(to_unit(E))
        x = fm.decoder(e)
        l1 = (x - torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255).abs().mean()
        y = torch_encoder(x * 255.0)
        y = y / y.norm(dim=1, keepdim=True)
        ident = (1 - (y * e).sum(1)).mean()
    return float(l1), float(ident)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default=f"celeba:{ROOT.parent / 'shared' / 'datasets' / 'celeba-subset'}")
    ap.add_argument("--held", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    ap.add_argument("--cache-dir", default=None)
    args = ap.parse_args()
    progress.set_enabled(False)
    cfg = EvaluateConfig.from_options(dataset=args.dataset, seed=0, attacks=["decoder", "optimize"],
                                      budget="standard", threads=args.threads, cache_dir=args.cache_dir)
    fs = load_selected(cfg)
    encoders = {"target": get_encoder("sface"), "judge": get_encoder("dlib")}
    cache = Cache(args.cache_dir) if args.cache_dir else Cache(None)
    embedded = embed(cfg, fs, encoders, cache)
    labels = embedded.labels
    split, n_victims = held_aside_split(labels, args.held)
    print(f"held-aside auxiliary identities: {len(split.victim_ids)}; the attacker trains on "
          f"{len(np.unique(labels[split.aux_pos]))} identities ({len(split.aux_pos)} photos); README's "
          f"{n_victims} victims are not used", flush=True)
    recon_face_model = recon._face_model
    recon._face_model = lambda kit, keys, cache: (None, "not yet")  # trained below, once per variant
    try:
        with compute_threads(args.threads):
            kit = recon.prepare_attacker(cfg.privacy, 0, embedded, split, encoders["target"], cache)
    finally:
        recon._face_model = recon_face_model
    judges = make_judges(embedded, split, encoders["judge"], encoders["target"])
    victims, sources = labels[split.source_pos], embedded.aligned(split.source_pos)
    E_held = embedded.embeddings["target"][split.source_pos]
    base = BUDGETS["standard"]
    t0 = time.perf_counter()
    with compute_threads(args.threads):
        start = FaceModel.start(kit.aux_embeddings, kit.aux_faces, base, kit.torch_encoder.embed, 0)
    print(f"face space, mirrored copies, ridge: {time.perf_counter() - t0:.0f} s", flush=True)
    for name in args.variants.split(","):
        steps, lr, schedule = VARIANTS[name]
        budget = replace(base, decoder_steps=steps, decoder_lr=lr, decoder_schedule=schedule)
        t0 = time.perf_counter()
        with compute_threads(args.threads):
            fm = FaceModel.fit_decoder(start, budget, kit.torch_encoder, 0)
        train_s = time.perf_counter() - t0
        l1, ident = held_out_loss(fm, kit.torch_encoder, E_held, sources)
        print(f"{name}: decoder trained in {train_s:.0f} s; held-out pixel L1 {l1:.4f}, identity loss {ident:.4f}",
              flush=True)
        kit.face_model, kit.budget = fm, budget
        for spec, params in (("none", {}), ("noise", {"sigma": 0.1})):
            t = protect(embedded, spec, params, split.victim_pos, "disclosed", 0)
            view = t.attacker["disclosed"]
            T_aux = view(kit.aux_embeddings, kit.aux_users)
            threat = recon._threat(kit, t.defense, view, view.key, victims)
            T_vic = t.templates[split.source_pos]
            with compute_threads(args.threads):
                rc = RowCache()
                t1 = time.perf_counter()
                dec = Decoder().fit(T_aux, kit.aux_faces, threat=threat, cache=rc)
                faces = {"decoder": dec.reconstruct(T_vic, users=victims)}
                t2 = time.perf_counter()
                opt = Optimize().fit(T_aux, kit.aux_faces, threat=threat, cache=rc)
                faces["optimize"] = opt.reconstruct(T_vic, users=victims)
                t3 = time.perf_counter()
            for attack, x in faces.items():
                f = judge_faces(judges, x, victims, sources, 1000, 0)
                secs = t2 - t1 if attack == "decoder" else t3 - t2
                print(f"  {spec} {params} {attack:9s} dlib rank-1 {fmt_est(f.judge.rank1)}  SAR {fmt_est(f.judge.sar)}"
                      f"  target rank-1 {fmt_est(f.target_judge.rank1)}  {secs:.1f} s", flush=True)


if __name__ == "__main__":
    main()
