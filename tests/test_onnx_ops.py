"""facepii's ONNX -> torch copy against onnxruntime: one small graph per operator (hypothesis over shapes and
attributes), face architectures the test exports from PyTorch itself (IResNet-style, MobileFaceNet-style,
with each exporter the installed torch offers), and the real TensorFlow-converted MobileFaceNet of
../shared/models on real faces, with gradients against finite differences."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from facepii.errors import EncoderError  # noqa: E402
from facepii.torch_onnx import build  # noqa: E402

HYP = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def graph(nodes, x_shape, out, inits=None, opset=13, x_type=TensorProto.FLOAT):
    """A model with one input ``x`` (its first dimension the batch) and the initializers ``inits``."""
    inits = inits or {}
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", x_type, ["N", *x_shape[1:]])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], tensors)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def check(model, x, atol=1e-5, rtol=1e-4):
    """The torch copy computes what onnxruntime computes."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = build(model)(torch.from_numpy(x)).detach().numpy()
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, atol=atol, rtol=rtol)
    return got


def rand(*shape, seed=0, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


# ---------------------------------------------------------------- one operator each


@pytest.mark.parametrize("op", ["Identity", "Neg", "Abs", "Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Floor", "Sign"])
def test_unary(op):
    x = rand(3, 4, 5)
    check(graph([helper.make_node(op, ["x"], ["y"])], x.shape, "y"), x)


@pytest.mark.parametrize("op", ["Sqrt", "Reciprocal", "Log"])
def test_unary_on_positive_values(op):
    x = rand(3, 4, 5, low=0.1, high=3.0)
    check(graph([helper.make_node(op, ["x"], ["y"])], x.shape, "y"), x)


@HYP
@given(st.sampled_from(["Add", "Sub", "Mul", "Div", "Pow"]),
       st.sampled_from([(3, 4, 5), (3, 1, 5), (5,), (1,), (4, 1), ()]))
def test_binary_with_broadcasting(op, c_shape):
    x = rand(2, 3, 4, 5, low=0.5, high=2.0)
    c = rand(*c_shape, seed=1, low=0.5, high=2.0) if c_shape else np.float32(1.5)
    check(graph([helper.make_node(op, ["x", "c"], ["y"])], x.shape, "y", {"c": np.asarray(c, np.float32)}), x)


@HYP
@given(st.sampled_from(["Max", "Min", "Sum", "Mean"]), st.integers(1, 4))
def test_variadic(op, n):
    x = rand(2, 3, 4)
    inits = {f"c{i}": rand(*([3, 4] if i % 2 else [4]), seed=i + 1) for i in range(n - 1)}
    check(graph([helper.make_node(op, ["x", *inits], ["y"])], x.shape, "y", inits), x)


@pytest.mark.parametrize("opset", [6, 13])
@pytest.mark.parametrize("lo, hi", [(-0.5, 0.7), (None, 0.3), (-0.2, None)])
def test_clip_from_attributes_and_inputs(opset, lo, hi):
    x = rand(2, 3, 4)
    if opset < 11:
        a = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
        node, inits = helper.make_node("Clip", ["x"], ["y"], **a), {}
    else:
        inits = {k: np.float32(v) for k, v in (("lo", lo), ("hi", hi)) if v is not None}
        node = helper.make_node("Clip", ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""], ["y"])
    check(graph([node], x.shape, "y", inits, opset), x)


@pytest.mark.parametrize("node, opset", [
    (helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.13), 13),
    (helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4), 13),
    (helper.make_node("HardSwish", ["x"], ["y"]), 14),
    (helper.make_node("Elu", ["x"], ["y"], alpha=0.7), 13),
    (helper.make_node("Selu", ["x"], ["y"]), 13),
    (helper.make_node("Softplus", ["x"], ["y"]), 13),
    (helper.make_node("Softmax", ["x"], ["y"], axis=1), 11),   # opset < 13: flattened at the axis
    (helper.make_node("Softmax", ["x"], ["y"], axis=-1), 13),
    (helper.make_node("LogSoftmax", ["x"], ["y"], axis=2), 13),
])
def test_activations(node, opset):
    x = rand(2, 3, 4, 5)
    check(graph([node], x.shape, "y", opset=opset), x)


@pytest.mark.parametrize("slope_shape", [(3, 1, 1), (1,), (3, 4, 5)])
def test_prelu(slope_shape):
    x = rand(2, 3, 4, 5)
    check(graph([helper.make_node("PRelu", ["x", "s"], ["y"])], x.shape, "y", {"s": rand(*slope_shape, seed=3)}), x)


@HYP
@given(st.sampled_from(["ReduceSum", "ReduceMean", "ReduceL2", "ReduceMax", "ReduceMin", "ReduceSumSquare"]),
       st.lists(st.integers(-3, 2), min_size=1, max_size=2, unique=True), st.booleans(), st.sampled_from([11, 18]))
def test_reductions_with_axes_as_attribute_or_input(op, axes, keep, opset):
    if len({a % 3 for a in axes}) != len(axes):
        return
    x = rand(2, 3, 4, 5)[:, 0]  # rank 3
    if op == "ReduceSum" and opset == 18 or opset == 18:
        node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=int(keep))
        inits = {"axes": np.array(axes, np.int64)}
    elif op == "ReduceSum" and opset >= 13:
        node, inits = helper.make_node(op, ["x", "axes"], ["y"], keepdims=int(keep)), {"axes": np.array(axes)}
    else:
        node, inits = helper.make_node(op, ["x"], ["y"], axes=axes, keepdims=int(keep)), {}
    check(graph([node], x.shape, "y", inits, opset), x)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze(opset):
    x = rand(2, 1, 4, 1)
    if opset < 13:
        nodes = [helper.make_node("Squeeze", ["x"], ["s"], axes=[1, -1]),
                 helper.make_node("Unsqueeze", ["s"], ["y"], axes=[0, 3])]
        inits = {}
    else:
        nodes = [helper.make_node("Squeeze", ["x", "a"], ["s"]), helper.make_node("Unsqueeze", ["s", "b"], ["y"])]
        inits = {"a": np.array([1, -1], np.int64), "b": np.array([0, 3], np.int64)}
    check(graph(nodes, x.shape, "y", inits, opset), x)


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_flatten(axis):
    x = rand(2, 3, 4, 5)
    check(graph([helper.make_node("Flatten", ["x"], ["y"], axis=axis)], x.shape, "y"), x)


@pytest.mark.parametrize("shape", [[0, -1], [0, 3, -1], [-1, 20], [0, 0, 20]])
def test_reshape_with_zero_and_minus_one(shape):
    x = rand(2, 3, 4, 5)
    check(graph([helper.make_node("Reshape", ["x", "s"], ["y"])], x.shape, "y", {"s": np.array(shape, np.int64)}), x)


def test_reshape_from_the_input_shape_at_run_time():
    """What exporters write for x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    x = rand(3, 2, 4, 5)
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64), "minus1": np.array([-1], np.int64)}
    model = graph(nodes, x.shape, "y", inits)
    check(model, x)
    check(model, rand(7, 2, 4, 5))  # another batch size: nothing was baked in


@HYP
@given(st.integers(0, 3), st.integers(1, 3))
def test_concat(axis, n):
    x = rand(2, 3, 4, 5)
    inits = {f"c{i}": rand(2, 3, 4, 5, seed=i + 5) for i in range(n)}
    check(graph([helper.make_node("Concat", ["x", *inits], ["y"], axis=axis)], x.shape, "y", inits), x)


@HYP
@given(st.integers(-6, 6), st.integers(-7, 7), st.sampled_from([1, 2, -1, -2]), st.integers(1, 3))
def test_slice_with_inputs_and_negative_steps(start, end, step, axis):
    x = rand(2, 6, 5, 4)
    inits = {"st": np.array([start], np.int64), "en": np.array([end], np.int64), "ax": np.array([axis], np.int64),
             "sp": np.array([step], np.int64)}
    check(graph([helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], x.shape, "y", inits), x)


def test_slice_from_attributes():
    x = rand(2, 6, 5)
    node = helper.make_node("Slice", ["x"], ["y"], starts=[1, 0], ends=[5, 100], axes=[1, 2])
    check(graph([node], x.shape, "y", opset=9), x)


@pytest.mark.parametrize("idx, axis", [(np.array(2), 1), (np.array([0, 2, -1]), 1), (np.array([[1, 0], [3, 3]]), 2),
                                       (np.array([1]), -1)])
def test_gather_on_constant_indices(idx, axis):
    x = rand(2, 5, 4)
    check(graph([helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)], x.shape, "y",
                {"i": idx.astype(np.int64)}), x)


@HYP
@given(st.lists(st.integers(0, 3), min_size=4, max_size=4), st.floats(-1, 1), st.sampled_from(["constant", "reflect",
                                                                                                 "edge"]))
def test_pad(pads, value, mode):
    x = rand(2, 3, 5, 6)
    full = [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]
    inits = {"p": np.array(full, np.int64), "v": np.array(value, np.float32)}
    check(graph([helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)], x.shape, "y", inits, 13), x)


conv_case = st.fixed_dictionaries({
    "k": st.integers(1, 4), "stride": st.integers(1, 3), "dil": st.integers(1, 2), "group": st.sampled_from([1, 2, 4]),
    "pad": st.one_of(st.just("SAME_UPPER"), st.just("SAME_LOWER"), st.just("VALID"),
                     st.lists(st.integers(0, 2), min_size=4, max_size=4)),
    "size": st.integers(6, 11)})


@HYP
@given(conv_case)
def test_conv_groups_dilation_auto_pad_asymmetric_pads(c):
    x = rand(2, 4, c["size"], c["size"] + 1)
    w = rand(8, 4 // c["group"], c["k"], c["k"], seed=2)
    a = dict(strides=[c["stride"]] * 2, dilations=[c["dil"]] * 2, group=c["group"])
    if isinstance(c["pad"], list):
        a["pads"] = c["pad"]
    else:
        a["auto_pad"] = c["pad"]
    padded = sum(c["pad"][1::2]) if isinstance(c["pad"], list) else 0 if c["pad"] == "VALID" else 8
    if (c["k"] - 1) * c["dil"] + 1 > c["size"] + padded:
        return  # the kernel is wider than the padded input: no output to compare
    if c["dil"] > 1 and c["pad"] in ("SAME_UPPER", "SAME_LOWER"):
        return  # onnxruntime refuses dilation with auto_pad SAME (nothing to compare with)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **a)
    check(graph([node], x.shape, "y", {"w": w, "b": rand(8, seed=3)}), x, atol=1e-4)


@HYP
@given(st.sampled_from(["MaxPool", "AveragePool"]), st.integers(2, 3), st.integers(1, 2),
       st.lists(st.integers(0, 1), min_size=4, max_size=4), st.booleans(), st.booleans())
def test_pools(op, k, stride, pads, ceil, include):
    x = rand(2, 3, 9, 8)
    a = dict(kernel_shape=[k, k], strides=[stride, stride], pads=pads, ceil_mode=int(ceil))
    if op == "AveragePool":
        a["count_include_pad"] = int(include)
    check(graph([helper.make_node(op, ["x"], ["y"], **a)], x.shape, "y"), x)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(op):
    x = rand(2, 3, 7, 6)
    check(graph([helper.make_node(op, ["x"], ["y"])], x.shape, "y"), x)


def test_batch_instance_and_layer_normalization():
    x = rand(2, 3, 4, 5)
    inits = {"g": rand(3, seed=1, low=0.5), "b": rand(3, seed=2), "m": rand(3, seed=3),
             "v": rand(3, seed=4, low=0.2), "lg": rand(5, seed=5), "lb": rand(5, seed=6)}
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["n1"], epsilon=1e-3),
             helper.make_node("InstanceNormalization", ["n1", "g", "b"], ["n2"], epsilon=1e-4),
             helper.make_node("LayerNormalization", ["n2", "lg", "lb"], ["y"], axis=-1, epsilon=1e-5)]
    check(graph(nodes, x.shape, "y", inits, 17), x, atol=1e-4)


@pytest.mark.parametrize("ta, tb, alpha, beta", [(0, 0, 1.0, 1.0), (0, 1, 0.5, 2.0), (1, 1, 1.0, 0.0)])
def test_gemm_and_matmul(ta, tb, alpha, beta):
    x = rand(4, 6)
    a_first = x if not ta else x  # the input is A (N x 6) or, transposed, a (6 x N) view: keep A as given
    w = rand(6, 3, seed=1) if not tb else rand(3, 6, seed=1)
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=tb, alpha=alpha, beta=beta),
             helper.make_node("MatMul", ["g", "m"], ["y"])]
    del a_first
    check(graph(nodes, x.shape, "y", {"w": w, "c": rand(3, seed=2), "m": rand(3, 5, seed=3)}), x)


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [3, 2, 1, 0], None])
def test_transpose(perm):
    x = rand(2, 3, 4, 5)
    a = {"perm": perm} if perm else {}
    check(graph([helper.make_node("Transpose", ["x"], ["y"], **a)], x.shape, "y"), x)


def test_transposes_back_to_back_cancel_and_identities_vanish():
    x = rand(2, 3, 4, 5)
    nodes = [helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 3, 1]),
             helper.make_node("Identity", ["t1"], ["i"]),
             helper.make_node("Transpose", ["i"], ["t2"], perm=[0, 3, 1, 2]),
             helper.make_node("Relu", ["t2"], ["y"])]
    model = graph(nodes, x.shape, "y")
    check(model, x)
    assert [n[0] for n in build(model).nodes] == ["Relu"]


def test_an_unsupported_operator_is_named_and_black_box_suggested():
    x = rand(2, 3, 8, 8)
    model = graph([helper.make_node("Resize", ["x", "", "s"], ["y"])], x.shape, "y",
                  {"s": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(EncoderError, match=r"\['Resize'\].*--knowledge black"):
        build(model)


# ---------------------------------------------------------------- face architectures exported from PyTorch


def _iresnet():
    from torch import nn

    class Block(nn.Module):
        def __init__(self, i, o, stride):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(i)
            self.conv1 = nn.Conv2d(i, o, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(o)
            self.prelu = nn.PReLU(o)
            self.conv2 = nn.Conv2d(o, o, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(o)
            self.down = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o)) \
                if stride != 1 or i != o else None

        def forward(self, x):
            y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            return y + (x if self.down is None else self.down(x))

    class IResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.prelu = nn.PReLU(8)
            self.layers = nn.Sequential(Block(8, 16, 2), Block(16, 16, 1), Block(16, 32, 2), Block(32, 32, 2))
            self.bn2 = nn.BatchNorm2d(32)
            self.dropout = nn.Dropout(0.4)
            self.fc = nn.Linear(32 * 14 * 14, 64)
            self.features = nn.BatchNorm1d(64)

        def forward(self, x):
            x = self.layers(self.prelu(self.bn1(self.conv1(x))))
            x = self.dropout(self.bn2(x))
            return self.features(self.fc(torch.flatten(x, 1)))

    return IResNet()


def _mobilefacenet():
    from torch import nn

    def cbp(i, o, k=3, s=1, p=1, g=1, act=True):
        layers = [nn.Conv2d(i, o, k, s, p, groups=g, bias=False), nn.BatchNorm2d(o)]
        return nn.Sequential(*layers, nn.PReLU(o)) if act else nn.Sequential(*layers)

    class Bottleneck(nn.Module):
        def __init__(self, i, o, s, e):
            super().__init__()
            self.res = s == 1 and i == o
            self.body = nn.Sequential(cbp(i, i * e, 1, 1, 0), cbp(i * e, i * e, 3, s, 1, g=i * e),
                                      cbp(i * e, o, 1, 1, 0, act=False))

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    class MFN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(cbp(3, 16, s=2), cbp(16, 16, g=16))
            self.blocks = nn.Sequential(Bottleneck(16, 16, 2, 2), Bottleneck(16, 16, 1, 2), Bottleneck(16, 32, 2, 2),
                                        Bottleneck(32, 32, 1, 2), Bottleneck(32, 32, 2, 2))
            self.conv = cbp(32, 64, 1, 1, 0)
            self.gdc = cbp(64, 64, 7, 1, 0, g=64, act=False)   # global depthwise conv
            self.linear = nn.Linear(64, 48, bias=False)
            self.bn = nn.BatchNorm1d(48)

        def forward(self, x):
            x = self.gdc(self.conv(self.blocks(self.stem(x))))
            return nn.functional.normalize(self.bn(self.linear(x.view(x.size(0), -1))), dim=1)

    return MFN()


def _exporters():
    out = ["torchscript"]
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter writes through it)

        out.append("dynamo")
    except ImportError:
        pass
    return out


def _export(net, path, exporter):
    torch.manual_seed(0)
    for m in net.modules():  # random, non-trivial BatchNorm statistics: folding must get them right
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.zeros(2, 3, 112, 112)
    kw = {"input_names": ["data"], "output_names": ["embedding"]}
    if exporter == "dynamo":
        torch.onnx.export(net, (x,), str(path), dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("N")}}, **kw)
    else:
        torch.onnx.export(net, (x,), str(path), dynamo=False, dynamic_axes={"data": {0: "N"}}, opset_version=13, **kw)
    return net


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")  # the exporters' own
@pytest.mark.parametrize("exporter", _exporters())
@pytest.mark.parametrize("arch", ["iresnet", "mobilefacenet"])
def test_face_architectures_exported_from_pytorch(tmp_path, arch, exporter):
    from facepii.encoders import get_encoder
    from facepii.torch_onnx import torch_encoder_for

    net = _export(_iresnet() if arch == "iresnet" else _mobilefacenet(), tmp_path / "m.onnx", exporter)
    faces = np.random.default_rng(4).integers(0, 255, (10, 112, 112, 3), dtype=np.uint8)
    enc = get_encoder(f"onnx:{tmp_path / 'm.onnx'}")
    copy = torch_encoder_for(enc, faces)  # verified against onnxruntime while it is built
    assert copy.check["min_cosine"] > 0.9999 and copy.check["max_rel_diff"] < 1e-4
    with torch.no_grad():  # and it is the PyTorch network itself
        x = (torch.from_numpy(faces.transpose(0, 3, 1, 2).copy()).float() - 127.5) / 128
        np.testing.assert_allclose(copy.embed(faces), net(x).numpy(), atol=1e-4, rtol=1e-3)
    _gradients_match_finite_differences(copy, faces[:2])


def _gradients_match_finite_differences(copy, faces):
    """d/dt of a smooth scalar of the embedding along a random pixel direction, by autograd and by
    central differences (float64 sums over float32 passes: a loose but telling tolerance)."""
    x = torch.from_numpy(faces.transpose(0, 3, 1, 2).copy()).float().requires_grad_(True)
    target = torch.from_numpy(np.random.default_rng(5).normal(size=copy.embed(faces[:1]).shape[1])).float()

    def f(z):
        e = copy(z)
        return ((e / e.norm(dim=1, keepdim=True)) @ target).sum()

    f(x).backward()
    d = torch.from_numpy(np.random.default_rng(6).normal(size=x.shape)).float()
    analytic = float((x.grad * d).sum())
    h = 0.05
    with torch.no_grad():
        numeric = (float(f(x + h * d)) - float(f(x - h * d))) / (2 * h)
    assert abs(analytic - numeric) <= 0.03 * abs(analytic) + 1e-4, (analytic, numeric)


# ---------------------------------------------------------------- the real TensorFlow-converted MobileFaceNet


@pytest.mark.integration
def test_mobilefacenet_copy_matches_onnxruntime_on_real_faces(celeba, session_cache, mobilefacenet):
    from facepii.cache import Cache
    from facepii.datasets import load_dataset, select
    from facepii.encoders import get_encoder
    from facepii.extract import extract
    from facepii.torch_onnx import torch_encoder_for

    enc = get_encoder(f"onnx:{mobilefacenet}")
    assert enc.layout == "NHWC" and enc.dim == 192
    fs = select(load_dataset(f"celeba:{celeba}"), max_identities=4, seed=5)
    faces = extract(fs, [enc], Cache(session_cache)).aligned(np.arange(24))
    copy = torch_encoder_for(enc, faces)
    assert copy.check["max_abs_diff"] < 1e-4 and copy.check["min_cosine"] > 0.99999
    _gradients_match_finite_differences(copy, faces[:2])
