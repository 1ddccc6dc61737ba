"""What every face encoder is (the protocol) and what encoders share: the cache identity of an encoder's
output, checks of the aligned faces it takes, crops, file digests."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from facepii.errors import EncoderError
from facepii.faces import FACE_SIZE


@runtime_checkable
class Encoder(Protocol):
    """A face encoder (a target or a judge; tests/test_contracts.py checks every registered one):

    - ``name``, ``version``: the cache identity of its output (:func:`encoder_id`);
    - ``dim``: the embedding's width; ``comparator``: "cosine" or "l2" (:mod:`facepii.metrics`);
    - ``embed(faces)``: aligned N x 112 x 112 x 3 uint8 RGB faces -> N x dim float32, finite, each face's
      embedding independent of the others in the batch and the same on every call; other input is an
      :class:`~facepii.errors.EncoderError` (one line);
    - optionally ``differentiable() -> Differentiable | None``: its graph for white-box attacks (none: only
      black-box attacks, through queries, reach it)."""

    name: str
    version: str
    dim: int
    comparator: str

    def embed(self, faces: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        ...


@dataclass(frozen=True)
class Differentiable:
    """What an encoder declares so that white-box attacks can differentiate it (:mod:`facepii.torch_onnx`
    builds the torch copy from this): its ONNX graph, the pre-processing before the graph, and the two
    halves of its own forward pass, which the copy is checked against separately."""

    path: str                                       # the ONNX file
    mean: np.ndarray                                # per channel (or one value)
    std: np.ndarray
    bgr: bool
    output: str | None                              # the graph output that is the embedding
    size: tuple[int, int]                           # the graph's input height and width
    layout: str                                     # "NCHW" or "NHWC"
    crop: float                                     # central share of the aligned face kept
    prepare: Callable[[np.ndarray], np.ndarray]     # uint8 faces -> the graph's input
    run_graph: Callable[[np.ndarray], np.ndarray]   # the graph's input -> its raw output, N x dim


def differentiable(enc) -> Differentiable | None:
    """The encoder's declared graph for white-box attacks, or None (dlib, precomputed, a plug-in without it)."""
    hook = getattr(enc, "differentiable", None)
    return hook() if callable(hook) else None


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
    da, db = differentiable(a), differentiable(b)
    if da is not None and db is not None:
        return file_digest(da.path) == file_digest(db.path)
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
