"""A tiny ONNX 'face model' for tests of bring-your-own models (not a face recogniser: random weights)."""

import numpy as np


def tiny_face_model(path, size=None, two_outputs=True, relu_out=False):
    """A small 'face model': Conv -> Relu -> GlobalAveragePool -> Gemm -> 16-d embedding (+ an 'age' output)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = {"W": rng.normal(size=(8, 3, 3, 3)) / 50, "B": rng.normal(size=8), "G": rng.normal(size=(8, 16)),
             "g": rng.normal(size=16), "A": rng.normal(size=(8, 1)), "a": np.zeros(1)}
    nodes = [helper.make_node("Conv", ["data", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "G", "g"], ["e0"])]
    if relu_out:
        nodes.append(helper.make_node("Relu", ["e0"], ["embedding"]))
    else:
        nodes.append(helper.make_node("Identity", ["e0"], ["embedding"]))
    outs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 16])]
    if two_outputs:
        nodes.append(helper.make_node("Gemm", ["f", "A", "a"], ["age"]))
        outs.append(helper.make_tensor_value_info("age", TensorProto.FLOAT, [None, 1]))
    hw = [size, size] if size else ["H", "W"]
    g = helper.make_graph(nodes, "face", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, *hw])],
                          outs, [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path
