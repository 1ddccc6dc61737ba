"""``iom``: Index-of-Max hashing, Gaussian random projection variant (GRP-IoM; Jin et al., 2018).

A key draws ``m`` hash functions, each ``q`` Gaussian random vectors; a
template stores, per hash function, the index (0..q-1) of the largest
projection of the unit embedding. Two templates match by the share of hash
functions whose indices agree.
"""

from __future__ import annotations

import numpy as np

from defenses.base import Defense, l2_normalize, per_key
from facepii.params import Interval


def iom_projections(key: int, m: int, q: int, d_in: int) -> np.ndarray:
    return np.random.default_rng(key).normal(size=(m, q, d_in)).astype(np.float32)


def index_agreement(T1: np.ndarray, T2: np.ndarray, q: int) -> np.ndarray:
    """Share of positions where two index vectors agree, for every pair (one-hot dot products)."""
    T1 = np.asarray(T1).astype(np.int64)
    T2 = np.asarray(T2).astype(np.int64)
    m = T1.shape[1]

    def onehot(T):
        out = np.zeros((len(T), m * q), np.float32)
        out[np.arange(len(T))[:, None], np.arange(m)[None, :] * q + T] = 1.0
        return out

    return (onehot(T1) @ onehot(T2).T) / m


class IoM(Defense):
    """Index-of-Max hashing (GRP-IoM): m keyed hash functions of q projections; match = share of equal indices."""

    registry_name = "iom"
    comparator = "iom"
    keyed = True
    key_modes = ("system", "user")
    emits = "index"
    invertible = True
    matching = "own"

    @property
    def index_size(self) -> int:  # type: ignore[override]
        return int(self.q)

    _parameter_constraints = {"m": [Interval(int, 1, None)], "q": [Interval(int, 2, None)]}

    def __init__(self, m: int = 256, q: int = 16, key_mode: str = "user", seed: int = 0):
        self.m = m
        self.q = q
        self.key_mode = key_mode
        self.seed = seed

    def transform(self, E, users=None):
        X = l2_normalize(E)

        def hash_(Z, k):
            W = iom_projections(k, self.m, self.q, self.dim_in_)
            return np.argmax(np.einsum("nd,mqd->nmq", Z, W), axis=2).astype(np.float32)

        return per_key(self, X, users, hash_)

    def score(self, T1, T2):
        return index_agreement(T1, T2, self.q)

    def paired_score(self, T1, T2):
        return (np.asarray(T1).astype(np.int64) == np.asarray(T2).astype(np.int64)).mean(axis=1)

    def inversion_loss(self, key):
        """Cross-entropy of each hash function's softmax over its q projections against the stored index."""
        import torch

        W = torch.from_numpy(iom_projections(key, self.m, self.q, self.dim_in_)).reshape(-1, self.dim_in_)
        q = self.q

        def loss(X, T):
            logits = (X @ W.T).reshape(len(X), -1, q) * 8.0
            idx = torch.as_tensor(np.asarray(T).astype(np.int64))
            return torch.nn.functional.cross_entropy(logits.reshape(-1, q), idx.reshape(-1),
                                                     reduction="none").reshape(len(X), -1).mean(1)

        return loss

    def template_nbytes(self):
        return int(np.ceil(self.m * np.ceil(np.log2(self.q)) / 8))
