"""The examples and docs stay true: the plug-in loads through its entry point, the reference
is what the registries say, the example configs parse."""

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, run_cli


@pytest.fixture
def plugin_installed(tmp_path, monkeypatch):
    """Install examples/custom-defense the way pip would expose it: module + dist-info entry points."""
    from facepii.registry import defenses as reg

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(ROOT / "examples/custom-defense/facepii_rotation.py", site)
    info = site / "facepii_rotation-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: facepii-rotation\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[facepii.defenses]\nrotation = facepii_rotation:Rotation\n")
    monkeypatch.syspath_prepend(str(site))
    reg.names()  # load the built-ins first, so the restore below restores them
    saved = dict(reg._entries)
    monkeypatch.setattr(reg, "_loaded", False)
    yield reg
    reg._entries.clear()
    reg._entries.update(saved)
    reg._loaded = True
    sys.modules.pop("facepii_rotation", None)


def test_custom_defense_plugs_in_through_its_entry_point(plugin_installed, tmp_path, capsys):
    code, out, _ = run_cli(["defenses"], capsys)
    assert code == 0 and "rotation" in out and "entry point (facepii-rotation)" in out
    rng = np.random.default_rng(0)
    lab = np.repeat(np.arange(20), 3)
    p = tmp_path / "e.npz"
    np.savez(p, embeddings=rng.normal(size=(20, 32))[lab] + rng.normal(size=(60, 32)), labels=lab)
    import json

    code, out, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{p}", "--defense", "rotation",
                              "--bootstrap", "100", "--json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[1]["defense"] == "rotation"
    # a rotation keeps every cosine: no utility cost at all
    assert rows[1]["utility"]["eer"]["value"] == pytest.approx(rows[0]["utility"]["eer"]["value"], abs=1e-6)


def test_reference_doc_is_generated_from_the_registries():
    from facepii.docgen import reference

    assert (ROOT / "docs/reference.md").read_text() == reference(), \
        "docs/reference.md is stale: python -m facepii.docgen > docs/reference.md"


def test_example_gate_config_parses():
    from facepii.gate import evaluate_config, load_config

    conf = load_config(ROOT / "examples/facepii.toml")
    cfg = evaluate_config(conf["evaluate"])
    assert cfg.protect.defenses == ["noise"] and cfg.privacy.budget == "quick"
    assert conf["gate"]["max_leakage_ratio"] == 4.0


def test_readme_and_ci_agree():
    readme = (ROOT / "README.md").read_text()
    assert "<!-- ci:install -->" in readme and "<!-- ci:test -->" in readme
    assert "block install" in (ROOT / ".ci/run").read_text()


def test_docs_link_targets_exist():
    import re

    for md in list((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", md.read_text()):
            assert (md.parent / target).exists(), f"{md.name} links to missing {target}"


def test_vendor_script_usage_error():
    import subprocess

    r = subprocess.run(["bash", str(ROOT / "examples/vendor_check.sh")], capture_output=True, text=True)
    assert r.returncode == 2 and "MODEL.onnx PHOTO_FOLDER" in r.stdout


@pytest.mark.slow
@pytest.mark.integration
def test_the_python_api_example_runs_and_prints_what_its_report_holds(celeba, session_cache, tmp_path):
    """examples/python_api.py as a user runs it (its own process). It shares the session's cache: its 60
    identities, split and budget are those of test_attacks' slow test, so whichever runs first trains the
    attacker's face model and the other reuses it."""
    import json
    import os
    import subprocess

    env = {**os.environ, "FACEPII_CACHE_DIR": str(session_cache)}
    r = subprocess.run([sys.executable, str(ROOT / "examples/python_api.py"), f"celeba:{celeba}"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "python-api-report.json").read_text(encoding="utf-8"))
    rows = rep["rows"]
    assert [(x["defense"], x["params"]) for x in rows] == [("none", {}), ("noise", {"sigma": 0.05}),
                                                           ("noise", {"sigma": 0.2})]
    printed = [ln for ln in r.stdout.splitlines() if "TAR@1e-3" in ln and "rank-1 re-identification" in ln]
    assert len(printed) == 3
    for line, row in zip(printed, rows):  # each line reads the typed estimates the report file holds
        assert f"TAR@1e-3 {row['utility']['tar@far=1e-3']['value']:.3f}" in line
        assert f"rank-1 re-identification {row['privacy']['rank1']['value']:.2f}" in line
        assert line.endswith(f"worst attack {row['privacy']['attack']}")
    assert rep["split"]["victims"] == 30 and "threat model: " in r.stdout
    assert "rank-1" in r.stdout.split("threat model:")[0]  # the rendered report came first


def test_example_scripts_compile():
    for p in Path(ROOT / "examples").rglob("*.py"):
        compile(p.read_text(), str(p), "exec")
