"""ONNX face models (``onnx:PATH[?options]``, and SFace): aligned faces -> embeddings through onnxruntime.

Input size and layout are read from the model unless given; options (or a TOML file beside the
model): :data:`ONNX_OPTIONS`.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
import urllib.parse
from pathlib import Path

import numpy as np

from facepii import onnx_graph
from facepii.cpus import usable_cpus
from facepii.encoder_base import TIGHT_CROP, Differentiable, check_faces, crop_margin, file_digest
from facepii.errors import EncoderError, ParameterError
from facepii.faces import FACE_SIZE, models_dir
from facepii.preprocess import RESIZE_VERSION, resize


def load_onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime session with a dynamic batch size and constant weights folded
    (see :func:`facepii.onnx_graph.prepare`)."""
    import onnxruntime as ort

    try:
        model = onnx_graph.prepare(onnx_graph.load(path))
    except EncoderError as exc:
        raise EncoderError(f"{path}: {exc}") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or usable_cpus()
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
        side = FACE_SIZE - 2 * crop_margin(FACE_SIZE, self.crop) if self.crop < 1.0 else FACE_SIZE
        if (side, side) != tuple(self.input_size):
            settings += "|resize=" + RESIZE_VERSION  # embeddings of an earlier resize are not reused
        # the cache key: the file and every option that changes the raw output (center is applied after)
        self.file_sha = file_digest(p)
        self.version = version or f"{self.file_sha}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"
        out = self.embed(np.zeros((1, FACE_SIZE, FACE_SIZE, 3), np.uint8))
        self.dim = int(out.shape[1])
        if not 2 <= self.dim <= self.MAX_DIM:
            raise EncoderError(f"onnx:{p}: output {self._output!r} has {self.dim} values per face; a face "
                               f"embedding has 2..{self.MAX_DIM} (is it an image or a score?).")

    def __getstate__(self) -> dict:
        """Pickled (to a Dask worker) without its onnxruntime session, which the other side opens again from
        the same file, after checking that the file there is the one this encoder's version names."""
        state = dict(self.__dict__)
        state.pop("_session", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        p = Path(self.path)
        if not p.is_file():
            raise EncoderError(f"{self.name}: {p} is not on this machine; workers need the model files at the "
                               "driver's paths (a shared filesystem).")
        if file_digest(p) != self.file_sha:
            raise EncoderError(f"{self.name}: {p} on this machine is another file than the driver's (its digest "
                               "differs); install the same model files on every worker.")
        self._session = load_onnx_session(p, threads=1)

    def _prepare(self, faces: np.ndarray) -> np.ndarray:
        if self.crop < 1.0:
            m = crop_margin(FACE_SIZE, self.crop)
            faces = faces[:, m:FACE_SIZE - m, m:FACE_SIZE - m]
        x = faces[..., ::-1] if self.bgr else faces
        if x.shape[1:3] != tuple(self.input_size):  # the torch copy applies the same map (facepii.preprocess)
            x = resize(x, self.input_size)
        x = (x.astype(np.float32) - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x)

    def _run_graph(self, x: np.ndarray) -> np.ndarray:
        """The graph on prepared input, in batches: its raw output, N x dim."""
        out = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size]
            try:
                y = self._session.run([self._output], {self._input: xb})[0]
            except Exception as exc:  # onnxruntime's own errors: the options do not fit the model
                msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                raise EncoderError(f"{self.name}: onnxruntime cannot run the model on {xb.shape} inputs ({msg}); "
                                   "check its options (layout, size, output).") from None
            out.append(y.reshape(len(xb), -1))
        if not out:
            return np.zeros((0, getattr(self, "dim", 0)), np.float32)
        return np.concatenate(out).astype(np.float32)

    def raw(self, faces: np.ndarray) -> np.ndarray:
        """The model's output, before any centring (what the cache stores)."""
        faces = check_faces(faces)
        n = self.batch_size  # prepared batch by batch: float copies of a few faces at a time
        parts = [self._run_graph(self._prepare(faces[i:i + n])) for i in range(0, len(faces), n)]
        return np.concatenate(parts) if parts else np.zeros((0, getattr(self, "dim", 0)), np.float32)

    def differentiable(self) -> Differentiable:
        """Its ONNX graph and pre-processing, for the torch copy white-box attacks differentiate."""
        return Differentiable(self.path, self.mean, self.std, self.bgr, self._output, tuple(self.input_size),
                              self.layout, self.crop, lambda f: self._prepare(np.asarray(f, np.uint8)),
                              self._run_graph)

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


def onnx_from_spec(arg: str) -> OnnxEncoder:
    """``PATH[?options]`` (the text after ``onnx:``) -> the encoder, its options checked."""
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
