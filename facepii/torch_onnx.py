"""A differentiable PyTorch copy of an ONNX face model, for white-box attacks on the model a vendor brings.

``onnx2torch`` would do it but requires torchvision (and so a multi-GB CUDA torch), so this is a
converter of facepii's own, for the operators face models exported from PyTorch (``torch.onnx.export``,
TorchScript and dynamo exporters), TensorFlow/Keras (NHWC graphs with a Transpose around each
convolution, PReLU written with Abs) and MXNet/insightface use: :data:`SUPPORTED`.

- The graph goes through :func:`facepii.onnx_graph.prepare` first: weights that are computed (the int8
  block-quantised weights' DequantizeLinear chains, any node whose inputs are all constant) arrive
  folded once, exactly as onnxruntime computes them.
- Shape arithmetic (``Shape -> Gather -> Unsqueeze -> Concat -> Reshape``, the way exporters write
  ``x.view(x.size(0), -1)``) runs on small integer tensors beside the image tensors, so every batch
  size works; it has no gradient and costs nothing next to a convolution.
- Identity nodes are dropped, back-to-back Transposes composed (or cancelled), and each inference
  BatchNormalization folded into the Conv before it; batches run in chunks of 8 images (the same
  function, about 2.5x less time for the attacks' forward + backward passes on 2 cores).
- :func:`verify` compares the copy with onnxruntime on given faces; :func:`torch_encoder_for` does so
  whenever it builds one, and refuses a copy that disagrees beyond :data:`TOLERANCE`.

An operator outside :data:`SUPPORTED` is refused with one line that names it (``--knowledge black``
attacks any model through queries alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facepii import onnx_graph
from facepii.encoder_base import crop_margin
from facepii.errors import EncoderError
from facepii.preprocess import resize_torch

ELEMENTWISE = {"Neg", "Abs", "Relu", "Sigmoid", "Tanh", "Sqrt", "Reciprocal", "Exp", "Log", "Erf", "Floor", "Ceil",
               "Softplus", "Sign", "Not"}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And",
          "Or"}
SUPPORTED = ELEMENTWISE | BINARY | {
    "Identity", "Dropout", "Constant", "Transpose", "Max", "Min", "Sum", "Mean", "Clip", "LeakyRelu", "PRelu",
    "HardSigmoid", "HardSwish", "Elu", "Selu", "Softmax", "LogSoftmax", "ReduceSum", "ReduceMean", "ReduceMax",
    "ReduceMin", "ReduceL2", "ReduceSumSquare", "ReduceProd", "Squeeze", "Unsqueeze", "Flatten", "Reshape",
    "Concat", "Split", "Slice", "Gather", "Pad", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "Conv", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "LpNormalization", "Gemm",
    "MatMul", "Shape", "Size", "Cast", "ConstantOfShape", "Expand", "Tile", "Range", "Where",
}

#: a copy is refused when it disagrees with onnxruntime by more: the largest absolute difference
#: relative to the largest embedding value, and the lowest cosine between the two embeddings of a face
TOLERANCE = {"max_rel_diff": 1e-3, "min_cosine": 0.9999}
#: the two pre-processings (numpy for onnxruntime, torch for the copy) apply one linear map, in float64 and
#: float32: they agree to rounding, a few 1e-7 of the largest input value
PREP_TOLERANCE = {"max_rel_diff": 1e-5}


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _ints(t) -> list[int]:
    return [int(x) for x in (t.tolist() if hasattr(t, "tolist") else t)]


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)


# ---------------------------------------------------------------- graph surgery before torch


def simplify(nodes: list, outputs: set[str]) -> list:
    """Drop Identity nodes and compose back-to-back Transposes (identity compositions vanish).
    Names that are graph outputs are kept."""
    rename: dict[str, str] = {}

    def r(n):
        while n in rename:
            n = rename[n]
        return n

    out = []
    for op, ins, outs, a in nodes:
        ins = [r(x) if x else x for x in ins]
        if op in ("Identity", "Dropout") and outs[0] not in outputs and (len(outs) == 1 or not any(outs[1:])):
            rename[outs[0]] = ins[0]
            continue
        out.append([op, ins, outs, a])
    readers: dict[str, int] = {}
    for _, ins, _, _ in out:
        for x in ins:
            readers[x] = readers.get(x, 0) + 1
    producer = {o[2][0]: o for o in out}
    keep = []
    for node in out:
        op, ins, outs, a = node
        if op == "Transpose":
            prev = producer.get(ins[0])
            if prev is not None and prev[0] == "Transpose" and readers.get(ins[0], 0) == 1 and ins[0] not in outputs \
                    and "perm" in prev[3] and "perm" in a:
                p1, p2 = list(prev[3]["perm"]), list(a["perm"])
                node[1] = [prev[1][0]]
                node[3] = {"perm": [p1[i] for i in p2]}
                prev[0] = "_removed"
        keep.append(node)
    final = []
    for op, ins, outs, a in keep:
        if op == "_removed":
            continue
        if op == "Transpose" and list(a.get("perm", [])) == list(range(len(a.get("perm", [])))) and a.get("perm") \
                and outs[0] not in outputs:
            rename[outs[0]] = ins[0]
            continue
        final.append((op, [r(x) if x else x for x in ins], outs, a))
    return final


def _fold_batchnorm(nodes: list, consts: dict, outputs: set) -> list:
    """Fold each inference BatchNormalization into the Conv that feeds it (when the Conv's output feeds
    nothing else): w' = w * g / sqrt(v + eps) per output channel, b' = (b - m) * g / sqrt(v + eps) + beta.
    The same function in one kernel instead of two. New weights go into ``consts``."""
    readers: dict[str, int] = {}
    for _, ins, _, _ in nodes:
        for n in ins:
            readers[n] = readers.get(n, 0) + 1
    producer = {outs[0]: i for i, (_, _, outs, _) in enumerate(nodes)}
    out = list(nodes)
    drop = set()
    for j, (op, ins, outs, a) in enumerate(nodes):
        if op != "BatchNormalization" or len([o for o in outs if o]) != 1 or not all(n in consts for n in ins[1:5]):
            continue
        i = producer.get(ins[0])
        if i is None or nodes[i][0] != "Conv" or readers.get(ins[0], 0) != 1 or ins[0] in outputs:
            continue
        _, cins, couts, ca = nodes[i]
        if not all(n in consts for n in cins[1:] if n):
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


# ---------------------------------------------------------------- the operators


def _same_pads(spatial, kernel, strides, dilations, mode: str) -> list[int]:
    """auto_pad SAME_UPPER / SAME_LOWER: pads (begins..., ends...) that keep ceil(in / stride)."""
    begins, ends = [], []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def _torch_pad(pads: list[int]) -> list[int]:
    """ONNX pads (x1_begin, x2_begin, ..., x1_end, x2_end, ...) -> F.pad's (last dim first) pairs."""
    k = len(pads) // 2
    out = []
    for i in reversed(range(k)):
        out += [pads[i], pads[i + k]]
    return out


def _window_pads(x, a, kernel) -> list[int]:
    nd = len(kernel)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(list(x.shape[2:]), kernel, list(a.get("strides", [1] * nd)),
                          list(a.get("dilations", [1] * nd)), auto)
    if auto == "VALID":
        return [0] * (2 * nd)
    return list(a.get("pads", [0] * (2 * nd)))


def _window(x, a, kernel):
    """(pads for F.pad or None, symmetric padding for the op) of a conv / pool node on input x."""
    nd = len(kernel)
    strides = list(a.get("strides", [1] * nd))
    dil = list(a.get("dilations", [1] * nd))
    pads = _window_pads(x, a, kernel)
    if pads[:nd] == pads[nd:]:
        return None, pads[:nd], strides, dil
    return _torch_pad(pads), [0] * nd, strides, dil


def _conv(v, a, F):
    import torch

    x, w = v[0], v[1]
    b = v[2] if len(v) > 2 else None
    nd = w.dim() - 2
    pre, pad, strides, dil = _window(x, a, list(w.shape[2:]))
    if pre is not None:
        x = F.pad(x, pre)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}.get(nd)
    if fn is None:
        raise EncoderError(f"Conv over {nd} spatial dimensions is not supported")
    groups = int(a.get("group", 1))
    one_by_one = nd == 2 and tuple(w.shape[2:]) == (1, 1) and set(strides) == {1} and set(pad) == {0}
    if (one_by_one and x.dtype == torch.float32 and x.device.type == "cpu" and not w.requires_grad
            and torch.backends.mkldnn.is_available()):
        return _Conv1x1.apply(x, w, b, groups)
    return fn(x, w, b, stride=strides, padding=pad, dilation=dil, groups=groups)


def _mkldnn_1x1(x, w, b, groups):
    import torch

    return torch.mkldnn_convolution(x.contiguous(), w.contiguous(), b, [0, 0], [1, 1], [1, 1], groups)


def _conv1x1_class():
    import torch

    class Conv1x1(torch.autograd.Function):
        """A 1 x 1 convolution, forward and input gradient both through oneDNN. Torch runs a single-threaded
        1 x 1 convolution of fewer than 16 images, and its gradient, on its im2col + BLAS path, which
        MKL's CPU-independent branch (facepii.kernels) makes twice as slow; the input gradient of a 1 x 1
        convolution is the 1 x 1 convolution of the output gradient with the transposed weights."""

        @staticmethod
        def forward(ctx, x, w, b, groups):
            ctx.save_for_backward(w)
            ctx.groups = groups
            return _mkldnn_1x1(x, w, b, groups)

        @staticmethod
        def backward(ctx, grad):
            (w,) = ctx.saved_tensors
            g = ctx.groups
            o, i_g = w.shape[0], w.shape[1]
            wt = w.reshape(g, o // g, i_g).transpose(1, 2).reshape(g * i_g, o // g, 1, 1)
            return _mkldnn_1x1(grad, wt, None, g), None, None, None

    return Conv1x1


class _LazyConv1x1:
    fn = None

    @classmethod
    def apply(cls, *args):
        if cls.fn is None:
            cls.fn = _conv1x1_class()
        return cls.fn.apply(*args)


_Conv1x1 = _LazyConv1x1


def _pool_size(n, k, s, d, pb, pe, ceil) -> int:
    """ONNX's (and onnxruntime's) output length of a pooling window: with ceil_mode, a last window that
    would start in the end padding is dropped."""
    span = (k - 1) * d + 1
    q = (n + pb + pe - span) / s
    out = (math.ceil(q) if ceil else math.floor(q)) + 1
    if ceil and (out - 1) * s >= n + pb:
        out -= 1
    return out


def _pool(v, a, F, kind: str):
    import torch

    x = v[0]
    kernel = list(a["kernel_shape"])
    nd = len(kernel)
    pre, pad, strides, dil = _window(x, a, kernel)
    ceil = bool(a.get("ceil_mode", 0))
    if pre is not None:  # asymmetric pads: pad first, then keep ONNX's output size
        onnx_pads = _window_pads(x, a, kernel)
        sizes = [_pool_size(n, k, s, d, onnx_pads[i], onnx_pads[i + nd], ceil)
                 for i, (n, k, s, d) in enumerate(zip(x.shape[2:], kernel, strides, dil))]
    if kind == "max":
        fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
        if pre is None:
            return fn(x, kernel, strides, pad, dil, ceil_mode=ceil)
        y = fn(F.pad(x, pre, value=-math.inf), kernel, strides, 0, dil, ceil_mode=ceil)
    else:
        include = bool(a.get("count_include_pad", 0))
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
        if pre is None:
            return fn(x, kernel, strides, pad, ceil_mode=ceil, count_include_pad=include)
        y = fn(F.pad(x, pre), kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
        if not include:
            ones = F.pad(torch.ones_like(x[:1, :1]), pre)
            y = y / fn(ones, kernel, strides, 0, ceil_mode=ceil, count_include_pad=True)
    return y[(slice(None), slice(None), *(slice(0, n) for n in sizes))]


def _axes(v, a, opset: int, version_with_input: int):
    """Axes from an attribute (older opsets) or the second input."""
    if opset >= version_with_input and len(v) > 1 and v[1] is not None:
        return _ints(v[1])
    return list(a["axes"]) if "axes" in a else None


def _reduce(v, a, opset, kind):
    import torch

    from facepii import exact

    x = v[0]
    axes = _axes(v, a, opset, 13 if kind == "sum" else 18)
    keep = bool(a.get("keepdims", 1))
    if axes is None or axes == []:
        if a.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    axes = [ax % x.dim() for ax in axes]
    if kind == "sum":
        return torch.sum(x, dim=axes, keepdim=keep)
    if kind == "mean":
        return torch.mean(x, dim=axes, keepdim=keep)
    if kind == "sumsquare":
        return torch.sum(x * x, dim=axes, keepdim=keep)
    if kind == "l2":
        return exact.sqrt(torch.sum(x * x, dim=axes, keepdim=keep))
    if kind == "prod":
        out = x
        for ax in sorted(axes, reverse=True):
            out = torch.prod(out, dim=ax, keepdim=keep)
        return out
    fn = torch.amax if kind == "max" else torch.amin
    return fn(x, dim=axes, keepdim=keep)


def _reshape(x, shape, allowzero):
    shape = list(shape)
    if not allowzero:
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _slice(v, a, opset):
    import torch

    x = v[0]
    if opset < 10:
        starts, ends = list(a["starts"]), list(a["ends"])
        axes = list(a.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(v[1]), _ints(v[2])
        axes = _ints(v[3]) if len(v) > 3 and v[3] is not None else list(range(len(starts)))
        steps = _ints(v[4]) if len(v) > 4 and v[4] is not None else [1] * len(starts)
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax %= x.dim()
        n = x.shape[ax]
        if st > 0:
            s = min(max(s + n if s < 0 else s, 0), n)
            e = min(max(e + n if e < 0 else e, 0), n)
            x = x.narrow(ax, s, max(e - s, 0))[(slice(None),) * ax + (slice(None, None, st),)] if st > 1 \
                else x.narrow(ax, s, max(e - s, 0))
        else:  # a negative step: flip, then slice forward (ONNX clamps the start into [0, n-1], the end into [-1, n-1])
            s = min(max(s + n if s < 0 else s, 0), n - 1)
            e = min(max(e + n if e < 0 else e, -1), n - 1)
            x = torch.flip(x, [ax])
            fs, fe = n - 1 - s, n - 1 - e
            x = x.narrow(ax, fs, max(fe - fs, 0))[(slice(None),) * ax + (slice(None, None, -st),)]
    return x


def _gather(data, idx, axis):
    import torch

    axis %= data.dim()
    idx = idx.long()
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    out = data.index_select(axis, idx.reshape(-1))
    return out.reshape(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:]))


def _pad(v, a, opset, F):
    x = v[0]
    if opset < 11:
        pads, value, mode = list(a["pads"]), float(a.get("value", 0.0)), a.get("mode", "constant")
    else:
        pads = _ints(v[1])
        value = float(v[2].reshape(-1)[0]) if len(v) > 2 and v[2] is not None and v[2].numel() else 0.0
        mode = a.get("mode", "constant")
        if len(v) > 3 and v[3] is not None:  # axes (opset 18): pads for those axes only
            axes = [ax % x.dim() for ax in _ints(v[3])]
            full = [0] * (2 * x.dim())
            for i, ax in enumerate(axes):
                full[ax], full[ax + x.dim()] = pads[i], pads[i + len(axes)]
            pads = full
    tp = _torch_pad(pads)
    while len(tp) >= 2 and tp[-1] == 0 and tp[-2] == 0:  # F.pad takes the last dims first: drop leading zeros
        tp = tp[:-2]
    if not tp:
        return x
    if mode == "constant":
        return F.pad(x, tp, value=value)
    need = 2 * max(x.dim() - 2, 1)  # torch pads the spatial dims only outside constant mode, all of them
    if len(tp) > need:
        raise ValueError(f"Pad mode={mode} on a batch or channel axis (pads {pads}) has no torch equivalent")
    tp = tp + [0] * (need - len(tp))
    return F.pad(x, tp, mode={"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode])


def _cast(x, to: int):
    import torch
    from onnx import TensorProto

    kinds = {TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float32, TensorProto.FLOAT16: torch.float32,
             TensorProto.INT64: torch.int64, TensorProto.INT32: torch.int64, TensorProto.INT8: torch.int64,
             TensorProto.UINT8: torch.int64, TensorProto.INT16: torch.int64, TensorProto.BOOL: torch.bool}
    if to not in kinds:
        raise EncoderError(f"Cast to ONNX type {to} is not supported")
    return x.to(kinds[to])


def _softmax(x, axis, opset, log):
    import torch

    if opset < 13:  # flatten to 2-D at axis, softmax over the second part
        shape = x.shape
        axis %= x.dim()
        y = x.reshape(int(np.prod(shape[:axis])) if axis else 1, -1)
        y = torch.log_softmax(y, 1) if log else torch.softmax(y, 1)
        return y.reshape(shape)
    return torch.log_softmax(x, axis) if log else torch.softmax(x, axis)


def _constant(a):
    import torch
    from onnx import numpy_helper

    if "value" in a:
        arr = np.array(numpy_helper.to_array(a["value"]))
    elif "value_float" in a:
        arr = np.array(a["value_float"], np.float32)
    elif "value_floats" in a:
        arr = np.array(a["value_floats"], np.float32)
    elif "value_int" in a:
        arr = np.array(a["value_int"], np.int64)
    elif "value_ints" in a:
        arr = np.array(a["value_ints"], np.int64)
    else:
        raise EncoderError(f"Constant with attributes {sorted(a)} is not supported")
    return _tensor(arr, torch)


def _tensor(arr: np.ndarray, torch):
    """A torch copy of a constant: float32, bool or int64, its rank kept (0-d too)."""
    kind = np.float32 if arr.dtype.kind == "f" else (bool if arr.dtype.kind == "b" else np.int64)
    return torch.from_numpy(np.array(arr, dtype=kind, order="C", copy=True))


_PRELU = None


def prelu(x, slope):
    """``F.prelu(x, slope)`` (one slope per channel of dimension 1) with a cheaper backward pass.

    The forward pass is that very call. The backward pass gives the same input gradient, bit for bit,
    without the slope's gradient that torch's fused PReLU backward always reduces over the batch (the
    slopes here are constants): profiled on SFace (48 faces, 2 cores), PReLU's backward took 556 of
    1,832 ms of a forward + backward pass, this one 322 of 1,454 ms. Each branch's gradient is selected
    with ``threshold_backward`` (ReLU's vectorised kernel; ``where`` is not vectorised in this CPU build),
    one branch exactly zero wherever the other is kept, so the sum is exact. Without a graph to record,
    or with a slope that needs its own gradient, torch's path is taken."""
    global _PRELU
    import torch
    from torch.nn import functional as F

    if slope.requires_grad or not torch.is_grad_enabled() or not x.requires_grad:
        return F.prelu(x, slope)
    if _PRELU is None:
        keep = torch.ops.aten.threshold_backward  # keep(g, x, 0) = g where x > 0, else 0

        class PReLU(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, slope):
                ctx.save_for_backward(x, slope)
                return F.prelu(x, slope)

            @staticmethod
            def backward(ctx, g):  # F.prelu's input gradient: g where x > 0, else g * slope
                x, slope = ctx.saved_tensors
                gs = g * slope.view([1, -1] + [1] * (x.dim() - 2))
                gs.sub_(keep(gs, x, 0))
                return keep(g, x, 0).add_(gs), None

        _PRELU = PReLU
    return _PRELU.apply(x, slope)


def run_node(op: str, v: list, a: dict, opset: int):
    """One ONNX node on torch tensors (``v``: its inputs, None for a skipped optional one). Returns
    its output (a tuple for nodes with several)."""
    import torch
    from torch.nn import functional as F

    from facepii import exact

    unary = {"Neg": torch.neg, "Abs": torch.abs, "Relu": torch.relu, "Sigmoid": torch.sigmoid,
             "Tanh": torch.tanh, "Sqrt": exact.sqrt, "Reciprocal": torch.reciprocal, "Exp": torch.exp,
             "Log": torch.log, "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil,
             "Softplus": F.softplus, "Sign": torch.sign, "Not": torch.logical_not}
    if op in unary:
        return unary[op](v[0])
    binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow, "Equal": torch.eq,
              "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge, "LessOrEqual": torch.le,
              "And": torch.logical_and, "Or": torch.logical_or}
    if op in binary:
        return binary[op](v[0], v[1])
    if op == "Div":
        if not v[0].is_floating_point() and not v[1].is_floating_point():
            return torch.div(v[0], v[1], rounding_mode="trunc")
        return v[0] / v[1]
    if op in ("Identity", "Dropout"):
        return v[0]
    if op == "Constant":
        return _constant(a)
    if op == "Transpose":
        return v[0].permute(list(a["perm"]) if "perm" in a else list(reversed(range(v[0].dim()))))
    if op in ("Max", "Min", "Sum", "Mean"):
        out = v[0]
        for t in v[1:]:
            out = {"Max": torch.maximum, "Min": torch.minimum}.get(op, torch.add)(out, t)
        return out / len(v) if op == "Mean" else out
    if op == "Clip":
        lo, hi = (a.get("min"), a.get("max")) if opset < 11 else (
            v[1] if len(v) > 1 else None, v[2] if len(v) > 2 else None)
        out = v[0]
        if lo is not None:
            out = torch.maximum(out, torch.as_tensor(lo, dtype=out.dtype))
        if hi is not None:
            out = torch.minimum(out, torch.as_tensor(hi, dtype=out.dtype))
        return out
    if op == "LeakyRelu":
        return F.leaky_relu(v[0], float(a.get("alpha", 0.01)))
    if op == "PRelu":
        x, slope = v[0], v[1]
        if x.dim() >= 2 and slope.numel() == x.shape[1] and (slope.dim() == 1 or slope.shape[0] == x.shape[1]):
            return prelu(x, slope.reshape(-1))
        return torch.where(x >= 0, x, x * slope)
    if op == "HardSigmoid":
        return torch.clamp(float(a.get("alpha", 0.2)) * v[0] + float(a.get("beta", 0.5)), 0, 1)
    if op == "HardSwish":
        return v[0] * torch.clamp(v[0] / 6 + 0.5, 0, 1)
    if op == "Elu":
        return F.elu(v[0], float(a.get("alpha", 1.0)))
    if op == "Selu":
        al, g = float(a.get("alpha", 1.67326319217681884765625)), float(a.get("gamma", 1.05070102214813232421875))
        return g * torch.where(v[0] > 0, v[0], al * (torch.exp(v[0]) - 1))
    if op in ("Softmax", "LogSoftmax"):
        return _softmax(v[0], int(a.get("axis", 1 if opset < 13 else -1)), opset, op == "LogSoftmax")
    if op.startswith("Reduce"):
        kind = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min",
                "ReduceL2": "l2", "ReduceSumSquare": "sumsquare", "ReduceProd": "prod"}[op]
        return _reduce(v, a, opset, kind)
    if op == "Squeeze":
        axes = _axes(v, a, opset, 13)
        if axes is None:
            return torch.squeeze(v[0])
        out = v[0]
        for ax in sorted((ax % out.dim() for ax in axes), reverse=True):
            out = out.squeeze(ax)
        return out
    if op == "Unsqueeze":
        axes = _axes(v, a, opset, 13)
        out = v[0]
        rank = out.dim() + len(axes)
        for ax in sorted(ax % rank for ax in axes):
            out = out.unsqueeze(ax)
        return out
    if op == "Flatten":
        axis = int(a.get("axis", 1)) % max(v[0].dim(), 1) if a.get("axis", 1) < 0 else int(a.get("axis", 1))
        return v[0].reshape(int(np.prod(v[0].shape[:axis])) if axis else 1, -1)
    if op == "Reshape":
        return _reshape(v[0], _ints(v[1]), int(a.get("allowzero", 0)))
    if op == "Concat":
        return torch.cat(v, dim=int(a["axis"]))
    if op == "Split":
        axis = int(a.get("axis", 0))
        if opset >= 13 and len(v) > 1 and v[1] is not None:
            sizes = _ints(v[1])
        elif "split" in a:
            sizes = list(a["split"])
        else:
            n = int(a.get("num_outputs", 0)) or a["_n_outputs"]
            size = math.ceil(v[0].shape[axis] / n)
            sizes = [size] * (n - 1) + [v[0].shape[axis] - size * (n - 1)]
        return tuple(torch.split(v[0], sizes, dim=axis))
    if op == "Slice":
        return _slice(v, a, opset)
    if op == "Gather":
        return _gather(v[0], v[1], int(a.get("axis", 0)))
    if op == "Pad":
        return _pad(v, a, opset, F)
    if op == "Conv":
        return _conv(v, a, F)
    if op == "MaxPool":
        return _pool(v, a, F, "max")
    if op == "AveragePool":
        return _pool(v, a, F, "avg")
    if op == "GlobalAveragePool":
        return v[0].mean(dim=tuple(range(2, v[0].dim())), keepdim=True)
    if op == "GlobalMaxPool":
        return torch.amax(v[0], dim=tuple(range(2, v[0].dim())), keepdim=True)
    if op == "BatchNormalization":
        return F.batch_norm(v[0], v[3], v[4], v[1], v[2], False, 0.0, float(a.get("epsilon", 1e-5)))
    if op == "InstanceNormalization":
        return F.instance_norm(v[0], weight=v[1], bias=v[2], eps=float(a.get("epsilon", 1e-5)))
    if op == "LayerNormalization":
        axis = int(a.get("axis", -1)) % v[0].dim()
        shape = tuple(v[0].shape[axis:])
        return F.layer_norm(v[0], shape, v[1].expand(shape) if v[1] is not None else None,
                            v[2].expand(shape) if len(v) > 2 and v[2] is not None else None,
                            float(a.get("epsilon", 1e-5)))
    if op == "LpNormalization":
        return F.normalize(v[0], p=float(a.get("p", 2)), dim=int(a.get("axis", -1)), eps=0.0)
    if op == "Gemm":
        A = v[0].transpose(0, 1) if a.get("transA", 0) else v[0]
        B = v[1].transpose(0, 1) if a.get("transB", 0) else v[1]
        y = float(a.get("alpha", 1.0)) * (A @ B)
        if len(v) > 2 and v[2] is not None:
            y = y + float(a.get("beta", 1.0)) * v[2]
        return y
    if op == "MatMul":
        return torch.matmul(v[0], v[1])
    if op == "Shape":
        shape = list(v[0].shape)
        start, end = int(a.get("start", 0)), a.get("end")
        return torch.tensor(shape[start:None if end is None else int(end)], dtype=torch.int64)
    if op == "Size":
        return torch.tensor(v[0].numel(), dtype=torch.int64)
    if op == "Cast":
        return _cast(v[0], int(a["to"]))
    if op == "ConstantOfShape":
        fill = _constant({"value": a["value"]}) if "value" in a else torch.zeros(1)
        return torch.full(_ints(v[0]), fill.reshape(-1)[0].item(), dtype=fill.dtype)
    if op == "Expand":
        shape = _ints(v[1])
        return v[0] * torch.ones(shape, dtype=v[0].dtype) if len(shape) > v[0].dim() else v[0].expand(
            [s if s != 1 else -1 for s in np.broadcast_shapes(tuple(v[0].shape), tuple(shape))])
    if op == "Tile":
        return v[0].repeat(_ints(v[1]))
    if op == "Range":
        return torch.arange(v[0].item(), v[1].item(), v[2].item(), dtype=v[0].dtype)
    if op == "Where":
        return torch.where(v[0].bool(), v[1], v[2])
    raise EncoderError(f"unsupported op {op}")  # pragma: no cover - filtered at build time


# ---------------------------------------------------------------- layouts: Transposes without moving data


POINTWISE = ELEMENTWISE | {"Identity", "Dropout", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Selu"}
BROADCAST = BINARY | {"Max", "Min", "Sum", "Mean", "PRelu", "Where"}


def _onnx_layout(h):
    """The ONNX value of a held (tensor, perm)."""
    t, perm = h
    if perm is None:
        return t
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return t.permute(inv)


def _aligned(h, rank: int, perm):
    """A held input of a broadcasting op, in the layout ``perm`` of a rank-``rank`` output."""
    t, p = h
    if p is not None and len(p) == rank and tuple(p) == tuple(perm):
        return t
    t = _onnx_layout(h)
    if t.dim() < rank:
        t = t.reshape((1,) * (rank - t.dim()) + tuple(t.shape))
    return t.permute(list(perm))


def _run_held(op: str, held: list, a: dict, opset: int):
    """One node on held inputs; returns (output, its perm). Transposes of a graph converted from NHWC
    (TensorFlow, Keras) cancel this way, so its convolutions run on NCHW tensors without copies."""
    if op == "Transpose":
        t, p = held[0]
        q = list(a["perm"]) if "perm" in a else list(reversed(range(t.dim())))
        p = list(range(t.dim())) if p is None else list(p)
        new = tuple(q.index(i) for i in p)  # the output's perm: out.permute(new) is what is held
        return t, (None if new == tuple(range(len(new))) else new)
    if op in POINTWISE and held and held[0] is not None and held[0][1] is not None:
        t, p = held[0]
        rest = [None if h is None else _onnx_layout(h) for h in held[1:]]
        return run_node(op, [t, *rest], a, opset), p
    if op in BROADCAST:
        perms = [h[1] for h in held if h is not None and h[1] is not None]
        if perms and all(tuple(q) == tuple(perms[0]) for q in perms):
            rank = len(perms[0])
            if all(h is None or h[0].dim() <= rank for h in held):
                v = [None if h is None else _aligned(h, rank, perms[0]) for h in held]
                if op == "PRelu":  # the slope broadcast in the held layout
                    import torch

                    return torch.where(v[0] >= 0, v[0], v[0] * v[1]), tuple(perms[0])
                return run_node(op, v, a, opset), tuple(perms[0])
    return run_node(op, [None if h is None else _onnx_layout(h) for h in held], a, opset), None


# ---------------------------------------------------------------- the module


def build(model, output: str | None = None):
    """An ``nn.Module`` computing the ONNX ``model``'s output ``output`` (default: its first) from its
    image input."""
    import torch
    from onnx import numpy_helper
    from torch import nn

    m = onnx_graph.prepare(model)
    g = m.graph
    opset = _opset(m)
    unsupported = sorted({n.op_type for n in g.node if n.domain in ("", "ai.onnx")} - SUPPORTED
                         | {f"{n.domain}.{n.op_type}" for n in g.node if n.domain not in ("", "ai.onnx")})
    if unsupported:
        raise EncoderError(f"cannot convert ops {unsupported} to torch for white-box attacks; "
                           f"--knowledge black attacks this model through queries.")
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    outputs = {o.name for o in g.output}
    nodes = []
    for n in g.node:
        a = _attrs(n)
        if n.op_type == "Split":
            a["_n_outputs"] = len(n.output)
        nodes.append((n.op_type, list(n.input), list(n.output), a))
    nodes = _fold_batchnorm(simplify(nodes, outputs), consts, outputs)

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self._names: dict[str, str] = {}
            used = {x for _, ins, _, _ in nodes for x in ins} | outputs
            for k, v in consts.items():
                if k not in used:
                    continue
                safe = f"c{len(self._names)}"
                self._names[k] = safe
                self.register_buffer(safe, _tensor(np.asarray(v), torch))
            self.nodes = nodes
            self.opset = opset
            self.input_name = g.input[0].name
            self.output_name = output or g.output[0].name

        def forward(self, x):
            # every value is held as (tensor, perm): the ONNX value is tensor.permute(inverse(perm)); a
            # Transpose only changes perm, element-wise ops keep it, other ops get the ONNX layout
            env = {self.input_name: (x, None)}
            for op, ins, outs, a in self.nodes:
                held = [(env[n] if n in env else (getattr(self, self._names[n]), None)) if n else None for n in ins]
                y, perm = _run_held(op, held, a, self.opset)
                if isinstance(y, tuple):
                    for name, t in zip(outs, y):
                        if name:
                            env[name] = (t, None)
                else:
                    env[outs[0]] = (y, perm)
            return _onnx_layout(env[self.output_name])

    net = Graph().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


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
    if hasattr(enc, "_prepare") and hasattr(enc, "raw") and len(faces):
        X = enc._prepare(np.asarray(faces, np.uint8))
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2))).float()
            P = torch_enc.prepare(x).numpy()
            G = torch.cat([torch_enc.net(c) for c in torch.from_numpy(X).split(torch_enc.chunk)]).numpy()
        d = float(np.abs(P.astype(np.float64) - X).max())
        prep = {"max_abs_diff": d, "max_rel_diff": d / max(float(np.abs(X).max()), 1e-30)}
        sess = enc._session
        ref = np.concatenate([sess.run([enc._output], {enc._input: X[i:i + enc.batch_size]})[0].reshape(
            len(X[i:i + enc.batch_size]), -1) for i in range(0, len(X), enc.batch_size)])
        graph = _compare(G.reshape(len(G), -1), ref)
    return Agreement(int(len(faces)), end["max_abs_diff"], end["max_rel_diff"], end["min_cosine"], graph, prep)


def torch_encoder_for(enc, faces: np.ndarray | None = None) -> TorchEncoder:
    """The differentiable twin of an ONNX-based facepii encoder (SFace, onnx:PATH); with ``faces``, checked
    against onnxruntime on them (``.check``) and refused when it disagrees beyond :data:`TOLERANCE`."""
    path = getattr(enc, "path", None)
    if path is None:
        raise EncoderError(f"encoder {enc.name} has no ONNX graph to differentiate; white-box attacks "
                           "need sface or onnx:PATH (use --knowledge black).")
    t = TorchEncoder(path, enc.mean, enc.std, enc.bgr, output=getattr(enc, "_output", None),
                     size=getattr(enc, "input_size", (112, 112)), layout=getattr(enc, "layout", "NCHW"),
                     crop=getattr(enc, "crop", 1.0), source=enc)
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
