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

The parts: :mod:`~facepii.torch_onnx.ops` (the operator table, built once), :mod:`~facepii.torch_onnx.layers`
(convolution, pooling, padding and the other operators' pieces), :mod:`~facepii.torch_onnx.convert` (graph
surgery, layouts, :func:`build`) and :mod:`~facepii.torch_onnx.encoder` (the encoder, its check, the surrogate
ensemble and the query counter).

An operator outside :data:`SUPPORTED` is refused with one line that names it (``--knowledge black``
attacks any model through queries alone).
"""

from facepii.torch_onnx.convert import build, simplify
from facepii.torch_onnx.encoder import (
    PREP_TOLERANCE,
    TOLERANCE,
    Agreement,
    Ensemble,
    QueryCounter,
    TorchEncoder,
    check_against_onnxruntime,
    torch_encoder_for,
    verify,
)
from facepii.torch_onnx.layers import _Conv1x1, prelu
from facepii.torch_onnx.ops import SUPPORTED, run_node

__all__ = ["PREP_TOLERANCE", "SUPPORTED", "TOLERANCE", "Agreement", "Ensemble", "QueryCounter", "TorchEncoder",
           "_Conv1x1", "build", "check_against_onnxruntime", "prelu", "run_node", "simplify", "torch_encoder_for",
           "verify"]
