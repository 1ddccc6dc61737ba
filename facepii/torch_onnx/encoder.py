"""The differentiable encoder (:class:`TorchEncoder`: the ONNX encoder's pre-processing, then the converted
graph), its check against onnxruntime (:func:`verify`, :func:`torch_encoder_for`), an ensemble of
surrogates, and the black-box query counter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facepii import onnx_graph
from facepii.encoder_base import crop_margin, differentiable
from facepii.errors import EncoderError
from facepii.preprocess import resize_torch
from facepii.torch_onnx.convert import build

#: a copy is refused when it disagrees with onnxruntime by more: the largest absolute difference
#: relative to the largest embedding value, and the lowest cosine between the two embeddings of a face
TOLERANCE = {"max_rel_diff": 1e-3, "min_cosine": 0.9999}
#: the two pre-processings (numpy for onnxruntime, torch for the copy) apply one linear map, in float64 and
#: float32: they agree to rounding, a few 1e-7 of the largest input value
PREP_TOLERANCE = {"max_rel_diff": 1e-5}


class TorchEncoder:
    """Differentiable encoder: RGB images in [0, 255] (N x 3 x 112 x 112 float tensor) -> embeddings, with
    the ONNX encoder's pre-processing (crop, resize, channel order, mean/std, layout) and centring."""

    def __init__(self, path: str, mean=0.0, std=1.0, bgr: bool = False, *, output: str | None = None,
                 size: tuple[int, int] = (112, 112), layout: str = "NCHW", crop: float = 1.0, source=None):
        import torch

        self.net = build(onnx_graph.load(path), output)
        self.mean = torch.as_tensor(np.asarray(mean, np.float32).reshape(1, -1, 1, 1))
        self.std = torch.as_tensor(np.asarray(std, np.float32).reshape(1, -1, 1, 1))
        self.bgr, self.size, self.layout, self.crop = bgr, tuple(size), layout, crop
        self.source = source  # the ONNX encoder: its centring vector, once the pipeline has set it
        self.check: dict | None = None  # how it compares with onnxruntime (verify)
        self.path, self.output = str(path), output

    def __getstate__(self) -> dict:
        """Pickled (to a Dask worker) without its torch graph, which the other side builds again from the same
        ONNX file (the source encoder checks it is the same file)."""
        state = dict(self.__dict__)
        net = state.pop("net")
        w = next(net.buffers(), None)
        state["_device"] = str(w.device) if w is not None else "cpu"
        return state

    def __setstate__(self, state: dict) -> None:
        device = state.pop("_device", "cpu")
        self.__dict__.update(state)
        self.net = build(onnx_graph.load(self.path), self.output).to(device)

    chunk = 8  # images per pass: measured on 2 cores, 28 ms per image forward + backward in chunks of 8,
    #            47 ms in one batch of 50 (the activations of a small chunk stay in cache)

    def prepare(self, x):
        """N x 3 x 112 x 112 float faces (0-255, RGB) -> the graph's input: the ONNX encoder's ``_prepare`` in
        torch (crop, the shared resize of :mod:`facepii.preprocess`, channel order, mean/std, layout)."""
        if self.crop < 1.0:
            m = crop_margin(x.shape[-1], self.crop)
            x = x[..., m:x.shape[-2] - m, m:x.shape[-1] - m]
        if self.bgr:
            x = x.flip(1)
        x = resize_torch(x, self.size)
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)
        return x.permute(0, 2, 3, 1) if self.layout == "NHWC" else x

    def __call__(self, x):
        import torch

        x = self.prepare(x)
        y = self.net(x) if len(x) <= self.chunk else torch.cat([self.net(c) for c in x.split(self.chunk)])
        y = y.reshape(len(y), -1)
        c = getattr(self.source, "center_mean", None)
        return y if c is None else y - torch.from_numpy(np.asarray(c, np.float32)).to(y.device)

    def embed(self, faces: np.ndarray, batch: int = 64) -> np.ndarray:
        """Embeddings of aligned uint8 faces (N x H x W x 3), no gradients: what the ONNX encoder's
        ``embed`` returns (checked by :func:`verify`), faster on 2 cores (10-12 against onnxruntime's
        15-16 ms per SFace face), for the white-box attacker's own queries."""
        import torch

        weights = next(self.net.buffers(), None)
        dev = weights.device if weights is not None else torch.device("cpu")
        out = []
        with torch.no_grad():
            for i in range(0, len(faces), batch):
                x = torch.from_numpy(np.ascontiguousarray(faces[i:i + batch].transpose(0, 3, 1, 2))).float()
                out.append(self(x.to(dev)).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


@dataclass
class Agreement:
    """How a torch copy compares with onnxruntime on some faces: end to end (what the attack differentiates
    against what the system computes), and in two parts, each with its own tolerance: the graph on identical
    inputs (the prepared float tensor fed to both) and the pre-processing (crop, resize, scaling) on its own."""

    faces: int
    max_abs_diff: float       # end to end
    max_rel_diff: float       # the largest difference relative to the largest embedding value
    min_cosine: float
    graph: dict | None = None          # the same three figures, both fed the numpy path's prepared input
    preprocessing: dict | None = None  # largest difference of the prepared inputs, absolute and relative

    @property
    def ok(self) -> bool:
        if self.graph is None or self.preprocessing is None:
            return self.max_rel_diff <= TOLERANCE["max_rel_diff"] and self.min_cosine >= TOLERANCE["min_cosine"]
        return (self.graph["max_rel_diff"] <= TOLERANCE["max_rel_diff"]
                and self.graph["min_cosine"] >= TOLERANCE["min_cosine"]
                and self.preprocessing["max_rel_diff"] <= PREP_TOLERANCE["max_rel_diff"])

    def why(self) -> str:
        if self.preprocessing is not None and self.preprocessing["max_rel_diff"] > PREP_TOLERANCE["max_rel_diff"]:
            return (f"its pre-processing differs from the ONNX encoder's (largest difference "
                    f"{self.preprocessing['max_abs_diff']:.3g}, {self.preprocessing['max_rel_diff']:.2g} of the "
                    "largest input value)")
        g = self.graph or {"max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                           "min_cosine": self.min_cosine}
        return (f"its graph disagrees on identical inputs (largest difference {g['max_abs_diff']:.3g}, "
                f"{g['max_rel_diff']:.2g} of the largest value; lowest cosine {g['min_cosine']:.6f})")

    def to_dict(self) -> dict:
        out = {"faces": self.faces, "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
               "min_cosine": self.min_cosine, "tolerance": dict(TOLERANCE)}
        if self.graph is not None:
            out["graph"] = dict(self.graph)
        if self.preprocessing is not None:
            out["preprocessing"] = {**self.preprocessing, "tolerance": dict(PREP_TOLERANCE)}
        return out


def _compare(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 1.0
    cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"max_abs_diff": diff, "max_rel_diff": diff / max(scale, 1e-30),
            "min_cosine": float(cos.min()) if cos.size else 1.0}


def verify(enc, torch_enc: TorchEncoder, faces: np.ndarray) -> Agreement:
    """The torch copy against onnxruntime on ``faces`` (uint8 NHWC): end to end, and (for an ONNX encoder) the
    graph on the numpy path's own prepared input and the two pre-processings on their own."""
    import torch

    end = _compare(torch_enc.embed(faces), enc.embed(faces))
    graph = prep = None
    declared = differentiable(enc)
    if declared is not None and len(faces):
        X = declared.prepare(faces)
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2))).float()
            P = torch_enc.prepare(x).numpy()
            G = torch.cat([torch_enc.net(c) for c in torch.from_numpy(X).split(torch_enc.chunk)]).numpy()
        d = float(np.abs(P.astype(np.float64) - X).max())
        prep = {"max_abs_diff": d, "max_rel_diff": d / max(float(np.abs(X).max()), 1e-30)}
        graph = _compare(G.reshape(len(G), -1), declared.run_graph(X))
    return Agreement(int(len(faces)), end["max_abs_diff"], end["max_rel_diff"], end["min_cosine"], graph, prep)


def torch_encoder_for(enc, faces: np.ndarray | None = None) -> TorchEncoder:
    """The differentiable twin of an ONNX-based facepii encoder (SFace, onnx:PATH); with ``faces``, checked
    against onnxruntime on them (``.check``) and refused when it disagrees beyond :data:`TOLERANCE`."""
    d = differentiable(enc)
    if d is None:
        raise EncoderError(f"encoder {enc.name} has no ONNX graph to differentiate; white-box attacks "
                           "need sface or onnx:PATH (use --knowledge black).")
    t = TorchEncoder(d.path, d.mean, d.std, d.bgr, output=d.output, size=d.size, layout=d.layout, crop=d.crop,
                     source=enc)
    if faces is not None and len(faces):
        check = verify(enc, t, faces)
        if not check.ok:
            raise EncoderError(
                f"{enc.name}: facepii's torch copy of the model disagrees with onnxruntime on {check.faces} faces: "
                f"{check.why()}; white-box attacks would differentiate another function; attack it with "
                "--knowledge black.")
        t.check = check.to_dict()
    return t


def check_against_onnxruntime(enc, faces: np.ndarray) -> float:
    """Largest absolute difference between the torch copy and onnxruntime on ``faces`` (uint8 NHWC)."""
    return verify(enc, torch_encoder_for(enc), faces).max_abs_diff


class Ensemble:
    """Several differentiable face models as one: the concatenation of their unit embeddings, scaled so
    that its cosine with another such vector is the mean of the models' cosines (a black-box attacker's
    surrogates, optimised through together)."""

    def __init__(self, members: list[TorchEncoder], names: list[str]):
        self.members, self.names = members, names

    def __call__(self, x):
        import torch

        parts = [m(x) for m in self.members]
        return torch.cat([p / p.norm(dim=1, keepdim=True).clamp_min(1e-12) for p in parts], 1) / len(parts) ** 0.5

    def embed(self, faces: np.ndarray) -> np.ndarray:
        parts = [m.embed(faces) for m in self.members]
        return (np.concatenate([p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in parts], 1)
                / len(parts) ** 0.5).astype(np.float32)

    def to(self, device: str) -> Ensemble:
        for m in self.members:
            m.net.to(device)
        return self

    @property
    def checks(self) -> dict:
        return {n: m.check for n, m in zip(self.names, self.members)}


class QueryCounter:
    """The target model as a black-box attacker reaches it: every face it submits is counted."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.queries = 0

    def __getattr__(self, name):
        if name.startswith("__") or "encoder" not in self.__dict__:  # pickling looks up hooks before state
            raise AttributeError(name)
        return getattr(self.encoder, name)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        self.queries += len(faces)
        return self.encoder.embed(faces)
