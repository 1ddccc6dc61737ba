"""Torch operations whose float32 results are the same on every x86-64 CPU.

With the kernels pinned (:mod:`facepii.kernels`) most of torch computes the same bits on any CPU
with AVX2. Measured exceptions, found by running the attacks' operations on this machine (AMD,
AVX-512) and under emulated Intel Haswell and AMD EPYC CPUs: ``torch.sqrt`` on float32 tensors is
not correctly rounded here (about one result in five is off by a unit in the last place) and its
bits differ by CPU model whatever the switches say; ``torch.optim.Adam`` takes the square root of
its second moment that way, so a face model trained with it differed by CPU. The versions below
compute the square root in float64 and round once: the correctly rounded float32 result, the same
everywhere.
"""

from __future__ import annotations

import math

import torch


def sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root (differentiable): float64, then one rounding to ``x``'s dtype."""
    if x.dtype == torch.float64:
        return torch.sqrt(x)
    return torch.sqrt(x.double()).to(x.dtype)


class Adam(torch.optim.Optimizer):
    """Adam (Kingma & Ba, 2015) as ``torch.optim.Adam`` computes it (no weight decay, no AMSGrad), with
    the square root of the second moment correctly rounded (:func:`sqrt`):

        m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
        p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if not lr >= 0 or not eps >= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Adam: lr {lr}, betas {betas} and eps {eps} out of range")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
                t = st["step"]
                m, v, g = st["exp_avg"], st["exp_avg_sq"], p.grad
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                step_size = group["lr"] / (1 - b1 ** t)
                denom = (sqrt(v) / math.sqrt(1 - b2 ** t)).add_(group["eps"])
                p.addcdiv_(m, denom, value=-step_size)
        return loss
