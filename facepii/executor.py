"""Where the heavy work runs: in this process (default) or on a Dask cluster (``--executor dask``).

``--executor dask`` starts a local cluster (one worker process per core, one thread each);
``--executor dask:ADDRESS`` joins a running scheduler (``dask scheduler`` + ``dask worker``, or
dask-jobqueue on SLURM/SGE). Two stages go to the workers:

- photo detection + embedding: one task per batch of photos; each worker process loads the face
  models once (a per-process cache, not per task) and returns landmarks and embeddings, which the
  driver writes into its own SQLite cache as each task completes (an interrupted run resumes
  exactly as a local one). Workers read the photos from the same paths: the dataset must be on a
  filesystem the workers share. Photos' pixels never come back, only landmarks and embeddings;
- each defense row: two tasks, its attacks (or, without attacks, its utility and ISO/IEC 30136
  figures) and then its judging and irreversibility (:meth:`DaskExecutor.map_chained`, driven by
  :class:`facepii.row_executor.DaskRows`; the embeddings, the attacker's kit with its face model and
  the judges are scattered to every worker once; each worker process rebuilds the torch copy of the
  target and opens the judges' models once, when the kit arrives). Rows whose defense holds
  unpicklable key material (``he``: a SEAL context) run in the driver meanwhile.

Torch's results depend on its number of threads (a sum split over two threads rounds differently),
so the computations behind the figures run with ``--threads`` threads wherever they run
(:func:`compute_threads`): in-process, 1 worker and 2 workers give the same report for the same
``--threads`` (tests check it on a ``LocalCluster(n_workers=2, threads_per_worker=1)``).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from facepii import kernels
from facepii.cpus import usable_cpus
from facepii.encoders import get_encoder
from facepii.errors import ImageError, ParameterError
from facepii.faces import align, default_aligner, read_image

_MODELS: dict[str, Any] = {}  # per worker process: spec -> encoder (and "aligner")


def parse(spec: str | None) -> tuple[str, str | None]:
    """("local", None), ("dask", None) or ("dask", ADDRESS)."""
    if spec in (None, "", "local"):
        return "local", None
    kind, _, addr = str(spec).partition(":")
    if kind != "dask":
        raise ParameterError(f"--executor must be local, dask or dask:ADDRESS, got {spec!r}.")
    scheme = addr.partition("://")[0] if "://" in addr else None
    if scheme is not None and scheme != "tcp":
        raise ParameterError(f"--executor {spec}: facepii connects to a Dask scheduler over tcp:// only ({scheme}:// "
                             "needs a security or transport configuration it does not take); give tcp://HOST:PORT, "
                             "or HOST:PORT, and a tunnel where the link must be encrypted.")
    return "dask", (addr or None)


#: seconds to connect to a scheduler, and again to wait for its first worker (FACEPII_DASK_TIMEOUT overrides)
DASK_TIMEOUT = 60.0


def _dask_timeout() -> float:
    try:
        t = float(os.environ.get("FACEPII_DASK_TIMEOUT", DASK_TIMEOUT))
    except ValueError:
        return DASK_TIMEOUT
    return t if 0 < t < 86400 else DASK_TIMEOUT


def _connect(address: str):
    """A Client of the scheduler at ``address``, or one line saying what is wrong: nothing answers, something
    that is not a Dask scheduler answers (or never answers: the whole connection is bounded by a time-out, in a
    thread of its own), or the scheduler has no worker."""
    import threading

    from distributed import Client

    t = _dask_timeout()
    got: dict = {}

    made: list = []

    class _Client(Client):
        """A Client this function keeps a handle on, so that one whose connection failed is closed here."""

        def __init__(self, *args, **kwargs):
            made.append(self)
            super().__init__(*args, **kwargs)

    def attempt():
        try:
            got["client"] = _Client(address, timeout=f"{t}s")
        except BaseException as exc:  # noqa: BLE001 - any failure to connect is the address's, said in one line
            got["error"] = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            # close the half-made Client now, in this thread: left to a garbage collection, its __del__ closes
            # its loop runner whenever that runs, and one that ran while another Dask loop was starting (a
            # LocalCluster, holding LoopRunner's class-wide lock) waited on that lock for ever
            for c in made:
                try:
                    c.close(timeout=t)
                except Exception:  # noqa: BLE001 - the connection already failed; that is what is said
                    pass

    th = threading.Thread(target=attempt, daemon=True, name="facepii-dask-connect")
    th.start()
    th.join(t + 10)
    if th.is_alive():
        raise ParameterError(f"--executor dask:{address}: no Dask scheduler answered within {t:.0f} s (something "
                             "accepts connections there but does not speak Dask's protocol).")
    if "error" in got:
        raise ParameterError(f"--executor dask:{address}: cannot reach a Dask scheduler there ({got['error']}).")
    client = got["client"]
    try:
        client.wait_for_workers(1, timeout=t)
    except Exception:  # noqa: BLE001 - distributed raises TimeoutError or its own
        client.close()
        raise ParameterError(f"--executor dask:{address}: the scheduler has no worker (waited {t:.0f} s); start "
                             "workers with `dask worker ADDRESS` (facepii installed beside them).") from None
    return client


def check(spec: str | None) -> None:
    kind, _ = parse(spec)
    if kind == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ParameterError("--executor dask needs Dask: pip install 'facepii[dask]'.") from None


class DaskExecutor:
    """A dask.distributed client: a local cluster, or a running scheduler at ``address``."""

    def __init__(self, address: str | None = None):
        from distributed import Client, LocalCluster

        self.cluster = None
        self._chained: dict = {}  # the last map_chained's shared objects and their futures
        if address:
            self.client = _connect(address)
        else:
            self.cluster = LocalCluster(n_workers=usable_cpus(), threads_per_worker=1, processes=True,
                                        dashboard_address=None)
            self.client = Client(self.cluster)
        # every task checks that its worker computes at this process's kernels' level (facepii.kernels):
        # a worker of a user's cluster started without the pin would give other figures
        self.kernels = kernels.fingerprint()
        try:
            self.client.run(kernels.require, self.kernels)
        except ParameterError:
            self.close()
            raise

    def _fn(self, fn):
        return functools.partial(_checked, self.kernels, fn)

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    def map_unordered(self, fn, tasks: list, **shared) -> Iterator[Any]:
        """fn(task, **shared) for every task on the workers, results as they complete."""
        from distributed import as_completed

        scattered = {k: self.client.scatter(v, broadcast=True) for k, v in shared.items()}
        futures = [self.client.submit(self._fn(fn), t, pure=False, **scattered) for t in tasks]
        for fut in as_completed(futures):
            yield fut.result()

    def map_chained(self, first, then, tasks: list, **shared) -> Iterator[tuple[int, Any]]:
        """(index, then(first(task, **shared), **shared)) for every task, as the second stage completes.

        Two tasks per item: every first stage goes before any second stage (priorities), and a free
        worker takes a ready second stage when no first stage is left, so the second stages fill the
        time a lone last first stage would leave the other workers idle. A second stage may run on
        another worker than its first (its input travels there)."""
        from distributed import as_completed

        scattered = {k: self.client.scatter(v, broadcast=True) for k, v in shared.items()}
        self._chained = {k: (v, scattered[k]) for k, v in shared.items()}
        firsts = [self.client.submit(self._fn(first), t, pure=False, priority=2, **scattered) for t in tasks]
        seconds = {self.client.submit(self._fn(then), f, pure=False, priority=1, **scattered): i
                   for i, f in enumerate(firsts)}

        def results():  # every task is submitted before the first result is asked for
            for fut in as_completed(seconds):
                yield seconds[fut], fut.result()

        return results()

    def submit_last(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on a worker after every task of higher priority (the rows' stages) has
        started: small work that fills a worker's idle time at the end. Returns a future (``.result()``).
        A keyword argument that the last :meth:`map_chained` shared (the same object) is not sent again."""
        shared = self._chained
        kwargs = {k: shared[k][1] if k in shared and shared[k][0] is v else v for k, v in kwargs.items()}
        return self.client.submit(self._fn(fn), *args, pure=False, priority=0, **kwargs)

    def describe(self) -> dict:
        """Where the work runs: the scheduler, the workers and their threads (the report's provenance)."""
        info = self.client.scheduler_info()
        ws = info.get("workers", {})
        return {"kind": "dask", "scheduler": "local cluster" if self.cluster is not None else info.get("address"),
                "workers": len(ws), "threads_per_worker": sorted({int(w.get("nthreads", 0)) for w in ws.values()})}

    def map_ordered(self, fn, tasks: list, **shared) -> list[Any]:
        scattered = {k: self.client.scatter(v, broadcast=True) for k, v in shared.items()}
        futures = [self.client.submit(self._fn(fn), t, pure=False, **scattered) for t in tasks]
        return self.client.gather(futures)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


@contextmanager
def compute_threads(n: int | None):
    """Torch's intra-op threads and the BLAS libraries' threads (threadpoolctl) set to ``n`` for the
    computations behind figures, then restored: a float32 product or SVD splits its sums by thread, so
    the same ``n`` everywhere (in-process, a Dask worker, a process started with OMP_NUM_THREADS=1) gives
    the same numbers."""
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    if not n:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        with threadpool_limits(limits=int(n)):  # BLAS and OpenMP (torch's MKL runs on OpenMP)
            yield
    finally:
        torch.set_num_threads(old)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def relax_malloc_trim() -> bool:
    """On a Dask worker started by a nanny: undo what its ``MALLOC_TRIM_THRESHOLD_=65536`` does to torch.

    Dask's nanny starts each worker with that variable (to hand freed memory back to the OS). glibc then
    stops adapting its mmap threshold, so every buffer above 128 KiB (each batch of faces, each
    activation) is mapped, page-faulted and unmapped again: measured here, one row's attacks took 104 s
    on such a worker against 55 s on a worker started without the variable and 52 s in-process. Raising
    the mmap threshold to 32 MiB and the trim threshold to 64 MiB in the running process (mallopt) gives
    the time back; figures do not change (allocation is not arithmetic). Returns whether it did."""
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") is None or getattr(relax_malloc_trim, "done", False):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): the variable means nothing there
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 64 << 20) == 1
    relax_malloc_trim.done = ok
    return ok


def worker_name() -> str:
    """This Dask worker's address (or "driver" outside a worker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "driver"


def open_executor(spec: str | None) -> DaskExecutor | None:
    kind, addr = parse(spec)
    return DaskExecutor(addr) if kind == "dask" else None


# ---------------------------------------------------------------- worker side


def _checked(expected: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on a worker whose kernels' level is ``expected`` (else a ParameterError)."""
    kernels.require(expected)
    return fn(*args, **kwargs)


def _model(spec: str):
    if spec not in _MODELS:
        enc = get_encoder(spec)
        if hasattr(enc, "n_jobs"):
            enc.n_jobs = 1  # one worker process per core already
        _MODELS[spec] = enc
    return _MODELS[spec]


def _aligner():
    if "aligner" not in _MODELS:
        _MODELS["aligner"] = default_aligner()
    return _MODELS["aligner"]


def embed_batch(task: dict) -> dict:
    """One batch of photos on a worker: decode, detect (where the landmarks are not known), align,
    embed with each encoder the batch needs. Returns positions, new landmarks (or the reason a
    photo is unusable) and embeddings; never the pixels."""
    relax_malloc_trim()
    idx, faces, new_lm = [], [], {}
    for i, src, lm in task["items"]:
        try:
            rgb = read_image(src) if isinstance(src, str) else np.asarray(src, np.uint8)
            if lm is None:
                lm = _aligner().landmarks(rgb)
                new_lm[i] = lm
            faces.append(align(rgb, lm))
            idx.append(i)
        except ImageError as exc:
            new_lm[i] = str(exc)
    emb = {}
    if faces:
        F = np.stack(faces)
        for eid, (spec, need) in task["encoders"].items():
            rows = [j for j, i in enumerate(idx) if i in need]
            if rows:
                emb[eid] = ([idx[j] for j in rows], _model(spec).embed(F[rows]))
    return {"idx": idx, "new_lm": new_lm, "emb": emb, "n": len(task["items"])}
