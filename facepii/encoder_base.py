"""What every face encoder is (the protocol) and what encoders share: the cache identity of an encoder's
output, checks of the aligned faces it takes, crops, file digests."""

from __future__ import annotations

import hashlib
import os
from typing import Protocol, runtime_checkable

import numpy as np

from facepii.errors import EncoderError
from facepii.faces import FACE_SIZE


@runtime_checkable
class Encoder(Protocol):
    name: str
    version: str
    dim: int
    comparator: str

    def embed(self, faces: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        ...


def encoder_id(enc: Encoder) -> str:
    """The cache key part that identifies an encoder's output."""
    return f"{enc.name}@{enc.version}"


def check_faces(faces: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim == 3:
        faces = faces[None]
    if faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
        raise EncoderError(f"expected aligned faces N x {size} x {size} x 3, got {faces.shape}")
    if faces.dtype != np.uint8:
        raise EncoderError(f"expected uint8 faces, got {faces.dtype}")
    return faces


def file_digest(path: str | os.PathLike, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


TIGHT_CROP = 88 / 112  # the central 88 x 88 of an aligned 112 x 112 face: about its detector box


def crop_margin(size: int, crop: float) -> int:
    """Pixels cut from each side of a ``size`` x ``size`` face to keep its central share ``crop``."""
    return int(round(size * (1 - crop) / 2))


def same_model(a: Encoder, b: Encoder) -> bool:
    """Whether two encoders run the same model (same name and version, or the same ONNX file)."""
    if encoder_id(a) == encoder_id(b):
        return True
    pa, pb = getattr(a, "path", None), getattr(b, "path", None)
    if pa and pb:
        return file_digest(pa) == file_digest(pb)
    return False


NORM_RANGE = (1e-15, 1e15)  # embeddings whose length leaves this range over- or underflow float32 products


def embedding_problem(E: np.ndarray) -> str | None:
    """Why a matrix of embeddings carries no usable identity, or None: NaN or infinite values, a row of
    zeros, lengths that leave :data:`NORM_RANGE` (float32 dot products overflow or vanish), or every row
    the same (a constant output). Checked wherever embeddings enter: a model's output, a file, a cache."""
    E = np.asarray(E)
    if E.size == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isfinite(E).all():
            rows = np.flatnonzero(~np.isfinite(E).all(axis=1))
            return f"{len(rows)} row(s) hold NaN or inf values, or values beyond float32's range (first: row {rows[0]})"
        norms = np.linalg.norm(E.astype(np.float64), axis=1)
    if (norms == 0).any():
        rows = np.flatnonzero(norms == 0)
        return f"{len(rows)} row(s) are all zeros (first: row {rows[0]}): an all-zero embedding has no direction"
    if norms.min() < NORM_RANGE[0] or norms.max() > NORM_RANGE[1]:
        return (f"embedding lengths from {norms.min():.3g} to {norms.max():.3g} leave [{NORM_RANGE[0]:g}, "
                f"{NORM_RANGE[1]:g}]: scores of such vectors vanish or overflow in float32")
    if len(E) > 1:
        U = E / norms[:, None]
        if float(np.abs(U - U[0]).max()) < 1e-6:
            return f"all {len(E)} rows point the same way (a constant output): they carry no identity"
    return None
