"""Where a run's rows are computed: one interface, :meth:`map_rows`, whatever runs them.

``pipeline.run`` has one row loop::

    for n, row, faces, where in rows.map_rows(job, grid): ...

- :class:`InProcessRows` (the default): each row's two stages (:class:`facepii.rows.RowJob`) one after
  the other in this process, the templates kept between them;
- :class:`DaskRows` (``--executor dask``): each row is two Dask tasks, its attacks and then its judging
  (which a free worker takes while another still attacks), every first stage before any second one; the
  embeddings, the attacker's kit and the judges go to every worker once; the empirical baselines' judging
  is one more task, last. Rows whose defense holds unpicklable key material (encrypted templates: a SEAL
  context) run in the driver meanwhile.

Every task makes the driver's calls with the same torch threads (:func:`facepii.executor.compute_threads`),
so a row's figures do not depend on where it ran (tests/test_executor.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import defenses as registry
from facepii import progress
from facepii.estimates import RowEstimates
from facepii.executor import DaskExecutor, compute_threads, relax_malloc_trim, worker_name
from facepii.labels import row_label
from facepii.rows import RowJob

RowResult = tuple[int, RowEstimates, object, str | None]  # (grid index, estimates, worst faces or None, where)


class InProcessRows:
    """Every row in this process, in grid order."""

    def map_rows(self, job: RowJob, grid: list[tuple[str, dict]], where: str | None = None,
                 only: list[int] | None = None) -> Iterator[RowResult]:
        """Rows ``only`` (default: every row) of ``grid``, in order, each labelled ``where``."""
        for n in range(len(grid)) if only is None else only:
            spec, params = grid[n]
            with compute_threads(job.settings.threads):
                row, faces = job.judging(job.attacks(spec, params))
            yield n, row, faces, where

    def baselines(self, job: RowJob) -> dict:
        with compute_threads(job.settings.threads):
            return job.baselines()

    def describe(self, threads: int | None, where: dict[str, str]) -> dict:
        return {"kind": "in-process", "threads": threads}


class DaskRows:
    """Rows as Dask tasks on ``executor``'s workers; encrypted rows in the driver while they run."""

    def __init__(self, executor: DaskExecutor):
        self.executor = executor
        self._floors = None

    def map_rows(self, job: RowJob, grid: list[tuple[str, dict]]) -> Iterator[RowResult]:
        ex = self.executor
        remote = [n for n, (spec, params) in enumerate(grid) if not registry.create(spec, **params).encrypted]
        self._floors = None
        done = iter(())
        if remote:
            stages = "utility and attacks, then judging and irreversibility" if job.attacked else "utility"
            progress.note(f"{len(remote)} rows ({stages}) go to {ex.workers} Dask workers")
            done = ex.map_chained(_attacks_task, _judging_task, [grid[n] for n in remote], job=job)
            if job.attacked is not None:
                self._floors = ex.submit_last(_baselines_task, job=job)
        here = [n for n in range(len(grid)) if n not in remote]
        yield from InProcessRows().map_rows(job, grid, "driver", here)  # while the workers compute
        for i, res in done:
            n = remote[i]
            for k, v in res["stage_seconds"].items():
                progress.STAGE_SECONDS[k] = progress.STAGE_SECONDS.get(k, 0.0) + v
            (wa, wj), (sa, sj) = res["workers"], res["seconds"]
            progress.note(f"row {row_label(*grid[n])}: attacks on worker {wa} in {sa:.1f} s, "
                          f"judging on worker {wj} in {sj:.1f} s")
            yield n, res["row"], res["faces"], wa if wa == wj else f"{wa} (attacks), {wj} (judging)"

    def baselines(self, job: RowJob) -> dict:
        if self._floors is None:  # no row went to the workers
            return InProcessRows().baselines(job)
        return self._floors.result()

    def describe(self, threads: int | None, where: dict[str, str]) -> dict:
        return {**self.executor.describe(), "threads": threads, "rows": where}


def row_executor(executor: DaskExecutor | None) -> InProcessRows | DaskRows:
    """The row executor for ``executor`` (None: this process)."""
    return InProcessRows() if executor is None else DaskRows(executor)


# -- the Dask tasks: the driver's calls, with the worker's address and the stage times ------------------

def _start_task() -> float:
    relax_malloc_trim()
    progress.set_enabled(False)
    progress.reset_stage_times()
    return time.monotonic()


def _attacks_task(task, job: RowJob) -> dict:
    """On a Dask worker: a row's first stage (templates, utility, unlinkability, the attacks)."""
    spec, params = task
    started = _start_task()
    with compute_threads(job.settings.threads):
        ra = job.attacks(spec, params, keep_templates=False)
    return {"ra": ra, "worker": worker_name(), "stage_seconds": dict(progress.STAGE_SECONDS),
            "seconds": time.monotonic() - started}


def _judging_task(first: dict, job: RowJob) -> dict:
    """On a Dask worker: a row's second stage (judging, irreversibility, the oracle's figures) from its
    first stage's result, which may have run on another worker."""
    started = _start_task()
    with compute_threads(job.settings.threads):
        row, faces = job.judging(first["ra"])
    times = dict(first["stage_seconds"])
    for k, v in progress.STAGE_SECONDS.items():
        times[k] = times.get(k, 0.0) + v
    return {"row": row, "faces": faces, "workers": (first["worker"], worker_name()), "stage_seconds": times,
            "seconds": (first["seconds"], time.monotonic() - started)}


def _baselines_task(job: RowJob) -> dict:
    """On a Dask worker: the empirical baselines through the judges (the driver's call, same threads)."""
    _start_task()
    with compute_threads(job.settings.threads):
        return job.baselines()
