"""From an ONNX graph to an ``nn.Module``: graph surgery (Identity nodes dropped, Transposes composed,
BatchNormalization folded into its Conv), layouts (a graph converted from NHWC keeps its tensors NCHW:
Transposes only change how a value is held), and :func:`build`."""

from __future__ import annotations

import numpy as np

from facepii import onnx_graph
from facepii.errors import EncoderError
from facepii.torch_onnx.layers import _tensor
from facepii.torch_onnx.ops import BINARY, ELEMENTWISE, SUPPORTED, run_node


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)


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
