"""The instruction-set level behind every figure: pinned to x86-64 AVX2 before the numeric libraries load.

torch, oneDNN, MKL, OpenBLAS and OpenCV pick their kernels by the CPU they run on (AVX-512 on one
machine, AVX2 on the next), and kernels of two levels round differently. The attacks' optimisation
turns those last-bit differences into other faces, so the same photos, code and seed gave other
attack figures on an Intel Xeon with AVX-512 than on an AMD EPYC without it. :func:`pin` fixes one
level for every library that computes a figure, by the switches each library reads when it loads:

=======================  ===================  =====================================================
library                  switch               value
=======================  ===================  =====================================================
torch (ATen kernels)     ATEN_CPU_CAPABILITY  avx2
oneDNN (torch's convs)   ONEDNN_MAX_CPU_ISA   AVX2
MKL (torch's BLAS, VML)  MKL_CBWR             COMPATIBLE: the one branch whose results are the
                                              same on Intel and AMD CPUs (measured: its AVX2
                                              branch is not; on AMD MKL ignores it)
OpenBLAS (numpy, scipy)  OPENBLAS_CORETYPE    Haswell
OpenCV (YuNet, warps)    OPENCV_CPU_DISABLE   the CPU's AVX-512 and AVX-VNNI dispatch targets
=======================  ===================  =====================================================

onnxruntime (MLAS) has no such switch; its output for the models facepii runs was measured equal
on an AVX-512 CPU and on emulated AVX2 CPUs (tests/test_kernels.py, docs/scale.md).

The pin happens when ``facepii`` is first imported (``import defenses`` and ``import attacks``
import it first), so it must come before numpy and torch: the command line always does; a Python
program that imported torch or numpy earlier gets a report that says the pin did not take
(:func:`status`). A CPU without AVX2 cannot reach the level: nothing is pinned there and the
report says so. ``--fast-kernels`` (or ``FACEPII_FAST_KERNELS=1``) leaves every library its own
choice: faster on an AVX-512 machine, and the report then says its figures may differ on other
CPU types. Either way the level enters the report's ``comparable`` digest.

This module imports nothing heavy: it runs before numpy exists in the process.
"""

from __future__ import annotations

import os
import platform
import sys

from facepii.errors import ParameterError

#: the level every figure is computed at (x86-64-v3: every x86-64 CPU since 2013-2015 has it)
LEVEL = "x86-64 AVX2"
OPT_OUT = "FACEPII_FAST_KERNELS"
#: the CPU flags the level needs (Linux /proc/cpuinfo names)
NEEDS = ("avx", "avx2", "fma", "f16c", "bmi2")
#: OpenCV's dispatch targets above AVX2, and the CPU flag each needs (OpenCV warns about a target the
#: CPU does not have, so only those it has are disabled)
OPENCV_ABOVE = {"AVX512F": "avx512f", "AVX512-COMMON": "avx512cd", "AVX512-SKX": "avx512bw",
                "AVX512-CLX": "avx512_vnni", "AVX512-CNL": "avx512vbmi", "AVX512-ICL": "avx512_vbmi2",
                "AVX512-KNL": "avx512er", "AVX512-KNM": "avx512_4vnniw", "AVX_VNNI": "avx_vnni"}
#: the libraries whose kernel choice is made when they load (a pin after that comes too late)
LOADS = ("numpy", "torch", "cv2", "scipy", "onnxruntime")

_state: dict = {"pinned": False, "original": {}, "late": [], "reason": None}


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux names them (empty where /proc/cpuinfo is unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def plan(flags: set[str] | None = None, machine: str | None = None) -> tuple[dict[str, str], str | None]:
    """The switches to set on a CPU with ``flags``, and why nothing is pinned (or None)."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64"):
        return {}, f"not an x86-64 CPU ({machine}): nothing to pin"
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return {}, "the CPU's features are unknown (no /proc/cpuinfo): nothing pinned"
    missing = [f for f in NEEDS if f not in flags]
    if missing:
        return {}, (f"this CPU lacks {', '.join(missing)}: it cannot compute at the {LEVEL} level, and its "
                    "figures may differ from those of AVX2 machines")
    pins = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
            "MKL_CBWR": "COMPATIBLE", "OPENBLAS_CORETYPE": "Haswell"}
    above = [name for name, flag in OPENCV_ABOVE.items() if flag in flags]
    if above:
        pins["OPENCV_CPU_DISABLE"] = ",".join(above)
    return pins, None


def fast_requested() -> bool:
    return os.environ.get(OPT_OUT, "").strip().lower() not in ("", "0", "false", "no")


def pin() -> bool:
    """Set every library's switch to the level, before they load. Idempotent; returns whether it pinned."""
    if _state["pinned"]:
        return True
    if fast_requested():
        _state["reason"] = f"fast kernels ({OPT_OUT} or --fast-kernels): each library uses the CPU's best"
        return False
    pins, why = plan()
    if why:
        _state["reason"] = why
        return False
    _state["late"] = [m for m in LOADS if m in sys.modules]
    for k, v in pins.items():
        _state["original"].setdefault(k, os.environ.get(k))
        os.environ[k] = v
    _state["pinned"] = True
    _state["reason"] = None
    return True


def unpin() -> None:
    """Undo :func:`pin` (``--fast-kernels``, before any numeric library has loaded): the user's own values come
    back, and :data:`OPT_OUT` tells the processes this one starts (Dask workers, dlib) to leave them too."""
    for k, v in _state["original"].items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _state.update(pinned=False, original={}, late=[])
    os.environ[OPT_OUT] = "1"
    _state["reason"] = f"fast kernels ({OPT_OUT} or --fast-kernels): each library uses the CPU's best"


def _openblas() -> list[str]:
    try:
        from threadpoolctl import threadpool_info

        return sorted({str(i.get("architecture")) for i in threadpool_info() if i.get("internal_api") == "openblas"})
    except Exception:  # noqa: BLE001 - a report must not fail on an introspection helper
        return []


def _opencv_disabled() -> list[str]:
    try:
        import cv2

        return sorted(w[:-1].lstrip("*") for w in cv2.getCPUFeaturesLine().split() if w.endswith("?"))
    except Exception:  # noqa: BLE001
        return []


def status() -> dict:
    """What the libraries use now (after they loaded): for the report's provenance."""
    import torch

    torch_level = torch.backends.cpu.get_cpu_capability()
    blas = _openblas()
    out = {"level": None, "pinned": _state["pinned"], "torch": torch_level, "openblas": blas,
           "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "mkl_cbwr": os.environ.get("MKL_CBWR"),
           "opencv_not_used": _opencv_disabled(),
           "onnxruntime": "no switch; measured the same on AVX-512 and AVX2 CPUs for facepii's models"}
    if _state["pinned"]:
        took = torch_level == "AVX2" and all(b == "Haswell" for b in blas)
        if took:
            out["level"] = LEVEL
            out["note"] = f"kernels pinned to {LEVEL}: the same figures on any x86-64 CPU with AVX2"
        else:
            late = ", ".join(_state["late"]) or "a numeric library"
            out["note"] = (f"the pin to {LEVEL} did not take ({late} loaded before facepii: import facepii first); "
                           "figures may differ on other CPU types")
    else:
        out["note"] = f"{_state['reason'] or 'not pinned'}; figures may differ on other CPU types"
    return out


def fingerprint(st: dict | None = None) -> str:
    """What enters the ``comparable`` digest: the level where it is pinned, else this CPU and its kernels
    (two machines of other CPU types never call their unpinned runs comparable)."""
    st = status() if st is None else st
    if st.get("level"):
        return f"pinned:{st['level']}"
    return f"unpinned:{_cpu_model()}:{st.get('torch')}:{','.join(st.get('openblas') or [])}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_lines() -> list[str]:
    """``export`` lines that start another process (a Dask worker of a user's cluster) at the level."""
    pins, why = plan()
    return [f"export {k}={v}" for k, v in pins.items()] if not why else []


_MINE: list[str] = []


def require(expected: str) -> None:
    """On a Dask worker, before a task: refuse to compute a figure at another level than the driver's."""
    if not _MINE:
        _MINE.append(fingerprint())
    if _MINE[0] != expected:
        host = platform.node() or "a worker"
        raise ParameterError(
            f"Dask worker on {host} computes with other kernels than this process ({_MINE[0]} against {expected}): "
            f"its figures would differ. Start the workers with the same settings: `facepii kernels --env` prints "
            f"the variables (or give both sides --fast-kernels / {OPT_OUT}=1).")
