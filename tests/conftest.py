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


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected: only when the test will run
def pytest_collection_modifyitems(session, config, items):
    """The emulated-CPU check (tests/test_golden.py) runs for minutes on one core: start it as soon as the
    session knows it will run, run the tests that compute on one thread first beside it (the golden report,
    then the executor test, whose lone run trains its face model on one thread), and compare the emulated
    digests last, when the probe has long finished."""
    from test_golden import EMULATED_TEST, GOLDEN_TEST, start_emulated

    if not config.option.collectonly and any(item.name == EMULATED_TEST for item in items):
        config._facepii_emulated = start_emulated()
        early = (GOLDEN_TEST, ONE_THREAD_EXECUTOR_TEST)
        first = [i for n in early for i in items if i.name == n]
        last = [i for i in items if i.name == EMULATED_TEST]
        items[:] = first + [i for i in items if i.name not in (*early, EMULATED_TEST)] + last


def pytest_unconfigure(config):
    got = getattr(config, "_facepii_emulated", None)
    if got is not None and got[0].poll() is None:
        got[0].kill()
        got[0].communicate()
