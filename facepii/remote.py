"""Rows on Dask workers: the task functions and their glue. Every task makes the same calls as the
driver's in-process row (:mod:`facepii.rows`), with the same torch threads, so a row's figures do not
depend on where it ran (tests/test_executor.py). Rows whose defense holds unpicklable key material
(encrypted templates: a SEAL context) stay in the driver.
"""

from __future__ import annotations

import time

import defenses as registry
from facepii import progress
from facepii.config import EvaluateConfig
from facepii.estimates import RowEstimates
from facepii.executor import compute_threads, relax_malloc_trim, worker_name
from facepii.judging import (
    baseline_faces,
    judge_baselines,
)
from facepii.labels import row_label
from facepii.rows import Attacked, row_attacks, row_estimates, row_judging
from facepii.stages import (
    protect,
)


def _row_task(task, embedded, fit_pos, cfg) -> RowEstimates:
    """On a Dask worker: one row's templates and estimates (the same calls as in the driver)."""
    spec, params = task
    relax_malloc_trim()
    t = protect(embedded, spec, params, fit_pos, cfg.privacy.key, cfg.seed)
    return row_estimates(embedded, t, fit_pos, cfg)


def remote_rows(executor, embedded, grid, fit_pos, cfg: EvaluateConfig) -> dict[int, RowEstimates]:
    """Rows' estimates as parallel Dask tasks; rows whose defense holds unpicklable key material
    (encrypted templates: a SEAL context) stay in the driver."""
    idx = [n for n, (spec, params) in enumerate(grid) if not registry.create(spec, **params).encrypted]
    with progress.stage(f"{len(idx)} rows' utility and unlinkability on {executor.workers} Dask workers"):
        rows = executor.map_ordered(_row_task, [grid[n] for n in idx], embedded=embedded, fit_pos=fit_pos,
                                    cfg=cfg)
    return dict(zip(idx, rows))


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


def remote_whole_rows(executor, embedded, grid, fit_pos, cfg: EvaluateConfig, attacked: Attacked
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
