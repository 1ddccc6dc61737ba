"""``facepii prior train``: the attacker's face prior from a dataset of photos, as a file (attacks.prior).

A prior depends on photos only, so one file serves every later evaluation (``evaluate --prior FILE``),
whatever its target. The file records the content hashes of its photos and the mean SFace embedding of
each of its identities: an evaluation refuses a prior trained on a victim's photo, or on a person among
its victims.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from attacks.prior import KINDS, PRIOR_BUDGETS, FacePrior, identity_centroids
from facepii import outputs, progress
from facepii.cache import Cache, default_cache_dir
from facepii.config import EvaluateConfig
from facepii.encoders import get_encoder
from facepii.errors import ParameterError
from facepii.executor import compute_threads
from facepii.reconstructions import load_prior
from facepii.stages import embed, load_selected


def train_prior(dataset: str, out: Path, *, kind: str = "detail", budget: str = "standard", seed: int = 0,
                max_identities: int | None = None, cache_dir: str | None = None, no_cache: bool = False,
                threads: int | None = None) -> dict:
    """Train a prior on every usable photo of ``dataset`` and write it to ``out``. Returns its description
    and the seconds each stage took."""
    if kind not in KINDS:
        raise ParameterError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}.")
    if budget not in PRIOR_BUDGETS:
        raise ParameterError(f"--budget must be one of {', '.join(PRIOR_BUDGETS)}, got {budget!r}.")
    outputs.check_output_file(out, "--out")
    cfg = EvaluateConfig.from_options(where="prior train", dataset=dataset, max_identities=max_identities,
                                      min_images=1, seed=seed, cache_dir=cache_dir, no_cache=no_cache,
                                      threads=threads).validate()
    fs = load_selected(cfg)
    if fs.kind == "embeddings":
        raise ParameterError(f"--dataset {dataset}: a prior learns what faces look like; it needs photos, not "
                             "embeddings.")
    times = {}
    t0 = time.monotonic()
    cache = Cache(None) if no_cache else Cache(cache_dir or default_cache_dir())
    try:
        with progress.stage("detect, align and embed (sface)"):
            embedded = embed(cfg, fs, {"target": get_encoder("sface")}, cache)
    finally:
        cache.close()
    times["photos"] = time.monotonic() - t0
    labels = embedded.labels
    if len(labels) < 10:
        raise ParameterError(f"--dataset {dataset}: {len(labels)} usable photos; a prior needs at least 10.")
    t0 = time.monotonic()
    with progress.stage(f"train the {kind} prior ({len(labels)} photos)"), compute_threads(cfg.data.threads):
        faces = embedded.aligned(np.arange(len(labels)))
        prior = FacePrior.train(faces, embedded.keys, labels, replace(PRIOR_BUDGETS[budget], kind=kind), seed,
                                source=str(dataset))
        prior.centroids = identity_centroids(embedded.embeddings["target"], labels)
    times["prior"] = time.monotonic() - t0
    outputs.write_bytes(out, prior.to_bytes())
    return {**prior.describe(), "file": str(out), "bytes": Path(out).stat().st_size,
            "skipped": len(embedded.dataset.get("skipped") or []),
            "seconds": {k: round(v, 1) for k, v in times.items()}}


def describe_file(path: Path) -> dict:
    """A prior file's description (``facepii prior show``), checked as ``evaluate --prior`` checks it."""
    p = load_prior(str(path))
    return {**p.describe(), "file": str(path), "photos_listed": len(p.manifest.get("photo_keys") or []),
            "identities_stored": 0 if p.centroids is None else len(p.centroids)}
