"""The torch copy of an ONNX graph: BatchNormalization folded into its Conv, PRelu, chunked batches."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


def _graph(shared: bool):
    """x -> Conv -> BN -> PRelu (-> + Conv output when ``shared``: the Conv's output is read twice)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = {"W": rng.normal(size=(4, 3, 3, 3)), "B": rng.normal(size=4), "g": rng.uniform(0.5, 2, 4),
             "b": rng.normal(size=4), "m": rng.normal(size=4), "v": rng.uniform(0.1, 2, 4),
             "s": rng.uniform(0.05, 0.3, (4, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], epsilon=1e-3),
             helper.make_node("PRelu", ["n", "s"], ["p"])]
    out = "p"
    if shared:
        nodes.append(helper.make_node("Add", ["p", "c"], ["y"]))
        out = "y"
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, 4, 8, 8])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("shared", [False, True])
def test_folded_graph_computes_what_onnxruntime_computes(shared):
    from facepii.torch_onnx import build

    model = _graph(shared)
    x = np.random.default_rng(1).normal(size=(5, 3, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    net = build(model)
    ops = [n[0] for n in net.nodes]
    assert ("BatchNormalization" in ops) == shared   # folded only where the Conv feeds nothing else
    got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_chunked_batches_equal_one_pass(tmp_path):
    from facepii.torch_onnx import TorchEncoder

    onnx.save(_graph(False), str(tmp_path / "m.onnx"))
    enc = TorchEncoder(str(tmp_path / "m.onnx"), size=(8, 8))
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(19, 3, 8, 8)).astype(np.float32))
    x.requires_grad_(True)
    y = enc(x)                                      # 19 images: chunks of 8, 8, 3
    y.sum().backward()
    g = x.grad.clone()
    x2 = x.detach().clone().requires_grad_(True)
    y2 = enc.net(x2).reshape(19, -1)
    y2.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), y2.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(g.numpy(), x2.grad.numpy(), atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prelus_cheaper_backward_gives_torchs_gradient_bit_for_bit(dtype):
    """facepii's PReLU backward (no slope gradient, no ``where``) against autograd through ``F.prelu``, exact
    zeros and negative slopes included."""
    from torch.nn import functional as F

    from facepii.torch_onnx import prelu

    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 6, 7, generator=gen, dtype=dt)
    x[0, :, :2] = 0.0  # exact zeros: the side each formula puts them on matters
    x[1, 0, 0, 0] = -0.0
    slope = torch.randn(5, generator=gen, dtype=dt)  # some negative
    g = torch.randn(x.shape, generator=gen, dtype=dt)
    ours, ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y, y_ref = prelu(ours, slope), F.prelu(ref, slope)
    y.backward(g)
    y_ref.backward(g)
    assert torch.equal(y, y_ref)
    assert torch.equal(ours.grad, ref.grad)
    with torch.no_grad():
        assert torch.equal(prelu(x, slope), y_ref.detach())
