"""``polyprotect``: PolyProtect (Hahn & Marcel, "Towards protecting face embeddings in
mobile face verification scenarios", IEEE T-BIOM 2022).

Each user's key is a set of ``degree`` non-zero integer coefficients drawn from
[-coef_range, coef_range] and the exponents 1..degree in a random order. Sets
of ``degree`` consecutive elements of the (L2-normalised) embedding, successive
sets overlapping by ``overlap`` elements, are each mapped to one output element
``sum_k c_k * v_k ** e_k``; the last set is zero-padded. Templates are compared
by cosine similarity. Larger overlap: longer templates, better accuracy,
easier inversion.
"""

from __future__ import annotations

import numpy as np

from defenses.base import Defense, l2_normalize, per_key
from facepii.errors import ParameterError
from facepii.params import Interval


def polyprotect_key(key: int, degree: int, coef_range: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(key)
    choices = np.r_[np.arange(-coef_range, 0), np.arange(1, coef_range + 1)]
    coef = rng.choice(choices, size=degree, replace=True).astype(np.float64)
    expo = rng.permutation(np.arange(1, degree + 1))
    return coef, expo


def windows(d_in: int, degree: int, overlap: int) -> np.ndarray:
    """Indices (n_out x degree) of the element sets; -1 marks zero padding."""
    step = degree - overlap
    n_out = int(np.ceil(max(d_in - overlap, 1) / step))
    idx = np.arange(n_out)[:, None] * step + np.arange(degree)[None, :]
    return np.where(idx < d_in, idx, -1)


class PolyProtect(Defense):
    """PolyProtect: per-user polynomial mapping of overlapping element sets (coefficients, exponents); cosine."""

    registry_name = "polyprotect"
    comparator = "cosine"
    keyed = True
    key_modes = ("system", "user")
    invertible = True

    _parameter_constraints = {"degree": [Interval(int, 2, None)], "overlap": [Interval(int, 0, None)],
                              "coef_range": [Interval(int, 1, None)]}

    def __init__(self, degree: int = 5, overlap: int = 2, coef_range: int = 50, key_mode: str = "user",
                 seed: int = 0):
        self.degree = degree
        self.overlap = overlap
        self.coef_range = coef_range
        self.key_mode = key_mode
        self.seed = seed

    def _validate(self):
        super()._validate()
        if not 0 <= self.overlap < self.degree:
            raise ParameterError(f"polyprotect: overlap must be in 0..degree-1 ({self.degree - 1}), "
                                 f"got {self.overlap!r}.")

    def transform(self, E, users=None):
        X = l2_normalize(E).astype(np.float64)
        W = windows(X.shape[1], self.degree, self.overlap)
        Xp = np.concatenate([X, np.zeros((len(X), 1))], axis=1)  # index -1 -> the zero column

        def poly(Z, k):
            coef, expo = polyprotect_key(k, self.degree, self.coef_range)
            sets = Z[:, W]  # n x n_out x degree
            return (sets ** expo[None, None, :] * coef[None, None, :]).sum(axis=2).astype(np.float32)

        return per_key(self, Xp, users, poly)

    def inversion_loss(self, key):
        import torch

        coef, expo = polyprotect_key(key, self.degree, self.coef_range)
        W = torch.from_numpy(windows(self.dim_in_, self.degree, self.overlap))
        e = torch.from_numpy(expo.astype(np.float32))
        c = torch.from_numpy(coef.astype(np.float32))

        def loss(X, T):
            Xp = torch.cat([X, torch.zeros(len(X), 1, dtype=X.dtype)], dim=1)
            P = (Xp[:, W] ** e * c).sum(2)
            return 1 - torch.nn.functional.cosine_similarity(P, torch.as_tensor(T), dim=1)

        return loss

    def template_nbytes(self):
        return 4 * len(windows(self.dim_in_, self.degree, self.overlap))
