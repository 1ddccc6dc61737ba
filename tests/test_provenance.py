"""The report's provenance block: what made it, and whether two reports must agree."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def _npz(path: Path, seed=0, order=None):
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(12), 3)
    E = (rng.normal(size=(12, 16))[lab] + 0.5 * rng.normal(size=(36, 16))).astype(np.float32)
    if order is not None:
        E, lab = E[order], lab[order]
    np.savez(path, embeddings=E, labels=lab)
    return path


def _run(path, seed=0):
    from facepii.config import EvaluateConfig
    from facepii.pipeline import run

    return run(EvaluateConfig.from_options(dataset=f"embeddings:{path}", defenses=["noise"], bootstrap=100,
                                           seed=seed)).report


def test_same_inputs_are_comparable_and_any_change_is_not(tmp_path):
    a = _run(_npz(tmp_path / "a.npz")).extra["provenance"]
    b = _run(_npz(tmp_path / "b.npz")).extra["provenance"]  # the same vectors under another file name
    assert a["comparable"] == b["comparable"] and a["dataset_digest"] == b["dataset_digest"]
    assert a["photos"] == 36 and a["seed"] == 0 and a["models"]["target"].startswith("precomputed@")
    other_seed = _run(_npz(tmp_path / "c.npz"), seed=1).extra["provenance"]
    other_data = _run(_npz(tmp_path / "d.npz", seed=5)).extra["provenance"]
    shuffled = _run(_npz(tmp_path / "e.npz", order=np.random.default_rng(1).permutation(36))).extra["provenance"]
    assert len({a["comparable"], other_seed["comparable"], other_data["comparable"], shuffled["comparable"]}) == 4
    assert other_data["dataset_digest"] != a["dataset_digest"] != shuffled["dataset_digest"]


def test_the_block_names_the_machine_the_code_and_the_time(tmp_path):
    from facepii.report import render

    rep = _run(_npz(tmp_path / "a.npz"))
    pv = rep.extra["provenance"]
    assert pv["machine"]["cores"] >= 1 and pv["machine"]["cpu"]
    assert pv["stage_seconds"]["whole run"] >= max(v for k, v in pv["stage_seconds"].items() if k != "whole run")
    assert any(k.startswith("embed") for k in pv["stage_seconds"])
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists():
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert pv["code"]["git"]["revision"] == head.strip()
    md = render.markdown(rep)
    assert "## Provenance" in md and pv["comparable"] in md and pv["dataset_digest"] in md


def test_a_report_read_back_keeps_its_provenance(tmp_path):
    from facepii.report import Report

    rep = _run(_npz(tmp_path / "a.npz"))
    again = Report.from_dict(rep.to_dict())
    assert again.extra["provenance"] == rep.to_dict()["provenance"]


def test_rates_below_the_lowest_supported_fmr_are_not_estimable(tmp_path):
    """36 vectors of 12 people: 594 impostor pairs support FMR 1e-2 (5.94 scores above the threshold)
    but neither 1e-3 nor 1e-4 (0.59 and 0.06): those are n/a, never a number resting on no score."""
    from facepii.report import render

    rep = _run(_npz(tmp_path / "a.npz"))
    for row in rep.to_dict()["rows"]:
        u = row["utility"]
        assert row["pairs"]["impostor"] == 594
        assert u["tar@far=1e-2"]["value"] is not None and u["eer"]["value"] is not None
        assert u["tar@far=1e-3"]["value"] is None and u["tar@far=1e-4"]["value"] is None
    assert "the lowest FMR they support is 5.1e-03" in render.markdown(rep)


def test_a_report_read_back_with_a_malformed_provenance_still_renders(tmp_path):
    from facepii.report import Report, render

    d = _run(_npz(tmp_path / "a.npz")).to_dict()
    for bad in ([1, 2], {"code": "x", "machine": [1], "models": 3, "stage_seconds": "s", "cache": None}):
        d["provenance"] = bad
        md = render.markdown(Report.from_dict(d))
        assert ("## Provenance" in md) == isinstance(bad, dict)


def test_the_source_digest_sees_an_edit_without_git(tmp_path, monkeypatch):
    """A copy without .git (or without git on PATH) is told apart from the release by its sources' digest."""
    import importlib
    import shutil
    import sys

    from facepii import provenance

    here = provenance.source_digest()
    assert len(here) == 16 and here == provenance.source_digest.__wrapped__()
    import defenses
    copy = tmp_path / "defenses"
    shutil.copytree(Path(defenses.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    fake = type(sys)("defenses")
    fake.__file__ = str(copy / "__init__.py")
    real = importlib.import_module
    monkeypatch.setattr(provenance.importlib, "import_module", lambda n: fake if n == "defenses" else real(n))
    assert provenance.source_digest.__wrapped__() == here  # the same sources elsewhere: the same digest
    (copy / "noise.py").write_text((copy / "noise.py").read_text() + "\n# edited\n")
    assert provenance.source_digest.__wrapped__() != here


def test_a_run_leaves_the_config_it_was_given_as_it_was(tmp_path):
    import copy

    from facepii.config import EvaluateConfig
    from facepii.pipeline import run

    cfg = EvaluateConfig.from_options(dataset=f"embeddings:{_npz(tmp_path / 'e.npz')}", defenses=["noise"],
                                      bootstrap=100).validate()
    before = copy.deepcopy(cfg)
    rep = run(cfg).report
    assert cfg == before and cfg.data.threads is None
    assert rep.settings["threads"] >= 1  # the report records the number the figures used


def test_specs_are_parsed_once_into_typed_fields_and_follow_the_options():
    from facepii.config import EvaluateConfig

    cfg = EvaluateConfig.from_options(encoder="onnx:m.onnx?mean=0,0,0&std=1", judge="dlib, sface",
                                      surrogate=None, defenses=["noise"], params={"sigma": [0.01, 0.1]},
                                      epsilons=[5.0], attacks=["nearest"]).validate()
    s = cfg.specs
    assert s.targets == ("onnx:m.onnx?mean=0,0,0&std=1",) and s.judges == ("dlib", "sface") and s.surrogates == ()
    assert s.grid == (("none", {}), ("noise", {"sigma": 0.01}), ("noise", {"sigma": 0.1}), ("noise", {"epsilon": 5.0}))
    assert cfg.specs is s  # parsed once
    assert cfg.data.dataset is None and cfg.privacy.attacks == ["nearest"]  # from_options built each section
    r = cfg.resolved(7)
    assert r.data.threads == 7 and cfg.data.threads is None and r.specs == s and r.specs is not s
    cfg.privacy.judge = None  # a changed option is parsed again by the next validation
    assert cfg.validate().specs.judges == (None,)


def test_the_rows_get_their_settings_not_the_whole_config():
    import dataclasses

    from facepii.config import EvaluateConfig
    from facepii.rows import RowJob, RowSettings

    def settings(**kw):
        opts = dict(dataset="embeddings:a.npz", defenses=["noise"], attacks=["nearest", "decoder"], seed=3,
                    bootstrap=200, oracle="score", oracle_queries=50, templates_per_victim=[1, 2], key="secret")
        return RowSettings.of(EvaluateConfig.from_options(**{**opts, **kw}).resolved(2))

    s = settings()
    assert (s.seed, s.bootstrap, s.threads, s.key, s.attacks, s.templates_per_victim, s.oracle, s.oracle_queries) \
        == (3, 200, 2, "secret", ("nearest", "decoder"), (1, 2), "score", 50)
    assert [f.name for f in dataclasses.fields(RowJob)] == ["settings", "embedded", "fit_pos", "attacked"]
    # options a row never reads leave its settings as they were; one it reads changes them
    unread = dict(dataset="embeddings:b.npz", cache_dir="elsewhere", judge="dlib", max_identities=9, prior="detail")
    assert settings(**unread) == s
    assert settings(seed=4) != s and settings(scores=0) != s
