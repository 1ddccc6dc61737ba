"""Shared fixtures. Integration tests read ../shared/datasets/celeba-subset in place and
skip, with the reason, where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from facepii import progress

from helpers import CELEBA, MOBILEFACENET

progress.set_enabled(False)


def celeba_or_skip() -> Path:
    if not (CELEBA / "identity_CelebA.txt").is_file():
        pytest.skip(f"test data absent: {CELEBA} (see ../shared/datasets/README.md)")
    return CELEBA


@pytest.fixture(scope="session")
def celeba() -> Path:
    return celeba_or_skip()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One embedding cache for the whole test session (tests share computed embeddings)."""
    return tmp_path_factory.mktemp("facepii-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, tmp_path):
    """No test touches the user's real cache folder."""
    monkeypatch.setenv("FACEPII_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.delenv("FACEPII_DATASET", raising=False)



def mobilefacenet_or_skip() -> Path:
    if not MOBILEFACENET.is_file():
        pytest.skip(f"test model absent: {MOBILEFACENET} (see ../shared/models/README.md)")
    return MOBILEFACENET


@pytest.fixture(scope="session")
def mobilefacenet() -> Path:
    return mobilefacenet_or_skip()


ONE_THREAD_EXECUTOR_TEST = "test_rows_on_workers_and_two_runs_on_one_cache_give_a_lone_runs_report"


@pytest.fixture(scope="session")
def golden_cache(tmp_path_factory) -> Path:
    """The golden report's cache (tests/test_golden.py). Its run starts from nothing and fills it; the
    executor test, which runs the golden report's split on one thread too, starts from a copy of it instead
    of training the same attacker's face model a second time (the same bytes in any process:
    tests/test_attacks.py)."""
    return tmp_path_factory.mktemp("golden-cache")


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected: only when the test will run
def pytest_collection_modifyitems(session, config, items):
    """The tests that compute on one thread run first, the golden report and then the executor test (which
    reuses the golden run's face model). The emulated-CPU check (tests/test_golden.py) runs for minutes on
    one core: when it is collected, it starts as soon as the session knows it will run, beside those two,
    and its digests are compared last, when the probe has long finished."""
    from test_golden import EMULATED_TEST, GOLDEN_TEST, start_emulated

    early = (GOLDEN_TEST, ONE_THREAD_EXECUTOR_TEST)
    first = [i for n in early for i in items if i.name == n]
    last = [i for i in items if i.name == EMULATED_TEST]
    items[:] = first + [i for i in items if i.name not in (*early, EMULATED_TEST)] + last
    if not config.option.collectonly and last:
        config._facepii_emulated = start_emulated()


def pytest_unconfigure(config):
    got = getattr(config, "_facepii_emulated", None)
    if got is not None and got[0].poll() is None:
        got[0].kill()
        got[0].communicate()
