"""The linear face space (eigenfaces) and the safetensors header written in one order: shared by the
attacker's face model (attacks.facemodel) and its prior (attacks.prior)."""

from __future__ import annotations

import numpy as np


class FaceSpace:
    """Mean face + principal components of aligned faces (pixels scaled to [0, 1])."""

    def __init__(self, mean: np.ndarray, components: np.ndarray, scale: np.ndarray):
        # C order always: the SVD returns the components in Fortran order, the cache gives them back in
        # C order, and the layout picks the BLAS path (its rounding): a face model read from the cache
        # computed other faces than the same model trained in the run
        self.mean = np.ascontiguousarray(mean, np.float32)              # (D,)
        self.components = np.ascontiguousarray(components, np.float32)  # (k, D), orthonormal rows
        self.scale = np.ascontiguousarray(scale, np.float32)            # (k,) std of the coefficients

    @classmethod
    def fit(cls, faces: np.ndarray, k: int, seed: int = 0) -> FaceSpace:
        from sklearn.utils.extmath import randomized_svd

        X = faces.reshape(len(faces), -1).astype(np.float32) / 255.0
        mean = X.mean(axis=0)
        k = int(min(k, len(X) - 1))
        _, s, vt = randomized_svd(X - mean, k, n_iter=4, random_state=seed)
        return cls(mean, vt, s / np.sqrt(max(len(X) - 1, 1)))

    def encode(self, faces: np.ndarray) -> np.ndarray:
        X = faces.reshape(len(faces), -1).astype(np.float32) / 255.0
        return (X - self.mean) @ self.components.T

    def decode(self, coef: np.ndarray) -> np.ndarray:
        X = coef @ self.components + self.mean
        return np.clip(X * 255.0, 0, 255).reshape(-1, 112, 112, 3).astype(np.uint8)



def canonical_header(data: bytes) -> bytes:
    """safetensors ``data`` with its JSON header written in one fixed order: the same tensors and
    metadata give the same bytes in every process.

    The library keeps the metadata in a Rust HashMap, whose order is seeded per process: the same face
    model saved by two processes came out as two byte strings (the metadata's two keys swapped) and so
    with two digests. The header is re-serialised with the metadata's keys sorted and padded with
    spaces to its original length (the data offsets are relative to the header's end, so nothing else
    moves); the file reads back as before."""
    import json
    import struct

    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(meta.items()))} if meta is not None else {}) | header
    text = json.dumps(ordered, separators=(",", ":")).encode()
    if len(text) > n:  # cannot happen for the library's compact JSON; keep its bytes rather than break them
        return data
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n:]
