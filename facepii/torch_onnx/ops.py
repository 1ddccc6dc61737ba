"""The operator table: each supported ONNX operator as a function of (inputs, attributes, opset) on torch
tensors, built once on first use (torch is imported then, not with facepii)."""

from __future__ import annotations

import functools
import math

import numpy as np

from facepii.errors import EncoderError
from facepii.torch_onnx.layers import (
    _axes,
    _cast,
    _constant,
    _conv,
    _gather,
    _ints,
    _pad,
    _pool,
    _reduce,
    _reshape,
    _slice,
    _softmax,
    prelu,
)

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
REDUCE = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min", "ReduceL2": "l2",
          "ReduceSumSquare": "sumsquare", "ReduceProd": "prod"}


def run_node(op: str, v: list, a: dict, opset: int):
    """One ONNX node on torch tensors (``v``: its inputs, None for a skipped optional one). Returns
    its output (a tuple for nodes with several)."""
    fn = table().get(op)
    if fn is None:  # pragma: no cover - filtered at build time
        raise EncoderError(f"unsupported op {op}")
    return fn(v, a, opset)


def _on_inputs(f, n: int):
    """An operator that is ``f`` of its first ``n`` inputs."""
    return lambda v, a, o: f(*v[:n])


def _reduce_node(v, a, opset, kind):
    return _reduce(v, a, opset, kind)


@functools.cache
def table() -> dict:
    """op -> fn(inputs, attributes, opset)."""
    import torch
    from torch.nn import functional as F

    from facepii import exact

    unary = {"Neg": torch.neg, "Abs": torch.abs, "Relu": torch.relu, "Sigmoid": torch.sigmoid,
             "Tanh": torch.tanh, "Sqrt": exact.sqrt, "Reciprocal": torch.reciprocal, "Exp": torch.exp,
             "Log": torch.log, "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil,
             "Softplus": F.softplus, "Sign": torch.sign, "Not": torch.logical_not}
    binary = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Pow": torch.pow, "Equal": torch.eq,
              "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge, "LessOrEqual": torch.le,
              "And": torch.logical_and, "Or": torch.logical_or}
    t: dict = {op: _on_inputs(f, 1) for op, f in unary.items()}
    t.update({op: _on_inputs(f, 2) for op, f in binary.items()})

    def div(v, a, o):
        if not v[0].is_floating_point() and not v[1].is_floating_point():
            return torch.div(v[0], v[1], rounding_mode="trunc")
        return v[0] / v[1]

    def variadic(op):
        def fn(v, a, o):
            out = v[0]
            for x in v[1:]:
                out = {"Max": torch.maximum, "Min": torch.minimum}.get(op, torch.add)(out, x)
            return out / len(v) if op == "Mean" else out
        return fn

    def clip(v, a, opset):
        lo, hi = (a.get("min"), a.get("max")) if opset < 11 else (
            v[1] if len(v) > 1 else None, v[2] if len(v) > 2 else None)
        out = v[0]
        if lo is not None:
            out = torch.maximum(out, torch.as_tensor(lo, dtype=out.dtype))
        if hi is not None:
            out = torch.minimum(out, torch.as_tensor(hi, dtype=out.dtype))
        return out

    def prelu_node(v, a, o):
        x, slope = v[0], v[1]
        if x.dim() >= 2 and slope.numel() == x.shape[1] and (slope.dim() == 1 or slope.shape[0] == x.shape[1]):
            return prelu(x, slope.reshape(-1))
        return torch.where(x >= 0, x, x * slope)

    def selu(v, a, o):
        al, g = float(a.get("alpha", 1.67326319217681884765625)), float(a.get("gamma", 1.05070102214813232421875))
        return g * torch.where(v[0] > 0, v[0], al * (torch.exp(v[0]) - 1))

    def squeeze(v, a, opset):
        axes = _axes(v, a, opset, 13)
        if axes is None:
            return torch.squeeze(v[0])
        out = v[0]
        for ax in sorted((ax % out.dim() for ax in axes), reverse=True):
            out = out.squeeze(ax)
        return out

    def unsqueeze(v, a, opset):
        axes = _axes(v, a, opset, 13)
        out = v[0]
        rank = out.dim() + len(axes)
        for ax in sorted(ax % rank for ax in axes):
            out = out.unsqueeze(ax)
        return out

    def flatten(v, a, o):
        axis = int(a.get("axis", 1)) % max(v[0].dim(), 1) if a.get("axis", 1) < 0 else int(a.get("axis", 1))
        return v[0].reshape(int(np.prod(v[0].shape[:axis])) if axis else 1, -1)

    def split(v, a, opset):
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

    def layer_norm(v, a, o):
        axis = int(a.get("axis", -1)) % v[0].dim()
        shape = tuple(v[0].shape[axis:])
        return F.layer_norm(v[0], shape, v[1].expand(shape) if v[1] is not None else None,
                            v[2].expand(shape) if len(v) > 2 and v[2] is not None else None,
                            float(a.get("epsilon", 1e-5)))

    def gemm(v, a, o):
        A = v[0].transpose(0, 1) if a.get("transA", 0) else v[0]
        B = v[1].transpose(0, 1) if a.get("transB", 0) else v[1]
        y = float(a.get("alpha", 1.0)) * (A @ B)
        if len(v) > 2 and v[2] is not None:
            y = y + float(a.get("beta", 1.0)) * v[2]
        return y

    def shape(v, a, o):
        dims = list(v[0].shape)
        start, end = int(a.get("start", 0)), a.get("end")
        return torch.tensor(dims[start:None if end is None else int(end)], dtype=torch.int64)

    def constant_of_shape(v, a, o):
        fill = _constant({"value": a["value"]}) if "value" in a else torch.zeros(1)
        return torch.full(_ints(v[0]), fill.reshape(-1)[0].item(), dtype=fill.dtype)

    def expand(v, a, o):
        s = _ints(v[1])
        return v[0] * torch.ones(s, dtype=v[0].dtype) if len(s) > v[0].dim() else v[0].expand(
            [d if d != 1 else -1 for d in np.broadcast_shapes(tuple(v[0].shape), tuple(s))])

    def spatial(v):
        return tuple(range(2, v[0].dim()))

    t.update({
        "Div": div, "Identity": lambda v, a, o: v[0], "Dropout": lambda v, a, o: v[0],
        "Constant": lambda v, a, o: _constant(a),
        "Transpose": lambda v, a, o: v[0].permute(list(a["perm"]) if "perm" in a
                                                  else list(reversed(range(v[0].dim())))),
        **{op: variadic(op) for op in ("Max", "Min", "Sum", "Mean")},
        "Clip": clip, "LeakyRelu": lambda v, a, o: F.leaky_relu(v[0], float(a.get("alpha", 0.01))),
        "PRelu": prelu_node,
        "HardSigmoid": lambda v, a, o: torch.clamp(float(a.get("alpha", 0.2)) * v[0] + float(a.get("beta", 0.5)),
                                                   0, 1),
        "HardSwish": lambda v, a, o: v[0] * torch.clamp(v[0] / 6 + 0.5, 0, 1),
        "Elu": lambda v, a, o: F.elu(v[0], float(a.get("alpha", 1.0))), "Selu": selu,
        "Softmax": lambda v, a, o: _softmax(v[0], int(a.get("axis", 1 if o < 13 else -1)), o, False),
        "LogSoftmax": lambda v, a, o: _softmax(v[0], int(a.get("axis", 1 if o < 13 else -1)), o, True),
        **{op: functools.partial(_reduce_node, kind=kind) for op, kind in REDUCE.items()},
        "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Flatten": flatten,
        "Reshape": lambda v, a, o: _reshape(v[0], _ints(v[1]), int(a.get("allowzero", 0))),
        "Concat": lambda v, a, o: torch.cat(v, dim=int(a["axis"])), "Split": split,
        "Slice": lambda v, a, o: _slice(v, a, o), "Gather": lambda v, a, o: _gather(v[0], v[1], int(a.get("axis", 0))),
        "Pad": lambda v, a, o: _pad(v, a, o, F), "Conv": lambda v, a, o: _conv(v, a, F),
        "MaxPool": lambda v, a, o: _pool(v, a, F, "max"), "AveragePool": lambda v, a, o: _pool(v, a, F, "avg"),
        "GlobalAveragePool": lambda v, a, o: v[0].mean(dim=spatial(v), keepdim=True),
        "GlobalMaxPool": lambda v, a, o: torch.amax(v[0], dim=spatial(v), keepdim=True),
        "BatchNormalization": lambda v, a, o: F.batch_norm(v[0], v[3], v[4], v[1], v[2], False, 0.0,
                                                           float(a.get("epsilon", 1e-5))),
        "InstanceNormalization": lambda v, a, o: F.instance_norm(v[0], weight=v[1], bias=v[2],
                                                                 eps=float(a.get("epsilon", 1e-5))),
        "LayerNormalization": layer_norm,
        "LpNormalization": lambda v, a, o: F.normalize(v[0], p=float(a.get("p", 2)), dim=int(a.get("axis", -1)),
                                                       eps=0.0),
        "Gemm": gemm, "MatMul": lambda v, a, o: torch.matmul(v[0], v[1]), "Shape": shape,
        "Size": lambda v, a, o: torch.tensor(v[0].numel(), dtype=torch.int64),
        "Cast": lambda v, a, o: _cast(v[0], int(a["to"])), "ConstantOfShape": constant_of_shape, "Expand": expand,
        "Tile": lambda v, a, o: v[0].repeat(_ints(v[1])),
        "Range": lambda v, a, o: torch.arange(v[0].item(), v[1].item(), v[2].item(), dtype=v[0].dtype),
        "Where": lambda v, a, o: torch.where(v[0].bool(), v[1], v[2]),
    })
    if SUPPORTED - set(t):  # pragma: no cover - the table and SUPPORTED are one list (tests/test_onnx_ops.py)
        raise RuntimeError(f"operators without an entry: {sorted(SUPPORTED - set(t))}")
    return t
