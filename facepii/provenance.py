"""Where a report comes from: the command, the code, the models, the data, the machine and the time.

Two reports whose ``comparable`` digests are equal were made by the same code (version, a digest of its
Python sources and, from a checkout, git revision), the same models (each one's name and version, which
carries its digest),
the same photos in the same order (a digest of their content hashes), the same settings and seed,
and the same kernels' level (:mod:`facepii.kernels`: pinned to x86-64 AVX2, or this CPU's own kernels,
which another CPU type does not share): their figures must agree. Everything else in the block
(machine, command line, wall times, cache hits) says how the run went and may differ between
comparable runs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from facepii import __version__, kernels


def dataset_digest(keys: list[str]) -> str:
    """SHA-256 over the photos' content hashes, in the order the run used them."""
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode())
        h.update(b"\n")
    return h.hexdigest()


def vectors_digest(E, labels) -> str:
    """For an embeddings dataset (no photos): SHA-256 of the vectors as float32 and of their labels."""
    import numpy as np

    h = hashlib.sha256(np.ascontiguousarray(E, np.float32).tobytes())
    for lab in labels:
        h.update(str(lab).encode())
        h.update(b"\n")
    return h.hexdigest()


def git_revision(root: Path | None = None) -> dict | None:
    """The checkout facepii runs from (None for an installed wheel): revision and whether it is edited."""
    root = root or Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    # read-only: `git status` would otherwise take .git/index.lock and may rewrite .git/index (a write in
    # facepii's own checkout, outside the folders the user named)
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True, env=env).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True, env=env).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"revision": rev, "edited": bool(dirty)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def machine() -> dict:
    out = {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_bytes": _memory_bytes(),
           "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA set-up must not stop a report
        pass
    return out


#: settings that say where things are or how the run was carried out, never what it computed: the photos
#: are compared by their digest, the executor gives the same figures, the score files hold what the figures
#: rest on
NOT_COMPARED = ("dataset", "executor", "cache_dir", "no_cache", "out", "json", "quiet", "scores")


@lru_cache(maxsize=1)
def source_digest() -> str:
    """SHA-256 over the Python sources of facepii, attacks and defenses as loaded (relative path and content,
    in order): an edited copy differs from the release even where git is absent (no .git, no git on PATH)."""
    h = hashlib.sha256()
    for pkg in ("facepii", "attacks", "defenses"):
        mod = importlib.import_module(pkg)
        if not getattr(mod, "__file__", None):
            continue
        root = Path(mod.__file__).parent
        for f in sorted(root.rglob("*.py")):
            if "__pycache__" in f.parts:
                continue
            h.update(f"{pkg}/{f.relative_to(root).as_posix()}\n".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def comparable(code: dict, models: dict, data: str, settings: dict, seed: int, kernels_id: str) -> str:
    """The digest of everything a figure depends on; ``kernels_id``: :func:`facepii.kernels.fingerprint`."""
    settings = {k: v for k, v in settings.items() if k not in NOT_COMPARED}
    blob = json.dumps({"code": code, "models": models, "data": data, "settings": settings, "seed": seed,
                       "kernels": kernels_id}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def provenance(*, keys: list[str], data_digest: str | None = None, encoders: dict[str, dict], settings: dict, seed: int,
               stage_seconds: dict[str, float], cache_stats: dict | None = None,
               argv: list[str] | None = None, executor: dict | None = None) -> dict:
    """The report's provenance block."""
    code = {"facepii": __version__, "git": git_revision(), "source": source_digest()}
    models = {role: f"{e.get('name')}@{e.get('version')}" for role, e in sorted(encoders.items())}
    data = data_digest or dataset_digest(keys)
    argv = sys.argv if argv is None else argv
    kern = kernels.status()
    return {
        "comparable": comparable(code, models, data, settings, seed, kernels.fingerprint(kern)),
        "command": shlex.join(["facepii", *argv[1:]]) if argv else None,
        "code": code,
        "models": models,
        "dataset_digest": data,
        "photos": len(keys),
        "seed": seed,
        "machine": machine(),
        "kernels": kern,
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
        "cache": cache_stats or {},
        "executor": executor or {"kind": "in-process"},
    }
