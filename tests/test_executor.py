"""--executor dask: photos embedded on Dask workers and rows evaluated as tasks give the same report."""

from __future__ import annotations

import os

import pytest

from facepii.errors import ParameterError
from facepii.executor import parse, relax_malloc_trim


def test_executor_specs():
    assert parse(None) == ("local", None) and parse("local") == ("local", None)
    assert parse("dask") == ("dask", None)
    assert parse("dask:tcp://10.0.0.1:8786") == ("dask", "tcp://10.0.0.1:8786")
    assert parse("dask:10.0.0.1:8786") == ("dask", "10.0.0.1:8786")
    with pytest.raises(ParameterError, match="--executor must be"):
        parse("spark")
    for scheme in ("tls", "ucx", "inproc"):
        with pytest.raises(ParameterError, match="tcp:// only"):
            parse(f"dask:{scheme}://10.0.0.1:8786")


def _listener(answer: bytes | None):
    """A TCP server on a free local port that accepts every connection and then says nothing (answer None) or
    sends ``answer`` and closes."""
    import socket
    import threading

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)
            if answer is not None:
                try:
                    conn.sendall(answer)
                finally:
                    conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, held


@pytest.mark.parametrize("answer, says", [(None, "no Dask scheduler answered|cannot reach"),
                                          (b"HTTP/1.1 200 OK\r\n\r\nnot dask" * 50, "cannot reach")])
def test_an_address_that_is_not_a_dask_scheduler_is_one_line(monkeypatch, answer, says):
    """A listener that accepts and never answers used to wait until killed; one that answers garbage ended in an
    internal error. Both are one line now, within the connection's time-out (FACEPII_DASK_TIMEOUT)."""
    pytest.importorskip("distributed")
    import gc
    import threading

    from distributed import Client

    from facepii.executor import DaskExecutor

    monkeypatch.setenv("FACEPII_DASK_TIMEOUT", "3")
    srv, held = _listener(answer)
    before = {id(o) for o in gc.get_objects() if isinstance(o, Client)}
    try:
        with pytest.raises(ParameterError, match=says):
            DaskExecutor(f"tcp://127.0.0.1:{srv.getsockname()[1]}")
    finally:
        srv.close()
        for c in held:
            c.close()
    # the half-made Client is closed by the thread that made it, once its connection ends (here: the listener
    # closed). Left to a garbage collection, its __del__ ran inside the next LocalCluster's start
    # (test_a_scheduler_without_workers...) and waited for ever on the lock that start held.
    for th in [th for th in threading.enumerate() if th.name == "facepii-dask-connect"]:
        th.join(60)  # ends with its connection: an event, not a clock
        assert not th.is_alive()
    made = [o for o in gc.get_objects() if isinstance(o, Client) and id(o) not in before]
    assert made and all(o.status == "closed" for o in made), [o.status for o in made]


def test_a_scheduler_without_workers_is_one_line(monkeypatch):
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    from facepii.executor import DaskExecutor

    monkeypatch.setenv("FACEPII_DASK_TIMEOUT", "3")
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        with pytest.raises(ParameterError, match="has no worker"):
            DaskExecutor(cluster.scheduler_address)


def test_a_worker_started_by_dasks_nanny_gets_glibcs_adaptive_malloc_back(monkeypatch):
    import ctypes.util

    monkeypatch.setattr(relax_malloc_trim, "done", False, raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert relax_malloc_trim() is False  # not a nanny's worker: nothing to undo
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    if ctypes.util.find_library("c") is None or os.uname().sysname != "Linux":
        pytest.skip("mallopt is glibc's (Linux)")
    assert relax_malloc_trim() is True
    assert relax_malloc_trim() is False  # once per process


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="this OS has no CPU affinity")
def test_a_process_pinned_to_one_core_sizes_its_pools_for_one():
    from facepii.cpus import usable_cpus
    from facepii.dlib_encoder import DlibEncoder

    cores = os.sched_getaffinity(0)
    assert usable_cpus() == len(cores)
    try:
        os.sched_setaffinity(0, {min(cores)})  # as `taskset -c 0` or a batch scheduler's cpuset does
        assert usable_cpus() == 1
        assert DlibEncoder().n_jobs == 1  # one dlib process, not one per core of the machine
    finally:
        os.sched_setaffinity(0, cores)
    assert usable_cpus() == len(cores)


def test_what_goes_to_a_worker_pickles_and_computes_the_same(tmp_path):
    """The attacker's kit and the judges travel to Dask workers pickled: ONNX encoders (their session
    reopened from the same file, its digest checked), the torch copy of the target (its graph rebuilt),
    the face model (as safetensors bytes) and the black-box query counter compute what the originals do."""
    import pickle

    import numpy as np
    import torch

    from attacks.facemodel import FaceModel, FaceSpace, build_decoder
    from facepii.encoders import get_encoder
    from facepii.errors import EncoderError
    from facepii.torch_onnx import QueryCounter, torch_encoder_for

    from helpers import tiny_face_model

    path = tiny_face_model(tmp_path / "m.onnx", two_outputs=False)
    enc = get_encoder(f"onnx:{path}")
    faces = np.random.default_rng(0).integers(0, 255, (6, 112, 112, 3), dtype=np.uint8)
    enc2 = pickle.loads(pickle.dumps(enc))
    assert np.array_equal(enc.embed(faces), enc2.embed(faces)) and enc2.version == enc.version
    t = torch_encoder_for(enc, faces)
    t2 = pickle.loads(pickle.dumps(t))
    assert np.array_equal(t.embed(faces), t2.embed(faces)) and t2.check == t.check
    q = pickle.loads(pickle.dumps(QueryCounter(enc)))
    assert np.array_equal(q.embed(faces), enc.embed(faces)) and q.queries == 6
    rng = np.random.default_rng(1)
    D = 112 * 112 * 3
    space = FaceSpace(rng.random(D), np.linalg.qr(rng.normal(size=(D, 3)))[0].T, np.ones(3))
    torch.manual_seed(0)
    fm = FaceModel(space, build_decoder(space, 16).eval(), 16)
    E = rng.normal(size=(4, 16)).astype(np.float32)
    assert np.array_equal(pickle.loads(pickle.dumps(fm)).reconstruct(E), fm.reconstruct(E))
    # a worker whose model file is another file than the driver's refuses it
    data = pickle.dumps(enc)
    tiny_face_model(path, two_outputs=False, seed=5)
    with pytest.raises(EncoderError, match="another file than the driver's"):
        pickle.loads(data)


@pytest.mark.integration
def test_same_figures_with_and_without_dask(celeba, session_cache, tmp_path):
    distributed = pytest.importorskip("distributed")
    from facepii.config import EvaluateConfig
    from facepii.pipeline import run

    def cfg(executor, cache):  # the 20 identities the integration tests embed into the session's cache
        return EvaluateConfig.from_options(dataset=f"celeba:{celeba}", max_identities=20, seed=0,
                                           defenses=["noise", "biohash", "projection"], bootstrap=200,
                                           cache_dir=str(cache), executor=executor)

    local = run(cfg("local", session_cache)).report
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote = run(cfg(f"dask:{cluster.scheduler_address}", tmp_path / "dask-cache")).report
    assert remote.to_dict()["rows"] == local.to_dict()["rows"]  # every figure, interval and histogram
    assert remote.dataset["skipped"] == local.dataset["skipped"]
    st = remote.dataset["embedding_stats"]
    assert st["computed"] == st["items"] - len(remote.dataset["skipped"]) - st["cached"] > 0
    # the workers' results went into the driver's cache: a local run there recomputes nothing
    again = run(cfg("local", tmp_path / "dask-cache")).report
    assert again.dataset["embedding_stats"]["computed"] == 0 and again.to_dict()["rows"] == local.to_dict()["rows"]


def _comparable(report) -> str:
    """The report's JSON without what may differ between equal runs: timings, machine, executor, cache hits
    (``report``: a Report, or the path of a report.json written by the CLI)."""
    import json

    if isinstance(report, (str, os.PathLike)):
        d = json.loads(open(report, encoding="utf-8").read())
        d.get("settings", {}).pop("out", None)
        d.get("settings", {}).pop("json", None)
    else:
        d = json.loads(report.to_json())
    d.pop("provenance", None)
    d["settings"].pop("executor", None)  # where it ran (the provenance says how)
    d["settings"].pop("scores", None)    # what --out would write besides the report
    d["dataset"].pop("embedding_stats", None)
    d.get("attacker", {}).pop("face_model", None)  # "trained" or "cache": where the same model came from
    return json.dumps(d, sort_keys=True)


@pytest.mark.slow
@pytest.mark.integration
def test_rows_on_workers_and_two_runs_on_one_cache_give_a_lone_runs_report(celeba, tmp_path, golden_cache):
    """One small evaluation with attacks (the golden report's 12 people and split, two attacks, one
    thread), four ways, each against a lone in-process run:

    - on 2 Dask workers (a fresh cache: photos embedded and rows attacked on the workers),
    - as two `facepii evaluate` processes started together on one fresh --cache-dir (then every entry of
      that cache verifies),
    - on 1 Dask worker with that shared cache (warm);

    the report JSON is byte-identical each time, timings and where it ran aside. The lone run starts from
    the golden run's cache where that test ran first in this session (conftest.py orders it so): its
    embeddings and the attacker's face model were computed by another process, under an environment that
    asked for other kernels."""
    distributed = pytest.importorskip("distributed")
    import shutil
    import subprocess
    import sys

    import numpy as np

    from facepii.cache import Cache
    from facepii.config import EvaluateConfig
    from facepii.pipeline import run

    opts = dict(max_identities=12, defenses=["noise"], params={"sigma": [0.05]},
                attacks=["nearest", "decoder"], budget="quick", bootstrap=200, threads=1, seed=0)

    def cfg(executor, cache):
        return EvaluateConfig.from_options(dataset=f"celeba:{celeba}", cache_dir=str(cache), executor=executor,
                                           **opts)

    from_golden = any(golden_cache.iterdir())
    if from_golden:
        shutil.copytree(golden_cache, tmp_path / "lone-cache")
    local = run(cfg("local", tmp_path / "lone-cache"))
    want = _comparable(local.report)
    if from_golden:  # the golden run's face model, read back: the same cache key in another process
        assert local.report.extra["attacker"]["face_model"] == "cache"
    assert local.report.rows[1].privacy is not None
    assert local.report.extra["provenance"]["executor"] == {"kind": "in-process", "threads": 1}

    # fresh caches for the other runs but for the attacker's face model, which the driver trains or reads
    # in every mode (the same model, byte for byte, in any process: tests/test_attacks.py; copied from the
    # lone run's cache to keep this test within CI's time)
    lone = Cache(tmp_path / "lone-cache")
    for folder in ("dask-cache", "shared-cache"):
        fresh = Cache(tmp_path / folder)
        for (name,) in lone._db.execute("SELECT name FROM models").fetchall():
            fresh.put_model(name, lone.get_model(name)[0])
        fresh.close()
    lone.close()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        two = run(cfg(f"dask:{cluster.scheduler_address}", tmp_path / "dask-cache"))
    assert two.report.dataset["embedding_stats"]["computed"] > 0  # the photos were embedded on the workers
    assert _comparable(two.report) == want
    where = two.report.extra["provenance"]["executor"]
    assert where["kind"] == "dask" and where["workers"] == 2 and where["threads"] == 1
    assert set(where["rows"]) == {r.label for r in two.report.rows}
    assert all(w.startswith("tcp://") for w in where["rows"].values())
    for k, faces in local.reconstructions.items():
        assert np.array_equal(two.reconstructions[k], faces)

    shared = tmp_path / "shared-cache"
    args = [sys.executable, "-m", "facepii", "evaluate", "-q", "--dataset", f"celeba:{celeba}",
            "--max-identities", "12", "--defense", "noise", "--param", "sigma=0.05",
            "--attack", "nearest,decoder", "--budget", "quick", "--bootstrap", "200", "--threads", "1",
            "--seed", "0", "--cache-dir", str(shared)]
    procs = [subprocess.Popen([*args, "--json", str(tmp_path / f"run{i}.json")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=1200)
        assert p.returncode == 0, err[-2000:]
    for i in range(2):
        assert _comparable(tmp_path / f"run{i}.json") == want
    c = Cache(shared)
    v = c.verify()
    c.close()
    assert v["bad"] == [] and v["models"] >= 1 and v["embeddings"] > 0 and v["landmarks"] > 0

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        one = run(cfg(f"dask:{cluster.scheduler_address}", shared))
    assert _comparable(one.report) == want
    assert one.report.dataset["embedding_stats"]["computed"] == 0
