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
