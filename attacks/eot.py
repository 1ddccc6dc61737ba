"""Expectation over transformation (EOT, Athalye et al., ICML 2018) for face reconstructions.

A matcher never sees the pixels an attack optimised: it detects and aligns the face again (a few
pixels of shift, a few per cent of scale, a few degrees of roll), may mirror it, and the photo may
have been resized, blurred or compressed on the way. A face optimised for one exact view of one model
is partly fitted to that view; optimising the EXPECTED match over such views keeps what survives
them, which is what other face-recognition models (the judges) also see.

:func:`views` draws ``n`` random views of every image of a batch (differentiable, torch): an affine
re-alignment (shift, scale, rotation), a mirror, a Gaussian blur, a down-and-up resampling (the
detail a JPEG or a small photo loses), and a brightness / contrast change. All of it is drawn from a
seeded generator: the same seed gives the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ViewRange:
    """How far a view departs from the image: the matcher-pipeline variation the attack expects."""

    shift: float = 0.04        # fraction of the half-width (0.04 of 56 px: about 2 px)
    scale: float = 0.06        # +- relative scale
    rotate: float = 6.0        # +- degrees
    flip: float = 0.5          # probability of a mirror
    blur: float = 1.0          # largest Gaussian blur sigma (px); drawn in [0, blur] with probability 1/2
    resample: int = 64         # smallest side the face is resampled to and back (px), with probability 1/2
    brightness: float = 0.06   # +- additive
    contrast: float = 0.1      # +- relative


    def scaled(self, f: float) -> ViewRange:
        """Every departure ``f`` times as large (the mirror's probability unchanged)."""
        return ViewRange(self.shift * f, self.scale * f, self.rotate * f, self.flip, self.blur * f,
                         max(16, int(round(112 - (112 - self.resample) * f))), self.brightness * f, self.contrast * f)


DEFAULT_RANGE = ViewRange()


def _blur(x, sigma: float):
    import torch
    from torch.nn import functional as F

    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def views(x, n: int, rng: np.random.Generator, rng_range: ViewRange = DEFAULT_RANGE):
    """``n`` random views of each image of ``x`` (B x 3 x H x W in [0, 1]): (n B) x 3 x H x W, view-major
    (rows ``v B .. v B + B - 1`` are view ``v`` of the batch). Differentiable in ``x``."""
    import torch
    from torch.nn import functional as F

    b, _, h, w = x.shape
    out = []
    for _ in range(n):
        m = len(x)
        ang = np.deg2rad(rng.uniform(-rng_range.rotate, rng_range.rotate, m))
        s = 1 + rng.uniform(-rng_range.scale, rng_range.scale, m)
        flip = np.where(rng.random(m) < rng_range.flip, -1.0, 1.0)
        tx, ty = rng.uniform(-rng_range.shift, rng_range.shift, (2, m))
        theta = np.zeros((m, 2, 3), np.float32)
        theta[:, 0, 0] = flip * np.cos(ang) / s
        theta[:, 0, 1] = -np.sin(ang) / s
        theta[:, 1, 0] = flip * np.sin(ang) / s
        theta[:, 1, 1] = np.cos(ang) / s
        theta[:, 0, 2], theta[:, 1, 2] = tx, ty
        grid = F.affine_grid(torch.from_numpy(theta).to(x.device), list(x.shape), align_corners=False)
        v = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if rng.random() < 0.5 and rng_range.blur > 0:
            sigma = float(rng.uniform(0.3, rng_range.blur))
            v = _blur(v, sigma)
        if rng.random() < 0.5 and rng_range.resample < min(h, w):
            side = int(rng.integers(rng_range.resample, min(h, w)))
            v = F.interpolate(F.interpolate(v, size=(side, side), mode="bilinear", align_corners=False,
                                            antialias=True), size=(h, w), mode="bilinear", align_corners=False)
        gain = torch.from_numpy(1 + rng.uniform(-rng_range.contrast, rng_range.contrast, (m, 1, 1, 1))).float()
        bias = torch.from_numpy(rng.uniform(-rng_range.brightness, rng_range.brightness, (m, 1, 1, 1))).float()
        mean = v.mean(dim=(1, 2, 3), keepdim=True)
        v = (v - mean) * gain.to(x.device) + mean + bias.to(x.device)
        out.append(v.clamp(0, 1))
    return torch.cat(out) if len(out) > 1 else out[0]
