"""The same figures on any x86-64 CPU: the golden report, and the computations behind it on an emulated
CPU of another type.

The golden report is a small evaluation with attacks whose report.json is committed, recomputed here
and required to be the same, figure for figure.

It is how another machine checks facepii's promise that a figure depends on the inputs, the code, the
seed and the settings, never on the CPU type, the thread count, the BLAS kernel or the executor
(facepii.kernels pins the instruction-set level of every library before it loads). The run below
starts with an environment that asks every library for a lower level (torch's ``default``
capability, oneDNN at SSE4.1, OpenBLAS at Prescott, MKL's automatic branch): facepii overrides it.

A failure on a machine of another CPU type is a real defect: some computation behind the figures
still depends on the CPU. Find it with ``tests/cpu_probe.py`` (run it on both machines and compare),
make it CPU-independent, and name what cannot be in docs/scale.md. A failure after a change of the
code that is meant to change figures (a stronger attack, another default) is expected: regenerate
the file on any x86-64 machine with AVX2 and commit it with the change, saying why the figures moved:

    python tests/test_golden.py --regenerate

Versions matter too: the committed file records the packages it was made with; other versions of
torch, onnxruntime, OpenCV or dlib may compute other bits (the failure message lists them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "report.json"
CELEBA = ROOT.parent / "shared" / "datasets" / "celeba-subset"
MOBILEFACENET = ROOT.parent / "shared" / "models" / "mobilefacenet" / "model.onnx"
#: what a machine of a lower level (or a user's shell) might have set
HOSTILE = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "AUTO",
           "OPENBLAS_CORETYPE": "Prescott"}


def command(out: Path, cache: Path) -> list[str]:
    """About 12 identities of the shared subset, the quick budget, the unprotected row and one noise row,
    every default attack, two independent judges (and the target), one thread."""
    data, mfn = (os.path.relpath(p, ROOT) for p in (CELEBA, MOBILEFACENET))  # run from ROOT: no machine's paths
    return [sys.executable, "-m", "facepii", "evaluate", "-q", "--dataset", f"celeba:{data}",
            "--max-identities", "12", "--defense", "noise", "--param", "sigma=0.05",
            "--judge", f"dlib,onnx:{mfn}", "--budget", "quick", "--bootstrap", "200",
            "--threads", "1", "--seed", "0", "--cache-dir", str(cache), "--json", str(out)]


def figures(report: dict) -> dict:
    """Everything a figure is, without what says how or where the run went (provenance: times, machine,
    command, git revision; the package versions; paths in the settings; cache hits)."""
    d = json.loads(json.dumps(report))
    for k in ("provenance", "versions"):
        d.pop(k, None)
    for k in ("dataset", "judge", "cache_dir", "json", "out", "executor"):
        d.get("settings", {}).pop(k, None)
    ds = d.get("dataset", {})
    for k in ("spec", "source", "embedding_stats"):
        ds.pop(k, None)
    d.get("attacker", {}).pop("face_model", None)
    d.get("attacker", {}).get("prior", {}).pop("from", None)  # trained or read from the cache
    return d


def _data_or_skip() -> None:
    if not (CELEBA / "identity_CelebA.txt").is_file() or not MOBILEFACENET.is_file():
        pytest.skip(f"test data absent: {CELEBA} or {MOBILEFACENET}")
    from facepii import kernels

    if kernels.plan()[1]:
        pytest.skip(f"the figures are pinned to {kernels.LEVEL}, which this CPU cannot reach: {kernels.plan()[1]}")


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in (*HOSTILE, "FACEPII_FAST_KERNELS")}


EMULATED_TEST = "test_an_emulated_intel_haswell_computes_the_same_bits"
GOLDEN_TEST = "test_the_golden_report_is_recomputed_figure_for_figure"


def start_emulated():
    """tests/cpu_probe.py under QEMU emulating an Intel Haswell, in the background: (process, args), or None
    without qemu-x86_64 or the test data. conftest.py starts it when the session collects the emulated test,
    so that its minutes of one core overlap the other slow tests instead of being waited for at the end."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None or not (CELEBA / "identity_CelebA.txt").is_file() or not MOBILEFACENET.is_file():
        return None
    args = [str(ROOT / "tests" / "cpu_probe.py"), str(CELEBA), str(MOBILEFACENET), "--small"]
    p = subprocess.Popen([qemu, "-cpu", "Haswell", sys.executable, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_clean_env(), cwd=ROOT)
    return p, args


@pytest.fixture
def emulated(request):
    started = getattr(request.config, "_facepii_emulated", None)
    got = started if started is not None else start_emulated()
    yield got
    if got is not None and got[0].poll() is None:
        got[0].kill()
        got[0].communicate()


def run_golden(out: Path, cache: Path, extra_env: dict | None = None) -> dict:
    env = _clean_env()
    env.update(extra_env or {})
    r = subprocess.run(command(out, cache), capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


def differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += differences(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [x for i, (u, v) in enumerate(zip(a, b)) for x in differences(u, v, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


@pytest.mark.slow
@pytest.mark.integration
def test_the_golden_report_is_recomputed_figure_for_figure(tmp_path, golden_cache):
    _data_or_skip()
    from facepii import kernels

    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert not any(golden_cache.iterdir()), "the golden run starts from an empty cache"
    now = run_golden(tmp_path / "report.json", golden_cache, HOSTILE)
    assert now["attacker"]["face_model"] == "trained"  # computed here, not read back
    assert now["provenance"]["kernels"]["level"] == kernels.LEVEL
    assert now["provenance"]["kernels"]["torch"] == "AVX2"  # the environment asked for 'default'
    diff = differences(figures(golden), figures(now))
    versions = [f"{k}: golden {golden['versions'].get(k)}, here {v}" for k, v in now["versions"].items()
                if golden["versions"].get(k) != v]
    assert not diff, (f"{len(diff)} figures differ from tests/golden/report.json (made on "
                      f"{golden['provenance']['machine']['cpu']}; here {now['provenance']['machine']['cpu']}"
                      f"{'; package versions differ: ' + '; '.join(versions) if versions else ''}); first ones:\n"
                      + "\n".join(diff[:20]))


@pytest.mark.slow
@pytest.mark.integration
def test_an_emulated_intel_haswell_computes_the_same_bits(emulated):
    """The computations behind the figures (tests/cpu_probe.py: detection, alignment, the three face models,
    the torch copies' forward and input gradient, the attacker's face model and refinement) give the same
    digests here and under QEMU emulating an Intel Haswell: an x86-64 CPU of another vendor and another
    level (no AVX-512, other cache sizes), for which every library chooses its own kernels. Where this
    machine has AVX-512, this is the cross-CPU check of the pin; QEMU computes approximate instructions
    (rcpps, rsqrtps) exactly, so agreement also shows that no figure here rests on them. Needs qemu-x86_64
    (Debian's qemu-user, which .ci/run installs where it can); about 8 minutes of one core."""
    _data_or_skip()
    if emulated is None:
        pytest.skip("qemu-x86_64 absent (Debian package qemu-user): no emulated CPU to compare with")
    proc, args = emulated
    here = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=_clean_env(), cwd=ROOT,
                          timeout=600)
    assert here.returncode == 0, here.stderr[-2000:]
    out, err = proc.communicate(timeout=2400)
    assert proc.returncode == 0, err[-2000:]
    a, b = json.loads(here.stdout.splitlines()[-1]), json.loads(out.splitlines()[-1])
    from facepii import kernels

    assert a["kernels"] == b["kernels"] == f"pinned:{kernels.LEVEL}"
    assert {k: (a[k], b[k]) for k in a if a[k] != b[k]} == {}


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/test_golden.py --regenerate")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rep = run_golden(Path(tmp) / "report.json", Path(tmp) / "cache")
    if rep["provenance"]["kernels"]["level"] is None:
        sys.exit(f"not pinned here ({rep['provenance']['kernels']['note']}): the golden report needs a CPU with AVX2")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(rep, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"written {GOLDEN.relative_to(ROOT)}")
