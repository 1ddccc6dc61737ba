"""Numerical template inversion: recover the unprotected embedding from a protected template.

For a keyed transform whose key the attacker holds (disclosed key, stolen token), the stored
template ``T = D_k(e)`` is inverted by minimising the defense's own differentiable relaxation of
its transform (:meth:`defenses.base.Defense.inversion_loss`: cosine for projections and
PolyProtect, a logistic loss on BioHash bits, a softmax cross-entropy on IoM indices) over unit
embeddings ``e``, with Adam from several starts: the attacker's learned estimate (the ridge
inverse) and ``starts - 1`` seeded random unit vectors. Per template the start that ends with the
lowest loss is kept: the attacker can evaluate the loss without knowing the answer. This is the
"numerical solver" of ISO/IEC 30136 irreversibility beside facepii's learned inverse.
"""

from __future__ import annotations

import numpy as np

from defenses.base import key_seed


def can_solve(defense) -> bool:
    """A single keyed step that offers a relaxation (chains and unkeyed defenses: learned inverse only)."""
    return len(defense.steps_()) == 1 and defense.keyed and defense.invertible


def solve(defense, templates: np.ndarray, users: np.ndarray | None, start: np.ndarray, *, starts: int = 4,
          steps: int = 300, lr: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings, final loss) per template; ``defense`` holds the keys the templates were made with."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors, many steps: thread-pool sync would dominate (and oversubscribe)
    try:
        return _solve(defense, templates, users, start, starts, steps, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _solve(defense, templates, users, start, starts, steps, lr, seed):
    import torch

    from facepii import exact

    d = defense.steps_()[0]
    T = np.asarray(templates)
    start = np.asarray(start, np.float32)
    n, dim = start.shape
    keys = d.key_ids(users, n)
    out = start.copy()
    loss_out = np.full(n, np.inf)
    rng = np.random.default_rng(seed + 4242)
    for k in dict.fromkeys(keys):
        idx = np.flatnonzero(keys == k)
        m = len(idx)
        rand = rng.normal(size=(starts - 1, m, dim)).astype(np.float32)
        X0 = np.concatenate([start[idx][None], rand]).reshape(starts * m, dim)
        X0 /= np.maximum(np.linalg.norm(X0, axis=1, keepdims=True), 1e-12)
        Tk = torch.from_numpy(np.tile(np.asarray(T[idx], np.float32), (starts, 1)))
        x = torch.from_numpy(X0).requires_grad_(True)
        opt = exact.Adam([x], lr=lr)
        loss_fn = d.inversion_loss(key_seed(d.seed, k))
        for _ in range(steps):
            u = x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)
            loss = loss_fn(u, Tk)
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
        with torch.no_grad():
            u = x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)
            final = loss_fn(u, Tk).numpy().reshape(starts, m)
            U = u.numpy().reshape(starts, m, dim)
        best = final.argmin(axis=0)
        out[idx] = U[best, np.arange(m)]
        loss_out[idx] = final[best, np.arange(m)]
    return out, loss_out
