"""``pca``: keep the first ``dim`` principal components (fit on the defender's own enrolment
embeddings); cosine comparator. Dimensionality reduction, not a secret: it is a baseline."""

from __future__ import annotations

import numpy as np

from defenses.base import Defense, l2_normalize
from defenses.base import f64_matmul as _f64_matmul
from facepii.errors import ParameterError


class PCA(Defense):
    """Keep the first dim principal components (fit on the defender's enrolment data); cosine."""

    registry_name = "pca"
    comparator = "cosine"

    def __init__(self, dim: int = 32, whiten: bool = False):
        self.dim = dim
        self.whiten = whiten

    def fit(self, E, users=None, *, comparator="cosine"):
        super().fit(E, users, comparator=comparator)
        X = l2_normalize(E).astype(np.float64)
        if not isinstance(self.dim, (int, np.integer)) or not 1 <= self.dim <= min(X.shape):
            raise ParameterError(f"pca: dim must be an integer in 1..{min(X.shape)}, got {self.dim!r}.")
        self.mean_ = X.mean(axis=0)
        _, s, vt = np.linalg.svd(X - self.mean_, full_matrices=False)
        self.components_ = vt[: self.dim].astype(np.float32)
        self.scale_ = (s[: self.dim] / np.sqrt(max(len(X) - 1, 1))).astype(np.float32)
        return self

    def transform(self, E, users=None):
        Z = _f64_matmul(l2_normalize(E) - self.mean_.astype(np.float32), self.components_.T)
        return Z / self.scale_ if self.whiten else Z

    def template_nbytes(self):
        return 4 * int(self.dim)
