"""Digests of every kind of computation behind facepii's figures, printed as one JSON line.

    python tests/cpu_probe.py CELEBA_DIR MOBILEFACENET_ONNX [--small]

``tests/test_kernels.py`` runs it in this process's CPU and under an emulated CPU of another type
(``qemu-x86_64 -cpu Haswell``: an Intel CPU without AVX-512, where this machine may be an AMD one with
it) and requires equal digests: detection and alignment (OpenCV), the embeddings of SFace and
MobileFaceNet (onnxruntime) and dlib, the forward and input gradient of facepii's torch copies of
both ONNX models (oneDNN, MKL, ATen), a few steps of the attacker's decoder training and face
space (PCA through OpenBLAS, ridge, Adam) and a few steps of the white-box refinement.

Not covered: ``torch.nn.functional.grid_sample`` (the EOT views of the standard budget), which QEMU
7.2 emulates wrongly (outputs off by up to 0.77 against real CPUs; docs/scale.md).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import facepii  # noqa: F401  (first: the kernels' pin)

# isort: split
import numpy as np


def digest(a) -> str:
    import torch

    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def main(celeba: Path, mfn: Path, small: bool = False) -> dict:
    """Six photos, three decoder steps and two refinement steps; ``small``: two, one and one (under
    emulation every step takes minutes)."""
    import torch

    from attacks.facemodel import Budget, FaceModel, to_unit
    from facepii import exact, kernels
    from facepii.encoders import get_encoder
    from facepii.executor import compute_threads
    from facepii.faces import align, default_aligner, read_image
    from facepii.torch_onnx import torch_encoder_for

    out: dict = {"kernels": kernels.fingerprint()}
    n, steps = (2, 1) if small else (6, 3)
    photos = sorted((celeba / "img_celeba").glob("*.jpg"))[:n]
    lms, faces = [], []
    for p in photos:
        rgb = read_image(p)
        lm = default_aligner().landmarks(rgb)
        lms.append(lm)
        faces.append(align(rgb, lm))
    F = np.stack(faces)
    out["landmarks"], out["aligned"] = digest(np.asarray(lms)), digest(F)
    with compute_threads(1):
        sface, mobile = get_encoder("sface"), get_encoder(f"onnx:{mfn}")
        out["sface"], out["mobilefacenet"] = digest(sface.embed(F)), digest(mobile.embed(F))
        dl = get_encoder("dlib")
        dl.n_jobs = 1
        out["dlib"] = digest(dl.embed(F))
        for name, enc in (("sface", sface), ("mobilefacenet", mobile)):
            te = torch_encoder_for(enc, F)
            x = torch.from_numpy(F).permute(0, 3, 1, 2).float().requires_grad_(True)
            y = te(x)
            (y ** 2).sum().backward()
            out[f"{name}_torch"], out[f"{name}_torch_grad"] = digest(y), digest(x.grad)
        # the attacker's face model: face space (PCA), ridge start, decoder steps with the identity loss
        aug = np.concatenate([F, F[:, :, ::-1], np.roll(F, 2, axis=1), np.roll(F, -2, axis=2)])
        te = torch_encoder_for(sface, F)
        E = sface.embed(aug)
        budget = Budget("probe", 12, steps, 1, 2, False, 1, 1)
        fm = FaceModel.train(E, aug, budget, te, seed=0)
        out["face_space"] = digest(fm.space.components)
        out["decoder"] = digest(torch.cat([p.flatten() for p in fm.decoder.state_dict().values()]))
        rec = fm.reconstruct(E[:n])
        out["decoded"] = digest(rec)
        # the white-box refinement's step: render, target forward + backward, Adam
        c = torch.zeros(n, len(fm.space.components), requires_grad=True)
        opt = exact.Adam([c], lr=0.05)
        tgt = torch.from_numpy(to_unit(E[:n]))
        for _ in range(steps if small else 2):
            xr = fm.decoder.render(c).clamp(0, 1)
            yr = te(xr * 255.0)
            loss = (1 - (yr / yr.norm(dim=1, keepdim=True) * tgt).sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        out["refined"] = digest(c)
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), "--small" in sys.argv[3:])))
