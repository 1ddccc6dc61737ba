import json

import pytest

from helpers import embeddings_npz, run_cli


@pytest.fixture
def npz(tmp_path):
    return embeddings_npz(tmp_path / "emb.npz")


def test_evaluate_on_embeddings_prints_table_and_writes_json(npz, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, stdout, _ = run_cli(["evaluate", "-d", f"embeddings:{npz}", "--json", out, "-q",
                               "--bootstrap", "200"], capsys)
    assert code == 0
    assert "TAR@1e-3" in stdout and "none" in stdout and "images used: 120" in stdout
    rep = json.loads(out.read_text())
    assert rep["schema"] == "facepii.report/1"
    row = rep["rows"][0]
    assert row["defense"] == "none" and row["epsilon"] is None
    for key in ("tar@far=1e-2", "tar@far=1e-3", "eer", "auc", "rank1"):
        v = row["utility"][key]
        assert 0 <= v["value"] <= 1 and len(v["ci95"]) == 2
    # 120 vectors of 30 people: 6,960 impostor pairs cannot support FMR 1e-4 (0.7 scores above it)
    assert row["pairs"]["impostor"] == 6960 and row["utility"]["tar@far=1e-4"]["value"] is None
    assert rep["dataset"]["n_identities"] == 30 and rep["seed"] == 0


def test_same_seed_same_report(npz, tmp_path, capsys):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    for path, seed in ((a, 3), (b, 3), (c, 4)):
        assert run_cli(["evaluate", "-d", f"embeddings:{npz}", "--json", path, "-q", "--seed", seed,
                        "--bootstrap", "200", "--max-identities", "20"], capsys)[0] == 0
    ra, rb, rc = (json.loads(p.read_text())["rows"] for p in (a, b, c))
    assert ra == rb
    assert ra != rc


@pytest.mark.parametrize("args, needle", [
    (["--encoder", "sfce"], "unknown encoder 'sfce'. Did you mean 'sface'?"),
    (["--defense", "nosie"], "unknown defense 'nosie'"),
    (["--param", "sigma"], "write KEY=V1,V2"),
    (["--param", "bogus=1"], "--param bogus: no listed defense has it"),
    (["--dataset", "folder:/no/such/dir"], "no such folder"),
    (["--dataset", "lfw:/proc/none"], None),
])
def test_user_errors_one_line_exit_2(args, needle, npz, capsys, monkeypatch):
    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "fetch_lfw_people",
                        lambda **k: (_ for _ in ()).throw(OSError("offline")))
    base = ["evaluate", "-q"] + ([] if "--dataset" in args else ["-d", f"embeddings:{npz}"])
    code, stdout, stderr = run_cli(base + args, capsys)
    assert code == 2, (stdout, stderr)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    if needle:
        assert needle in lines[0]


def test_option_validation_exit_2(capsys):
    code, _, err = run_cli(["evaluate", "--max-identities", "0"], capsys)
    assert code == 2 and "max-identities" in err


def test_embeddings_width_mismatch(npz, capsys):
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz}", "-e", "sface"], capsys)
    assert code == 2 and "64-d but encoder sface is 128-d" in err


def _listed(kind: str) -> list[str]:
    import attacks
    import defenses
    from facepii.datasets import LOADERS
    from facepii.registry import encoders

    return {"encoders": encoders.names, "defenses": defenses.registry.names, "attacks": attacks.registry.names,
            "oracles": attacks.oracle_registry.names, "datasets": lambda: [f"{k}:" for k in LOADERS]}[kind]()


@pytest.mark.parametrize("cmd", ["encoders", "defenses", "datasets", "attacks", "oracles"])
def test_listings_name_everything_registered_with_its_help(cmd, capsys):
    code, out, _ = run_cli([cmd], capsys)
    assert code == 0
    names = _listed(cmd)
    assert len(names) >= 2  # the built-in ones at least (2 oracle attacks, 4 or more of the rest)
    body = out.splitlines()[1:]  # below the header
    for name in names:
        line = next((ln for ln in body if ln.split()[0].startswith(name.rstrip(":"))), None)
        assert line is not None, f"{cmd}: {name} is not listed"
        assert len(line.split()) >= 3, f"{cmd}: {name} is listed without its help: {line!r}"


def test_help_explains(capsys):
    code, out, _ = run_cli(["evaluate", "--help"], capsys)
    assert code == 0
    for opt in ("--dataset", "--encoder", "--defense", "--param", "--max-identities", "--seed", "--json"):
        assert opt in out
