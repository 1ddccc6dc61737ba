"""``biohash``: BioHashing (Teoh, Ngo & Goh, 2004).

A key (token) draws ``bits`` random vectors, orthonormalised (Gram-Schmidt, so
``bits`` <= the embedding width); the embedding — centred on the defender's
enrolment mean and L2-normalised — is projected on them and each projection is
thresholded at 0. Templates are bit strings compared by Hamming similarity.
"""

from __future__ import annotations

import numpy as np

from defenses.base import Defense, l2_normalize, per_key
from defenses.base import f64_matmul as _f64_matmul
from facepii.errors import ParameterError
from facepii.metrics import ROWWISE, hamming_similarity
from facepii.params import Interval


def biohash_basis(key: int, bits: int, d_in: int) -> np.ndarray:
    rng = np.random.default_rng(key)
    q, r = np.linalg.qr(rng.normal(size=(d_in, bits)))
    return (q * np.sign(np.diag(r))).T.astype(np.float32)  # bits x d_in, orthonormal rows


class BioHash(Defense):
    """BioHashing: keyed orthonormal projection to bits, thresholded at 0; Hamming matching."""

    registry_name = "biohash"
    comparator = "hamming"
    keyed = True
    key_modes = ("system", "user")
    emits = "bits"
    invertible = True
    matching = "own"

    _parameter_constraints = {"bits": [Interval(int, 1, None)]}

    def __init__(self, bits: int = 128, key_mode: str = "user", center: bool = True, seed: int = 0):
        self.bits = bits
        self.key_mode = key_mode
        self.center = center
        self.seed = seed

    def fit(self, E, users=None, *, comparator="cosine"):
        super().fit(E, users, comparator=comparator)
        if self.bits > self.dim_in_:
            raise ParameterError(f"biohash: bits must be <= the embedding width {self.dim_in_} "
                                 f"(orthonormal projections), got {self.bits}.")
        X = l2_normalize(E)
        self.mean_ = X.mean(axis=0) if self.center else np.zeros(self.dim_in_, np.float32)
        return self

    def transform(self, E, users=None):
        X = l2_normalize(l2_normalize(E) - self.mean_)
        return per_key(self, X, users, lambda Z, k: (_f64_matmul(Z, biohash_basis(k, self.bits, self.dim_in_).T) > 0)
                       .astype(np.float32))

    def score(self, T1, T2):
        return hamming_similarity(T1, T2)

    def paired_score(self, T1, T2):
        return ROWWISE["hamming"](T1, T2)

    def inversion_loss(self, key):
        """Logistic loss of each projection's sign against the stored bit (a smooth Hamming distance)."""
        import torch

        B = torch.from_numpy(biohash_basis(key, self.bits, self.dim_in_))
        mean = torch.from_numpy(np.asarray(self.mean_, np.float32))
        gain = 4.0 * np.sqrt(self.dim_in_)

        def loss(X, T):
            Z = X - mean
            Z = Z / Z.norm(dim=1, keepdim=True).clamp_min(1e-8)
            sign = 2 * torch.as_tensor(T) - 1
            return torch.nn.functional.softplus(-sign * (Z @ B.T) * gain).mean(1)

        return loss

    def template_nbytes(self):
        return int(np.ceil(self.bits / 8))
