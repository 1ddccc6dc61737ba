"""Face encoders: aligned faces -> embeddings.

An encoder has a ``name``, a ``version`` (both part of the embedding cache
key), a ``dim``, a ``comparator`` ("cosine" or "l2", see
:mod:`facepii.metrics`) and ``embed(faces) -> (N, dim) float32`` for aligned
112 x 112 RGB uint8 faces. Built in:

- ``sface``: SFace (OpenCV Zoo, int8), 128-d, cosine, through onnxruntime;
- ``dlib``: dlib's ResNet (LFW 99.38%), 128-d, L2, one process per core;
- ``onnx:PATH[?options]``: any ONNX face model; input size and layout read from the model
  unless given; options (or a TOML file beside the model): :data:`ONNX_OPTIONS`.

Register your own with ``facepii.registry.encoders.register`` or the entry-point
group ``facepii.encoders``; the factory receives the text after ``name:``.
"""

from __future__ import annotations

import numpy as np

from facepii.dlib_encoder import DlibEncoder
from facepii.encoder_base import TIGHT_CROP, Encoder, check_faces, crop_margin, encoder_id, file_digest
from facepii.errors import EncoderError, ParameterError
from facepii.onnx_encoder import ONNX_OPTIONS, OnnxEncoder, SFaceEncoder, onnx_from_spec
from facepii.registry import encoders as registry

__all__ = ["ONNX_OPTIONS", "TIGHT_CROP", "DlibEncoder", "Encoder", "OnnxEncoder", "PrecomputedEncoder", "SFaceEncoder",
           "check_faces", "crop_margin", "encoder_id", "file_digest", "get_encoder", "spec_list"]


def spec_list(text: str | None, option: str) -> list[str]:
    """``a,b,onnx:m.onnx?mean=0,0,0`` -> its entries (a comma inside an entry's ``?options`` continues it)."""
    if text is None or not str(text).strip():
        return []
    parts: list[str] = []
    for s in (s.strip() for s in str(text).split(",")):
        if parts and "?" in parts[-1] and s and s.split(":")[0] not in registry:
            parts[-1] += "," + s
        else:
            parts.append(s)
    if any(not s for s in parts):
        raise ParameterError(f"{option} {text!r}: an empty name in the list; give e.g. sface,dlib.")
    if len(set(parts)) != len(parts):
        raise ParameterError(f"{option} {text!r}: a model named twice.")
    return parts


class PrecomputedEncoder:
    """Embeddings computed elsewhere (an ``embeddings:FILE.npz`` dataset): nothing to run."""

    version = "precomputed"

    def __init__(self, name: str = "precomputed", dim: int = 0, comparator: str = "cosine"):
        if comparator not in ("cosine", "l2"):
            raise EncoderError(f"precomputed: comparator must be cosine or l2, got {comparator!r}.")
        self.name, self.dim, self.comparator = name, dim, comparator

    def embed(self, faces: np.ndarray) -> np.ndarray:
        raise EncoderError(f"{self.name}: precomputed embeddings come with no model to embed images; "
                           "name a real encoder (sface, dlib, onnx:PATH) for image datasets.")


# ---------------------------------------------------------------- registry


@registry.register("sface")
def _sface(arg: str = "") -> SFaceEncoder:
    """SFace (OpenCV Zoo, int8) 128-d, cosine; ONNX via onnxruntime. The default target."""
    if arg:
        raise EncoderError("sface takes no argument; for another ONNX file use onnx:PATH.")
    return SFaceEncoder()


@registry.register("dlib")
def _dlib(arg: str = "") -> DlibEncoder:
    """dlib ResNet 128-d (LFW 99.38%), L2; one process per core. The default judge for sface."""
    if arg:
        raise EncoderError("dlib takes no argument.")
    return DlibEncoder()


@registry.register("onnx")
def _onnx(arg: str = "") -> OnnxEncoder:
    """Any ONNX face model: onnx:PATH[?size=112&layout=nchw&mean=127.5&std=128&bgr=0&crop=align&center=0
    &output=NAME&comparator=cosine&name=NAME], or the same keys in a TOML file beside the model."""
    return onnx_from_spec(arg)


@registry.register("precomputed")
def _precomputed(arg: str = "") -> PrecomputedEncoder:
    """Embeddings given in an embeddings:FILE.npz dataset: precomputed[:cosine|l2]."""
    return PrecomputedEncoder(comparator=arg or "cosine")


def get_encoder(spec: str) -> Encoder:
    """An encoder from its spec: ``sface``, ``dlib``, ``onnx:PATH`` or a plug-in's name."""
    name, _, arg = spec.partition(":")
    enc = registry.create(name, arg)
    try:
        enc.spec = spec  # what a Dask worker needs to load the same model
    except AttributeError:
        pass
    return enc
