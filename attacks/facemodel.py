"""The attacker's face model: a face space and a decoder from raw embeddings to faces.

Trained once per evaluation on the auxiliary set (public photos of OTHER
people) and shared by the attacks of every row:

- ``FaceSpace``: the mean face and the first principal components
  ("eigenfaces") of the aligned auxiliary faces. Reconstructions live in this
  space plus a small detail residual, which keeps them face-like: white-box
  gradients then change identity, not adversarial pixel noise, so the faces
  transfer to other face-recognition models (the judge).
- ``Decoder``: embedding -> face. An NbNet-style network (Mai et al., TPAMI
  2018) built on the face space: a linear map initialised by ridge regression
  plus an MLP give the face-space coefficients, and an upsampling
  convolutional branch (7 -> 14 -> 28 -> 56 -> 112) adds bounded detail.
  Loss: L1 on pixels, plus (white-box attacker) an identity loss 1 - cos(F(x_hat), e)
  through the differentiable copy of the target encoder F. The auxiliary set
  is augmented with mirrored faces (their embeddings queried from F) and, on
  the fly, small shifts and colour jitter of the pixel targets.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from attacks.facespace import FaceSpace, canonical_header  # noqa: F401  (also imported from here)
from attacks.prior import FacePrior
from facepii import progress

FACEMODEL_VERSION = "facemodel/v4"  # v2: safetensors files; v3: C-order arrays; v4: with its prior


@dataclass(frozen=True)
class Budget:
    """How much compute the attacks get; ``--budget quick|standard|thorough``."""

    name: str
    components: int        # face-space dimensions
    decoder_steps: int     # raw decoder training steps (batch 32)
    finetune_steps: int    # per-row adaptive decoder fine-tuning steps
    optimize_steps: int    # white-box refinement steps per reconstruction batch
    flips: bool            # mirror-augment the auxiliary set
    nes_steps: int         # black-box refinement steps (NES, queries only)
    nes_samples: int       # antithetic query pairs per NES step
    eot_views: int = 0     # white-box refinement: random views per step besides the face (attacks.eot)
    decoder_lr: float = 1e-3          # the raw decoder's (peak) Adam learning rate
    decoder_schedule: str = "constant"  # its learning-rate schedule: constant, or cosine (warm-up, then decay)


BUDGETS = {
    "quick": Budget("quick", 300, 60, 8, 15, False, 4, 6),
    # standard keeps the mirrored copies (43 s of target queries and 8 s of PCA): measured without them,
    # the README job's figures stayed within their intervals (SAR at noise sigma 0.1 0.112 instead of
    # 0.147, but a run with them and the same code also gave 0.112); one split cannot show they are
    # useless, and an attack is not weakened to save time on that evidence
    # standard and thorough refine through 2 random views per step (expectation over transformation),
    # chosen on held-aside auxiliary identities judged by dlib (benchmarks/tune_eot.py) and confirmed on the
    # victims by two judges the attack does not use (docs/results.md): dlib's rank-1 rose on every row
    # (README's job, unprotected 0.74 -> 0.78, sigma 0.1 0.38 -> 0.44), MobileFaceNet's did not fall;
    # the refinement takes 3.5x as long (31 -> 117 s per row). quick stays without: it is the fast check
    "standard": Budget("standard", 400, 150, 25, 30, True, 8, 10, 2),
    "thorough": Budget("thorough", 600, 1500, 200, 150, True, 40, 24, 2),
}


def to_unit(E: np.ndarray) -> np.ndarray:
    E = np.asarray(E, np.float32)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


def build_decoder(space: FaceSpace, d_in: int, init_w: np.ndarray | None = None,
                  init_b: np.ndarray | None = None):
    """The decoder network (torch): unit embedding (d_in) -> image in [0, 1], N x 3 x 112 x 112."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    k = len(space.components)

    class Up(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),
                                      nn.LeakyReLU(0.2))

        def forward(self, x):
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("basis", torch.from_numpy(space.components))
            self.register_buffer("mean", torch.from_numpy(space.mean))
            self.linear = nn.Linear(d_in, k)
            if init_w is not None:
                self.linear.weight.data = torch.from_numpy(np.ascontiguousarray(init_w, np.float32))
                self.linear.bias.data = torch.from_numpy(np.ascontiguousarray(init_b, np.float32))
            self.mlp = nn.Sequential(nn.Linear(d_in, 512), nn.LeakyReLU(0.2), nn.Linear(512, k))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
            self.fc = nn.Linear(d_in, 128 * 7 * 7)
            self.ups = nn.Sequential(Up(128, 96), Up(96, 64), Up(64, 32), Up(32, 16))
            self.out = nn.Conv2d(16, 3, 3, padding=1)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def coefficients(self, e):
            return self.linear(e) + self.mlp(e)

        def residual(self, e):
            h = F.leaky_relu(self.fc(e), 0.2).view(-1, 128, 7, 7)
            return 0.3 * torch.tanh(self.out(self.ups(h)))

        def render(self, coef, residual=None):
            x = (coef @ self.basis + self.mean).view(-1, 112, 112, 3).permute(0, 3, 1, 2)
            return x if residual is None else x + residual

        def forward(self, e):
            return self.render(self.coefficients(e), self.residual(e)).clamp(0, 1)

    return Decoder()


def ridge_init(space: FaceSpace, E: np.ndarray, faces: np.ndarray, alpha: float = 0.1):
    """Linear map embedding -> face-space coefficients (ridge), the decoder's starting point."""
    from sklearn.linear_model import Ridge

    r = Ridge(alpha=alpha).fit(E, space.encode(faces))
    return r.coef_, r.intercept_


def jitter(x, gen):
    """Small shift (up to 3 px) and colour jitter of a batch in [0, 1] (N x 3 x H x W)."""
    import torch

    dx, dy = (int(v) for v in torch.randint(-3, 4, (2,), generator=gen))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    gain = 1 + 0.1 * (torch.rand(len(x), 3, 1, 1, generator=gen) - 0.5)
    bias = 0.05 * (torch.rand(len(x), 1, 1, 1, generator=gen) - 0.5)
    return (x * gain + bias).clamp(0, 1)


def learning_rate(lr: float, schedule: str, step: int, steps: int) -> float:
    """The learning rate at ``step`` (0-based) of ``steps``: ``constant``, or ``cosine``: a linear warm-up
    over the first 5% of the steps (at least one), then a half cosine from ``lr`` down to ``lr / 20``."""
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train_decoder(net, E: np.ndarray, faces: np.ndarray, steps: int, torch_encoder=None, *,
                  id_targets: np.ndarray | None = None, lr: float = 1e-3, schedule: str = "constant",
                  batch: int = 32, seed: int = 0, id_weight: float = 1.0, device: str = "cpu",
                  desc: str = "training decoder"):
    """Fit ``net`` (inputs E -> faces) for ``steps`` steps of ``batch``. With a differentiable target
    encoder (white box) an identity loss pulls F(x_hat) towards ``id_targets`` (default: E itself,
    when E are raw embeddings). ``schedule``: the learning rate's course (:func:`learning_rate`)."""
    import torch

    from facepii import exact

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net.to(device).train()
    X = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2)
    Et = torch.from_numpy(np.asarray(E, np.float32))
    R = torch.from_numpy(to_unit(id_targets)) if id_targets is not None else None
    opt = exact.Adam(net.parameters(), lr=lr)
    n = len(X)
    batch = min(batch, n)
    perm = torch.randperm(n, generator=gen)
    pos = 0
    with progress.bar(desc, steps) as b:
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = learning_rate(lr, schedule, step, steps)
            if pos + batch > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + batch]
            pos += batch
            x = jitter(X[idx].float().to(device) / 255.0, gen)
            e = Et[idx].to(device)
            xh = net(e)
            loss = (xh - x).abs().mean()
            if torch_encoder is not None and id_weight > 0:
                y = torch_encoder(xh * 255.0)
                y = y / y.norm(dim=1, keepdim=True)
                tgt = (R[idx] if R is not None else e).to(device)
                loss = loss + id_weight * (1 - (y * tgt).sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            b.update(info=f"loss {loss.item():.3f}")
    net.eval()
    return net


class FaceModel:
    """Face space + raw-embedding decoder, trained on the auxiliary set; cached on disk. With a prior
    (:mod:`attacks.prior`) the face space is the prior's, and faces get the prior's detail."""

    def __init__(self, space: FaceSpace, decoder, d_in: int, prior=None):
        self.space = space
        self.decoder = decoder
        self.d_in = d_in
        self.prior = prior

    def detail(self, x):
        """The prior's detail for faces ``x`` (torch, N x 3 x 112 x 112 in [0, 1]): a constant tensor (no
        gradient), zero without a detail prior."""
        import torch

        if self.prior is None or self.prior.kind != "detail":
            return torch.zeros_like(x)
        return torch.from_numpy(self.prior.detail(x.detach().cpu().numpy())).to(x.device)

    def finish(self, x):
        """Faces ``x`` (torch, in [0, 1]) with the prior's detail added."""
        return (x + self.detail(x)).clamp(0, 1)

    @staticmethod
    def cache_key(aux_keys: list[str], encoder_id: str, knowledge: str, budget: Budget, seed: int,
                  prior_digest: str = "") -> str:
        h = hashlib.sha256()
        for part in [FACEMODEL_VERSION, encoder_id, knowledge, repr(budget), str(seed), prior_digest,
                     *sorted(aux_keys)]:
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()[:24]

    @classmethod
    def train(cls, E_aux: np.ndarray, faces_aux: np.ndarray, budget: Budget, torch_encoder=None,
              query=None, seed: int = 0, device: str = "cpu", prior=None) -> FaceModel:
        """``query(faces) -> embeddings`` (the target encoder) embeds the mirrored faces; ``prior``
        (:class:`attacks.prior.FacePrior`) gives the face space (else it is fitted here, eigenfaces)."""
        start = cls.start(E_aux, faces_aux, budget, query, seed, prior)
        return cls.fit_decoder(start, budget, torch_encoder, seed, device, prior)

    @staticmethod
    def start(E_aux: np.ndarray, faces_aux: np.ndarray, budget: Budget, query=None, seed: int = 0,
              prior=None) -> tuple:
        """What the decoder trains from: (unit embeddings, faces) with the mirrored copies where the budget
        has them, the face space (the prior's, or fitted here) and the ridge start."""
        E = to_unit(E_aux)
        faces = faces_aux
        if budget.flips and query is not None:
            flipped = np.ascontiguousarray(faces_aux[:, :, ::-1])
            E = np.concatenate([E, to_unit(query(flipped))])
            faces = np.concatenate([faces_aux, flipped])
        space = prior.space if prior is not None else FaceSpace.fit(faces, budget.components, seed)
        w, b = ridge_init(space, E, faces)
        return E, faces, space, w, b

    @classmethod
    def fit_decoder(cls, start: tuple, budget: Budget, torch_encoder=None, seed: int = 0,
                    device: str = "cpu", prior=None) -> FaceModel:
        """The raw decoder trained from :meth:`start`'s output with the budget's steps and learning rate."""
        import torch

        E, faces, space, w, b = start
        torch.manual_seed(seed)  # the network's initial weights
        net = build_decoder(space, E.shape[1], w, b)
        train_decoder(net, E, faces, budget.decoder_steps, torch_encoder, lr=budget.decoder_lr,
                      schedule=budget.decoder_schedule, seed=seed, device=device, desc="training face decoder")
        return cls(space, net.cpu(), E.shape[1], prior)

    def problem(self, E: np.ndarray, faces: np.ndarray) -> str | None:
        """Why this model (read back from a cache) is not a face model of these faces, or None: its faces
        do not depend on the embedding, or they are further from the faces than the mean face is."""
        out = self.reconstruct(E).astype(np.float32)
        if float(out.reshape(len(out), -1).std(axis=0).mean()) < 1.0:
            return "its faces do not depend on the embedding (a constant output)"
        target = np.asarray(faces, np.float32)
        mean = self.space.mean.reshape(112, 112, 3) * 255.0
        if float(np.abs(out - target).mean()) > float(np.abs(mean - target).mean()):
            return "its faces are further from the attacker's photos than the mean face"
        return None

    def reconstruct(self, E: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = self.finish(self.decoder(torch.from_numpy(to_unit(E))))
        return (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)

    def __reduce__(self):
        """Pickled (to a Dask worker) as its safetensors bytes: the decoder's class is built inside a
        function, and the other side builds it again exactly as a cache read does."""
        return (FaceModel.from_bytes, (self.to_bytes(),))

    def to_bytes(self) -> bytes:
        """Tensors only (safetensors): nothing in the data can execute code when read."""
        from safetensors.numpy import save

        arrays = {"space.mean": self.space.mean, "space.components": self.space.components,
                  "space.scale": self.space.scale}
        arrays.update({f"state.{k}": v.detach().cpu().numpy() for k, v in self.decoder.state_dict().items()})
        meta = {"format": FACEMODEL_VERSION, "d_in": str(self.d_in)}
        if self.prior is not None:  # the prior travels with the model (to a Dask worker, into the cache)
            import json

            meta["prior"] = json.dumps(self.prior.manifest, sort_keys=True)
            if self.prior.donors is not None:
                arrays["prior.donors"] = self.prior.donors
        return canonical_header(save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta))

    @classmethod
    def from_bytes(cls, data: bytes) -> FaceModel:
        """A face model from :meth:`to_bytes`' data; anything malformed raises ValueError (the caller retrains)."""
        import json
        import struct

        import torch
        from safetensors.numpy import load

        try:
            n = struct.unpack("<Q", data[:8])[0]
            meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
            arrays = load(data)
        except Exception as exc:  # the library's own errors for a corrupt or foreign file
            raise ValueError(f"not a safetensors file ({type(exc).__name__})") from None
        if meta.get("format") != FACEMODEL_VERSION or not str(meta.get("d_in", "")).isdigit():
            raise ValueError("not a facepii face model of this version")
        d_in = int(meta["d_in"])
        mean, comp, scale = (arrays.get(f"space.{k}") for k in ("mean", "components", "scale"))
        D = 112 * 112 * 3
        if (mean is None or comp is None or scale is None or mean.shape != (D,) or comp.ndim != 2
                or comp.shape[1] != D or scale.shape != (comp.shape[0],) or not 1 <= d_in <= 65536):
            raise ValueError("face space of the wrong shape")
        if not all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f"):
            raise ValueError("non-finite values")
        space = FaceSpace(mean, comp, scale)
        net = build_decoder(space, d_in)
        state = {k[6:]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith("state.")}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"decoder weights do not fit ({str(exc).splitlines()[0]})") from None
        net.eval()
        prior = None
        if meta.get("prior"):
            prior = FacePrior.from_parts(space, meta["prior"], arrays.get("prior.donors"))
        return cls(space, net, d_in, prior)
