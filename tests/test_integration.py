"""Real photos, real models: ../shared/datasets/celeba-subset, 20 identities (skipped without it)."""

import json

import numpy as np
import pytest

from facepii.config import EvaluateConfig
from facepii.pipeline import evaluate

from helpers import run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sface_report(celeba, session_cache):
    cfg = EvaluateConfig.from_options(dataset=f"celeba:{celeba}", encoder="sface", max_identities=20, seed=0,
                         cache_dir=str(session_cache), bootstrap=300)
    return evaluate(cfg)


def test_sface_recognises_real_faces(sface_report):
    r = sface_report
    assert r.dataset["n_identities"] == 20 and r.dataset["n_used"] > 300
    u = r.to_dict()["rows"][0]["utility"]
    # measured on all 200 identities: TAR@1e-2 0.90, TAR@1e-3 0.84, EER 6.2%
    assert u["tar@far=1e-2"]["value"] > 0.8
    assert u["eer"]["value"] < 0.12
    assert u["auc"]["value"] > 0.95
    assert u["rank1"]["value"] > 0.8
    lo, hi = u["tar@far=1e-2"]["ci95"]
    assert lo <= u["tar@far=1e-2"]["value"] <= hi


def test_dlib_gives_similar_figures(celeba, session_cache, sface_report):
    cfg = EvaluateConfig.from_options(dataset=f"celeba:{celeba}", encoder="dlib", max_identities=20, seed=0,
                         cache_dir=str(session_cache), bootstrap=300)
    r = evaluate(cfg)
    u, s = r.to_dict()["rows"][0]["utility"], sface_report.to_dict()["rows"][0]["utility"]
    assert u["tar@far=1e-2"]["value"] > 0.8
    assert abs(u["eer"]["value"] - s["eer"]["value"]) < 0.06
    assert r.dataset["n_used"] == sface_report.dataset["n_used"]  # same faces, same alignment


def test_warm_cache_recomputes_nothing(celeba, session_cache, sface_report):
    cfg = EvaluateConfig.from_options(dataset=f"celeba:{celeba}", encoder="sface", max_identities=20, seed=0,
                         cache_dir=str(session_cache), bootstrap=300)
    r = evaluate(cfg)
    stats = r.dataset["embedding_stats"]
    assert stats["computed"] == 0 and stats["detected"] == 0
    assert r.to_dict()["rows"] == sface_report.to_dict()["rows"]


def test_cli_done_when_command(celeba, session_cache, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, stdout, stderr = run_cli(["evaluate", "--dataset", f"celeba:{celeba}", "--max-identities", "20",
                                    "--encoder", "sface", "--defense", "none", "--json", out,
                                    "--cache-dir", session_cache, "-q", "--no-privacy"], capsys)
    assert code == 0, stderr
    assert "TAR@1e-3" in stdout and "skipped" in stdout.lower()
    rep = json.loads(out.read_text())
    assert rep["encoder"]["name"] == "sface" and rep["rows"][0]["defense"] == "none"
    assert {"skipped", "n_used", "n_identities"} <= set(rep["dataset"])


def test_aligned_faces_of_an_extraction(celeba, session_cache):
    from facepii.cache import Cache
    from facepii.datasets import load_dataset, select
    from facepii.encoders import SFaceEncoder
    from facepii.extract import extract

    fs = select(load_dataset(f"celeba:{celeba}"), max_identities=3, seed=1)
    enc = SFaceEncoder()
    ex = extract(fs, [enc], Cache(session_cache))
    faces = ex.aligned(np.arange(5))
    np.testing.assert_allclose(enc.embed(faces), ex.for_encoder(enc)[:5], atol=1e-4)
