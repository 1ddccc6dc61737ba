"""``quantize``: uniform k-bit quantisation per dimension.

``bits=1`` is sign binarisation compared by Hamming similarity (templates are
+-1; ``center=True`` takes the sign after subtracting the defender's enrolment
mean, which balances the bits of embeddings that are not zero-mean). For
``bits >= 2`` each
dimension's range is learned from the defender's enrolment embeddings (the
``clip`` and 100 - ``clip`` percentiles), split into 2^bits equal cells, and a
template stores cell indices; templates are compared by cosine similarity of
the cell centres. ``transform`` returns the cell centres (float32; +-1 for one bit),
so it is idempotent.
"""

from __future__ import annotations

import numpy as np

from defenses.base import Defense
from facepii.metrics import ROWWISE, cosine_similarity, hamming_similarity
from facepii.params import Interval


class Quantize(Defense):
    """Uniform k-bit quantisation per dimension; bits=1 is sign binarisation with Hamming matching."""

    registry_name = "quantize"
    matching = "own"  # cosine of the cell centres or Hamming, never searched by an inner-product index

    #: clip: a percentile cut from each tail
    _parameter_constraints = {"bits": [Interval(int, 1, 16)], "clip": [Interval(float, 0, 50, "left")]}

    def __init__(self, bits: int = 4, clip: float = 0.5, center: bool = False):
        self.bits = bits
        self.clip = clip
        self.center = center

    @property
    def emits(self) -> str:  # type: ignore[override]
        return "bits" if self.bits == 1 else "real"

    @property
    def output_comparator(self):
        return "hamming" if self.bits == 1 else "cosine"

    def fit(self, E, users=None, *, comparator="cosine"):
        super().fit(E, users, comparator=comparator)
        E = np.asarray(E, np.float32)
        self.mean_ = E.mean(axis=0) if self.center else np.zeros(E.shape[1], np.float32)
        lo = np.percentile(E, self.clip, axis=0).astype(np.float32)
        hi = np.percentile(E, 100 - self.clip, axis=0).astype(np.float32)
        width = np.maximum(hi - lo, np.float32(1e-4) * (1 + np.abs(lo)))  # constant dimensions
        self.lo_, self.hi_ = lo, (lo + width).astype(np.float32)
        return self

    def codes(self, E) -> np.ndarray:
        """The stored integer codes (what the bytes hold)."""
        E = np.asarray(E, np.float32)
        if self.bits == 1:
            return (E - self.mean_ > 0).astype(np.uint8)  # mean_ is 0 unless center=True
        levels = 2 ** self.bits
        q = np.floor((E - self.lo_) / (self.hi_ - self.lo_) * levels)
        return np.clip(q, 0, levels - 1).astype(np.int32)

    def transform(self, E, users=None):
        c = self.codes(E)
        if self.bits == 1:
            return np.where(c > 0, 1.0, -1.0).astype(np.float32)
        levels = 2 ** self.bits
        return (self.lo_ + (c + 0.5) * (self.hi_ - self.lo_) / levels).astype(np.float32)

    def score(self, T1, T2):
        if self.bits == 1:
            return hamming_similarity(np.asarray(T1) > 0, np.asarray(T2) > 0)
        return cosine_similarity(T1, T2)

    def paired_score(self, T1, T2):
        return ROWWISE["hamming" if self.bits == 1 else "cosine"](T1, T2)

    def template_nbytes(self):
        return int(np.ceil(self.dim_in_ * self.bits / 8))
