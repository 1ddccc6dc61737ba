"""The kernels' level behind every figure (facepii.kernels) and the operations made CPU-independent
(facepii.exact): pinned before the libraries load, whatever the environment says; opted out only on
request; checked on Dask workers; and the same bits on an emulated CPU of another type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facepii import exact, kernels
from facepii.errors import ParameterError

ROOT = Path(__file__).resolve().parent.parent
#: what a machine of a lower level (or a user's shell) might have set; facepii must override all of it
HOSTILE = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "AUTO",
           "OPENBLAS_CORETYPE": "Prescott", "OPENCV_CPU_DISABLE": "AVX2"}
AVX2 = not kernels.plan()[1]
needs_avx2 = pytest.mark.skipif(not AVX2, reason=f"this CPU cannot reach {kernels.LEVEL}: {kernels.plan()[1]}")


def _python(code: str, env: dict | None = None) -> str:
    e = {k: v for k, v in os.environ.items() if k not in (*HOSTILE, kernels.OPT_OUT)}
    e.update(env or {})
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


STATUS = "import facepii, json; from facepii import kernels; print(json.dumps(kernels.status()))"


def test_plan_pins_every_library_on_an_avx2_cpu_and_only_the_opencv_targets_it_has():
    avx2 = {"avx", "avx2", "fma", "f16c", "bmi2", "sse4_2"}
    pins, why = kernels.plan(avx2, "x86_64")
    assert why is None
    assert pins["ATEN_CPU_CAPABILITY"] == "avx2" and pins["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert pins["MKL_CBWR"] == "COMPATIBLE" and pins["OPENBLAS_CORETYPE"] == "Haswell"
    assert "OPENCV_CPU_DISABLE" not in pins  # nothing above AVX2 to disable, and OpenCV warns about absent ones
    pins, _ = kernels.plan(avx2 | {"avx512f", "avx512cd", "avx512bw", "avx512_vnni"}, "x86_64")
    assert pins["OPENCV_CPU_DISABLE"].split(",") == ["AVX512F", "AVX512-COMMON", "AVX512-SKX", "AVX512-CLX"]


@pytest.mark.parametrize("flags, machine, says", [
    ({"avx", "sse4_2"}, "x86_64", "lacks avx2"),
    ({"avx", "avx2", "fma", "f16c", "bmi2"}, "aarch64", "not an x86-64 CPU"),
    (set(), "x86_64", "unknown"),
])
def test_plan_pins_nothing_where_the_level_cannot_be_reached_and_says_why(flags, machine, says):
    pins, why = kernels.plan(flags, machine)
    assert pins == {} and says in why


@needs_avx2
def test_importing_facepii_pins_every_library_whatever_the_environment_says():
    st_ = json.loads(_python(STATUS, HOSTILE))
    assert st_["level"] == kernels.LEVEL and st_["pinned"]
    assert st_["torch"] == "AVX2" and st_["openblas"] and set(st_["openblas"]) == {"Haswell"}
    assert st_["onednn_max_isa"] == "AVX2" and st_["mkl_cbwr"] == "COMPATIBLE"
    assert "same figures on any x86-64 CPU" in st_["note"]


@needs_avx2
def test_a_pin_after_torch_chose_its_kernels_is_reported_as_not_taken():
    code = "import torch; torch.ones(3) + 1; " + STATUS
    st_ = json.loads(_python(code, {"ATEN_CPU_CAPABILITY": "default"}))
    assert st_["level"] is None and st_["torch"] == "DEFAULT"
    assert "did not take" in st_["note"] and "torch" in st_["note"]


@needs_avx2
def test_fast_kernels_leaves_each_library_its_own_choice_and_the_report_says_so():
    e = {k: v for k, v in os.environ.items() if k not in (*HOSTILE, kernels.OPT_OUT)}
    e["ATEN_CPU_CAPABILITY"] = "default"
    cmd = [sys.executable, "-m", "facepii", "kernels"]
    pinned = subprocess.run(cmd, capture_output=True, text=True, env=e, cwd=ROOT, timeout=300)
    fast = subprocess.run([*cmd, "--fast-kernels"], capture_output=True, text=True, env=e, cwd=ROOT, timeout=300)
    assert pinned.returncode == fast.returncode == 0, pinned.stderr + fast.stderr
    assert "torch            AVX2" in pinned.stdout and "pinned:x86-64 AVX2" in pinned.stdout
    assert "torch            DEFAULT" in fast.stdout and "may differ on other CPU types" in fast.stdout
    assert "unpinned:" in fast.stdout
    env_lines = subprocess.run([*cmd, "--env"], capture_output=True, text=True, env=e, cwd=ROOT, timeout=300).stdout
    assert "export ATEN_CPU_CAPABILITY=avx2" in env_lines and "export MKL_CBWR=COMPATIBLE" in env_lines


def test_fingerprint_names_the_level_when_pinned_and_the_cpu_when_not():
    pinned = {"level": kernels.LEVEL, "torch": "AVX2", "openblas": ["Haswell"]}
    loose = {"level": None, "torch": "AVX512", "openblas": ["SkylakeX"]}
    assert kernels.fingerprint(pinned) == f"pinned:{kernels.LEVEL}"
    assert kernels.fingerprint(loose).startswith("unpinned:") and "AVX512" in kernels.fingerprint(loose)


def test_a_worker_at_another_level_is_refused_with_one_line(monkeypatch):
    monkeypatch.setattr(kernels, "_MINE", ["unpinned:Some CPU:AVX512:SkylakeX"])
    with pytest.raises(ParameterError, match="other kernels than this process.*facepii kernels --env"):
        kernels.require(f"pinned:{kernels.LEVEL}")
    kernels.require("unpinned:Some CPU:AVX512:SkylakeX")  # the same level: no error
    from facepii.executor import _checked

    assert _checked("unpinned:Some CPU:AVX512:SkylakeX", lambda a, b=0: a + b, 1, b=2) == 3
    with pytest.raises(ParameterError):
        _checked("pinned:x", lambda: 0)


FLOATS = st.floats(min_value=0, allow_nan=False, allow_infinity=False, width=32)


@given(st.lists(FLOATS, min_size=1, max_size=64))
@settings(max_examples=60, deadline=None)
def test_exact_sqrt_is_correctly_rounded(xs):
    x = np.asarray(xs, np.float32)
    want = np.sqrt(x.astype(np.float64)).astype(np.float32)  # one rounding of the exact root (53 >= 2 * 24 + 2)
    assert np.array_equal(exact.sqrt(torch.from_numpy(x)).numpy(), want)
    assert np.array_equal(np.sqrt(x), want)  # numpy's float32 root is correctly rounded too


def test_exact_sqrt_is_differentiable():
    x = torch.tensor([0.25, 4.0, 9.0], requires_grad=True)
    exact.sqrt(x).sum().backward()
    assert torch.allclose(x.grad, 0.5 / torch.tensor([0.5, 2.0, 3.0]))


def test_exact_adam_takes_torch_adams_steps():
    """In float64, where torch's square root is exact, the two are the same optimiser bit for bit; in
    float32 they differ only by the root's rounding."""
    for dtype, tol in ((torch.float64, 0.0), (torch.float32, 1e-6)):
        g = torch.Generator().manual_seed(0)
        A = torch.randn(20, 8, generator=g, dtype=dtype)
        b = torch.randn(20, generator=g, dtype=dtype)
        ps = [torch.zeros(8, dtype=dtype, requires_grad=True) for _ in range(2)]
        opts = [exact.Adam([ps[0]], lr=0.05), torch.optim.Adam([ps[1]], lr=0.05)]
        for _ in range(40):
            for p, o in zip(ps, opts):
                o.zero_grad()
                ((A @ p - b) ** 2).mean().backward()
                o.step()
        assert torch.allclose(ps[0], ps[1], rtol=0, atol=tol) if tol else torch.equal(ps[0], ps[1])
    with pytest.raises(ValueError):
        exact.Adam([ps[0]], lr=-1)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_the_1x1_convolution_and_its_input_gradient_are_torchs(groups):
    from torch.nn import functional as F

    from facepii.torch_onnx import _Conv1x1

    g = torch.Generator().manual_seed(groups)
    x = torch.randn(3, 8, 7, 5, generator=g, requires_grad=True)
    w, b = torch.randn(16, 8 // groups, 1, 1, generator=g), torch.randn(16, generator=g)
    y = _Conv1x1.apply(x, w, b, groups)
    gy = torch.randn(y.shape, generator=g)
    (y * gy).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    y2 = F.conv2d(x2, w, b, groups=groups)
    (y2 * gy).sum().backward()
    assert torch.allclose(y, y2, atol=1e-5) and torch.allclose(x.grad, x2.grad, atol=1e-5)
