"""A differentiable PyTorch copy of a (small) ONNX face model.

White-box attacks need gradients through the target encoder. ``onnx2torch``
would do it but requires torchvision (and so a multi-GB CUDA torch), so this
is a small converter of facepii's own for the operators face models like SFace
use: Conv, BatchNormalization, PRelu, Relu, Add, Sub, Mul, Gemm, MatMul,
Flatten, Reshape, Dropout (identity at inference), Identity, Constant,
GlobalAveragePool. Inference BatchNormalization is folded into the Conv before
it, and batches run in chunks of 8 images (both: the same function, about 2.5x
less time for the white-box attacks' forward + backward passes on 2 cores).
The graph goes through :func:`facepii.onnx_graph.prepare` first, so the int8
block-quantised weights arrive dequantised once, exactly as onnxruntime
computes them. :func:`check_against_onnxruntime` measures the
largest difference to onnxruntime on given inputs.
"""

from __future__ import annotations

import numpy as np

from facepii import onnx_graph
from facepii.encoder_base import crop_margin
from facepii.errors import EncoderError

SUPPORTED = {"Conv", "BatchNormalization", "PRelu", "Relu", "Add", "Sub", "Mul", "Gemm", "MatMul",
             "Flatten", "Reshape", "Dropout", "Identity", "Constant", "GlobalAveragePool"}


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def build(model, output: str | None = None):
    """An ``nn.Module`` computing the prepared ONNX ``model``'s output ``output`` (default: its first)
    from its image input."""
    import torch
    from onnx import numpy_helper
    from torch import nn
    from torch.nn import functional as F


    m = onnx_graph.prepare(model)
    g = m.graph
    unsupported = sorted({n.op_type for n in g.node} - SUPPORTED)
    if unsupported:
        raise EncoderError(f"cannot convert ops {unsupported} to torch (supported: {sorted(SUPPORTED)}).")
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes = _fold_batchnorm([(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in g.node], consts,
                            {o.name for o in g.output})

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self._names: dict[str, str] = {}
            for k, v in consts.items():
                safe = f"c{len(self._names)}"
                self._names[k] = safe
                self.register_buffer(safe, torch.from_numpy(np.array(v)))
            self.nodes = nodes
            self.input_name = g.input[0].name
            self.output_name = output or g.output[0].name

        def _get(self, env, name):
            if name in env:
                return env[name]
            return getattr(self, self._names[name])

        def forward(self, x):
            env = {self.input_name: x}
            for op, ins, outs, a in self.nodes:
                v = [self._get(env, n) if n else None for n in ins]
                if op == "Conv":
                    pads = a.get("pads", [0, 0, 0, 0])
                    if pads[0] != pads[2] or pads[1] != pads[3]:
                        raise EncoderError("asymmetric Conv padding is not supported")
                    y = F.conv2d(v[0], v[1], v[2] if len(v) > 2 else None, stride=a.get("strides", [1, 1]),
                                 padding=pads[:2], dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
                elif op == "BatchNormalization":
                    y = F.batch_norm(v[0], v[3], v[4], v[1], v[2], False, 0.0, a.get("epsilon", 1e-5))
                elif op == "PRelu":
                    slope = v[1]
                    if v[0].dim() == 4 and slope.numel() == v[0].shape[1]:
                        y = F.prelu(v[0], slope.reshape(-1))
                    else:
                        y = torch.where(v[0] >= 0, v[0], v[0] * slope)
                elif op == "Relu":
                    y = torch.relu(v[0])
                elif op == "Add":
                    y = v[0] + v[1]
                elif op == "Sub":
                    y = v[0] - v[1]
                elif op == "Mul":
                    y = v[0] * v[1]
                elif op == "Gemm":
                    A = v[0].transpose(0, 1) if a.get("transA", 0) else v[0]
                    B = v[1].transpose(0, 1) if a.get("transB", 0) else v[1]
                    y = a.get("alpha", 1.0) * (A @ B)
                    if len(v) > 2 and v[2] is not None:
                        y = y + a.get("beta", 1.0) * v[2]
                elif op == "MatMul":
                    y = v[0] @ v[1]
                elif op == "Flatten":
                    axis = a.get("axis", 1)
                    y = v[0].reshape(int(np.prod(v[0].shape[:axis])) if axis else 1, -1)
                elif op == "Reshape":
                    shape = [int(s) for s in v[1].tolist()]
                    shape = [v[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
                    y = v[0].reshape(shape)
                elif op in ("Dropout", "Identity"):
                    y = v[0]
                elif op == "Constant":
                    y = torch.from_numpy(np.array(numpy_helper.to_array(a["value"])))
                elif op == "GlobalAveragePool":
                    y = v[0].mean(dim=(2, 3), keepdim=True)
                else:  # pragma: no cover - filtered above
                    raise EncoderError(f"unsupported op {op}")
                env[outs[0]] = y
            return env[self.output_name]

    net = Graph().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _fold_batchnorm(nodes: list, consts: dict, outputs: set) -> list:
    """Fold each inference BatchNormalization into the Conv that feeds it (when the Conv's output feeds
    nothing else): w' = w * g / sqrt(v + eps) per output channel, b' = (b - m) * g / sqrt(v + eps) + beta.
    The same function in one kernel instead of two (the backward pass of the white-box attacks, which
    dominates their time, then skips a full-size intermediate per layer). New weights go into ``consts``."""
    readers: dict[str, int] = {}
    for _, ins, _, _ in nodes:
        for n in ins:
            readers[n] = readers.get(n, 0) + 1
    producer = {outs[0]: i for i, (_, _, outs, _) in enumerate(nodes)}
    out = list(nodes)
    drop = set()
    for j, (op, ins, outs, a) in enumerate(nodes):
        if op != "BatchNormalization" or len(outs) != 1 or not all(n in consts for n in ins[1:5]):
            continue
        i = producer.get(ins[0])
        if i is None or nodes[i][0] != "Conv" or readers.get(ins[0], 0) != 1 or ins[0] in outputs:
            continue
        _, cins, couts, ca = nodes[i]
        if not all(n in consts for n in cins[1:]):
            continue
        gamma, beta, mean, var = (np.asarray(consts[n], np.float64) for n in ins[1:5])
        w = np.asarray(consts[cins[1]], np.float64)
        b = np.asarray(consts[cins[2]], np.float64) if len(cins) > 2 and cins[2] else np.zeros(w.shape[0])
        f = gamma / np.sqrt(var + a.get("epsilon", 1e-5))
        wn, bn = f"{cins[1]}::bnfold{j}", f"{couts[0]}::bnfold_bias{j}"
        consts[wn] = (w * f.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
        consts[bn] = ((b - mean) * f + beta).astype(np.float32)
        out[i] = ("Conv", [cins[0], wn, bn], [outs[0]], ca)
        drop.add(j)
    return [n for k, n in enumerate(out) if k not in drop]


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

    chunk = 8  # images per pass: measured on 2 cores, 28 ms per image forward + backward in chunks of 8,
    #            47 ms in one batch of 50 (the activations of a small chunk stay in cache)

    def __call__(self, x):
        import torch
        from torch.nn import functional as F

        if self.crop < 1.0:
            m = crop_margin(x.shape[-1], self.crop)
            x = x[..., m:x.shape[-2] - m, m:x.shape[-1] - m]
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        if self.bgr:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        if self.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        y = self.net(x) if len(x) <= self.chunk else torch.cat([self.net(c) for c in x.split(self.chunk)])
        y = y.reshape(len(y), -1)
        c = getattr(self.source, "center_mean", None)
        return y if c is None else y - torch.from_numpy(np.asarray(c, np.float32)).to(y.device)

    def embed(self, faces: np.ndarray, batch: int = 64) -> np.ndarray:
        """Embeddings of aligned uint8 faces (N x H x W x 3), no gradients: what the ONNX encoder's
        ``embed`` returns (within 1e-4; tested), faster on 2 cores (10-12 against onnxruntime's 15-16 ms
        per SFace face), for the white-box attacker's own queries."""
        import torch

        weights = next(self.net.buffers(), None)
        dev = weights.device if weights is not None else torch.device("cpu")
        out = []
        with torch.no_grad():
            for i in range(0, len(faces), batch):
                x = torch.from_numpy(np.ascontiguousarray(faces[i:i + batch].transpose(0, 3, 1, 2))).float()
                out.append(self(x.to(dev)).cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def torch_encoder_for(enc) -> TorchEncoder:
    """The differentiable twin of an ONNX-based facepii encoder (SFace, onnx:PATH)."""
    path = getattr(enc, "path", None)
    if path is None:
        raise EncoderError(f"encoder {enc.name} has no ONNX graph to differentiate; white-box attacks "
                           "need sface or onnx:PATH (use --knowledge black).")
    return TorchEncoder(path, enc.mean, enc.std, enc.bgr, output=getattr(enc, "_output", None),
                        size=getattr(enc, "input_size", (112, 112)), layout=getattr(enc, "layout", "NCHW"),
                        crop=getattr(enc, "crop", 1.0), source=enc)


def check_against_onnxruntime(enc, faces: np.ndarray) -> float:
    """Largest absolute difference between the torch copy and onnxruntime on ``faces`` (uint8 NHWC)."""
    return float(np.abs(torch_encoder_for(enc).embed(faces) - enc.embed(faces)).max())
