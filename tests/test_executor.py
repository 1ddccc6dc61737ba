"""--executor dask: photos embedded on Dask workers and rows evaluated as tasks give the same report."""

from __future__ import annotations

import pytest

from facepii.errors import ParameterError
from facepii.executor import parse


def test_executor_specs():
    assert parse(None) == ("local", None) and parse("local") == ("local", None)
    assert parse("dask") == ("dask", None)
    assert parse("dask:tcp://10.0.0.1:8786") == ("dask", "tcp://10.0.0.1:8786")
    with pytest.raises(ParameterError, match="--executor must be"):
        parse("spark")


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
