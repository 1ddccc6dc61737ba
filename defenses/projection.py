"""``projection``: keyed random projection to ``dim`` dimensions (Johnson-Lindenstrauss).

The key (``seed``, and with ``key_mode="user"`` the user id) draws a Gaussian
matrix, or one with orthonormal rows (``kind="orthogonal"``, needs ``dim`` <=
the embedding width); templates are ``R @ e`` of the unit embedding, compared
by cosine similarity. With one key, cosine similarities are preserved up to
the JL distortion; across different user keys templates are unrelated
(unlinkable) — as long as the keys stay secret.
"""

from __future__ import annotations

import numpy as np

from defenses.base import Defense, l2_normalize, per_key
from defenses.base import f64_matmul as _f64_matmul
from facepii.errors import ParameterError
from facepii.params import Interval, Options


def projection_matrix(key: int, dim: int, d_in: int, kind: str) -> np.ndarray:
    rng = np.random.default_rng(key)
    g = rng.normal(size=(d_in, dim))
    if kind == "orthogonal":
        q, r = np.linalg.qr(g)  # d_in x dim, orthonormal columns
        return (q * np.sign(np.diag(r))).T.astype(np.float32)
    return (g.T / np.sqrt(dim)).astype(np.float32)


class Projection(Defense):
    """Keyed random (Gaussian or orthogonal) projection to dim dimensions, cosine; JL-preserving per key."""

    registry_name = "projection"
    comparator = "cosine"
    keyed = True
    key_modes = ("system", "user")
    invertible = True

    _parameter_constraints = {"dim": [Interval(int, 1, None)], "kind": [Options(("gaussian", "orthogonal"))]}

    def __init__(self, dim: int = 64, kind: str = "gaussian", key_mode: str = "system", seed: int = 0):
        self.dim = dim
        self.kind = kind
        self.key_mode = key_mode
        self.seed = seed

    def fit(self, E, users=None, *, comparator="cosine"):
        super().fit(E, users, comparator=comparator)
        if self.kind == "orthogonal" and self.dim > self.dim_in_:
            raise ParameterError(f"projection: orthogonal needs dim <= {self.dim_in_} (the embedding width), "
                                 f"got {self.dim}; use kind=gaussian.")
        return self

    def matrix(self, key: int) -> np.ndarray:
        return projection_matrix(key, self.dim, self.dim_in_, self.kind)

    def transform(self, E, users=None):
        return per_key(self, l2_normalize(E), users, lambda X, k: _f64_matmul(X, self.matrix(k).T))

    def inversion_loss(self, key):
        import torch

        R = torch.from_numpy(self.matrix(key))
        return lambda X, T: 1 - torch.nn.functional.cosine_similarity(X @ R.T, torch.as_tensor(T), dim=1)

    def template_nbytes(self):
        return 4 * int(self.dim)
