"""Small ONNX graph surgery shared by the encoders and the torch converter.

- :func:`prepare` drops graph inputs nothing reads (SFace lists its weights
  as inputs, and onnxruntime would demand them), makes the batch dimension
  dynamic, and folds constant sub-graphs (e.g. the int8 block-quantised
  weights' DequantizeLinear -> Reshape chains) into float32 initializers, so
  the weights are dequantised once instead of at every run. The folded values
  are computed by onnxruntime itself, so they are exactly what the original
  graph uses.
- :func:`initializers` returns the (folded) weights as numpy arrays.
"""

from __future__ import annotations

import os

import numpy as np

from facepii.errors import EncoderError


def load(path: str | os.PathLike):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:
        raise EncoderError(f"{path}: not a readable ONNX model ({exc}).") from None


def prepare(model):
    """Return a copy of ``model`` ready for batched inference (see module docstring)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name for i in g.initializer}
    used = {name for node in g.node for name in node.input}
    keep = [i for i in g.input if i.name not in inits and i.name in used]
    if len(keep) != 1:
        raise EncoderError(f"expected one image input, found {[i.name for i in keep]}.")
    del g.input[:]
    g.input.extend(keep)
    for vi in (g.input[0], g.output[0]):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"

    # constant nodes: every input is an initializer or another constant node's output
    const = set(inits)
    const_nodes = []
    for node in g.node:  # ONNX graphs are topologically sorted
        if node.input and all((not x) or x in const for x in node.input) or node.op_type == "Constant":
            const_nodes.append(node)
            const.update(node.output)
    if not const_nodes:
        return m
    const_ids = {id(n) for n in const_nodes}
    needed = [x for n in g.node if id(n) not in const_ids for x in n.input
              if x in const and x not in inits]
    needed = list(dict.fromkeys(needed))
    if not needed:
        return m
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    try:
        inferred = onnx.shape_inference.infer_shapes(m)
        types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    except Exception:
        types = {}
    for name in needed:
        probe.graph.output.append(
            helper.make_tensor_value_info(name, types.get(name) or onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) or d <= 0 else d for d in inp.shape]
    dtype = np.float32 if "float" in inp.type else np.uint8
    values = sess.run(needed, {inp.name: np.zeros(shape, dtype)})
    kept = []
    for n in g.node:
        if id(n) not in const_ids:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            kept.append(c)
    del g.node[:]
    g.node.extend(kept)
    still_used = {x for n in g.node for x in n.input}
    new_inits = []
    for i in g.initializer:
        if i.name in still_used and i.name not in needed:
            c = onnx.TensorProto()
            c.CopyFrom(i)
            new_inits.append(c)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    for name, val in zip(needed, values):
        g.initializer.append(numpy_helper.from_array(np.asarray(val), name))
    return m

