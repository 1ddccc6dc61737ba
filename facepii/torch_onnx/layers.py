"""The ONNX operators' pieces on torch tensors: convolution (a oneDNN 1 x 1 path), pooling, padding,
reductions, shape arithmetic, casts, constants, and PReLU with a cheaper backward pass. The table that
maps each ONNX operator to them is :mod:`facepii.torch_onnx.ops`."""

from __future__ import annotations

import math

import numpy as np

from facepii.errors import EncoderError


def _ints(t) -> list[int]:
    return [int(x) for x in (t.tolist() if hasattr(t, "tolist") else t)]


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
