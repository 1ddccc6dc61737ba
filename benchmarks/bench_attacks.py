"""Attack strength and cost on the shared CelebA subset (a script, never a test).

    python benchmarks/bench_attacks.py [--data ../shared/datasets/celeba-subset] [--naive-epochs 15]
                                       [--steps 0,50,150,400] [--cache DIR]

On one seeded split (150 auxiliary identities, 50 victims, SFace target, no
defense, dlib and SFace as judges) it measures:

1. a naive reference decoder (the field's baseline): a plain upsampling
   conv decoder trained with a pixel L1 loss only, ``--naive-epochs`` epochs;
2. facepii's attacks (nearest, inverse, decoder, optimize) with the face
   decoder trained for each of ``--steps`` steps: training time and
   re-identification against training length.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def naive_decoder(E, faces, epochs, seed=0):
    import torch
    from torch import nn
    from torch.nn import functional as F

    torch.manual_seed(seed)

    class Up(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.c = nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.2),
                                   nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.2))

        def forward(self, x):
            return self.c(F.interpolate(x, scale_factor=2, mode="nearest"))

    class Dec(nn.Module):
        def __init__(self, w=(256, 128, 64, 32, 16)):
            super().__init__()
            self.fc, self.w = nn.Linear(E.shape[1], w[0] * 49), w
            self.ups = nn.Sequential(*[Up(w[i], w[i + 1]) for i in range(4)])
            self.out = nn.Conv2d(w[-1], 3, 3, padding=1)

        def forward(self, e):
            return torch.sigmoid(self.out(self.ups(F.leaky_relu(self.fc(e), 0.2).view(-1, self.w[0], 7, 7))))

    net = Dec()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    X = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255
    Et = torch.from_numpy(E / np.linalg.norm(E, axis=1, keepdims=True)).float()
    for _ in range(epochs):
        perm = torch.randperm(len(X))
        for i in range(0, len(X) - 31, 32):
            idx = perm[i:i + 32]
            loss = (net(Et[idx]) - X[idx]).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return lambda e: (net(torch.from_numpy(e / np.linalg.norm(e, axis=1, keepdims=True)).float())
                      .detach().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def fmt(r):
    return (f"rank-1 {r.rank1.value:.2f} [{r.rank1.ci95[0]:.2f}, {r.rank1.ci95[1]:.2f}]  "
            f"rank-5 {r.rank5.value:.2f}  SAR {r.sar.value:.3f}")


def main() -> None:
    import tempfile

    import attacks as A
    import defenses
    from attacks.base import RowCache, ThreatModel
    from attacks.facemodel import BUDGETS, FaceModel
    from facepii import progress
    from facepii.cache import Cache
    from facepii.config import EvaluateConfig
    from facepii.judging import make_judges, resolve_judge
    from facepii.pipeline import resolve_encoder
    from facepii.reconstructions import prepare_attacker
    from facepii.stages import embed, load_selected, split_identities

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/celeba-subset"))
    ap.add_argument("--naive-epochs", type=int, default=15)
    ap.add_argument("--steps", default="0,50,150,400")
    ap.add_argument("--cache", default=None, help="embedding cache folder (default: a temporary one)")
    args = ap.parse_args()
    progress.set_enabled(False)
    cache_dir = args.cache or tempfile.mkdtemp()
    cfg = EvaluateConfig.from_options(dataset=f"celeba:{args.data}", cache_dir=cache_dir, attacks=["nearest"],
                                      budget="quick")
    fs = load_selected(cfg)
    enc = resolve_encoder("sface", fs)
    judge = resolve_judge(None, enc)
    cache = Cache(cache_dir)
    emb = embed(cfg, fs, {"target": enc, "judge": judge}, cache)
    sp = split_identities(emb.labels, None, 0)
    judges = make_judges(emb, sp, judge, enc)
    setup = prepare_attacker(cfg.privacy, 0, emb, sp, enc, cache)
    victims = emb.labels[sp.source_pos]
    print(f"split: {len(np.unique(emb.labels[sp.aux_pos]))} auxiliary identities ({len(sp.aux_pos)} photos), "
          f"{len(sp.victim_ids)} victims, random rank-1 {1 / len(sp.victim_ids):.3f}")
    E_vic = emb.embeddings["target"][sp.source_pos]

    def judged(faces):
        return {j: judges[j].judge(faces, victims, 1000, 0) for j in ("judge", "target")}

    t = time.perf_counter()
    dec = naive_decoder(setup.aux_embeddings, setup.aux_faces, args.naive_epochs)
    r = judged(dec(E_vic))
    print(f"naive decoder (pixel L1, {args.naive_epochs} epochs, {time.perf_counter() - t:.0f} s): "
          f"dlib {fmt(r['judge'])} | sface {fmt(r['target'])}")

    d = defenses.create("none").fit(setup.aux_embeddings)
    for steps in [int(s) for s in args.steps.split(",")]:
        budget = replace(BUDGETS["standard"], decoder_steps=steps)
        t = time.perf_counter()
        fm = FaceModel.train(setup.aux_embeddings, setup.aux_faces, budget, setup.torch_encoder,
                             query=enc.embed, seed=0)
        t_train = time.perf_counter() - t
        threat = ThreatModel(encoder=enc, defense=d, face_model=fm, aux_embeddings=setup.aux_embeddings,
                             aux_users=setup.aux_users, protect=lambda E, u=None: E, budget=budget,
                             torch_encoder=setup.torch_encoder)
        cache = RowCache()  # the row's shared pieces: optimize starts from the decoder attack's network
        for name in ("nearest", "inverse", "decoder", "optimize"):
            t = time.perf_counter()
            atk = A.create(name)
            faces = atk.fit(setup.aux_embeddings, setup.aux_faces, threat=threat, cache=cache).reconstruct(E_vic)
            r = judged(faces)
            print(f"decoder steps {steps:4d} (train {t_train:4.0f} s) {name:9s} ({time.perf_counter() - t:3.0f} s): "
                  f"dlib {fmt(r['judge'])} | sface {fmt(r['target'])}")


if __name__ == "__main__":
    main()
