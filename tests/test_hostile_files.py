"""Hostile class 1: code and files from untrusted places. facepii reads only inside the folders a user
named, never unpickles, and never deletes or writes through what it did not write.
The hostile corpus is made here, in a temp folder."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from facepii import datasets as ds
from facepii.errors import FacepiiError
from facepii.outputs import OutputError, check_out_dir, write_outputs

from helpers import fake_evaluation, write_folder_dataset

MARKER = Path("/tmp/facepii-hostile-marker")


class Payload:
    """Unpickling this runs code: it creates MARKER."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture(autouse=True)
def _no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a planted file ran code"


@pytest.mark.parametrize("name", ["facemodel-{k}.pt", "facemodel-{k}.safetensors"])
def test_planted_cache_file_never_runs_and_is_retrained(tmp_path, monkeypatch, name):
    from attacks.facemodel import BUDGETS, FaceModel
    from facepii.cache import Cache
    from facepii.reconstructions import AttackerKit, _face_model, face_model_key

    kit = AttackerKit(target=type("T", (), {"name": "t", "version": "1", "embed": None})(), knowledge="white",
                      budget=BUDGETS["quick"], aux_faces=np.zeros((2, 112, 112, 3), np.uint8),
                      aux_embeddings=np.ones((2, 8), np.float32), aux_users=np.array(["a", "b"]), face_model=None,
                      torch_encoder=None, seed=0, device="cpu")
    cache = Cache(tmp_path / "cache")
    key = face_model_key(kit, ["k1", "k2"])
    planted = tmp_path / "cache" / "models" / name.format(k=key)
    planted.parent.mkdir(parents=True)
    planted.write_bytes(pickle.dumps(Payload()))
    class Trained:
        def to_bytes(self):
            return b"new"

    trained = Trained()
    monkeypatch.setattr(FaceModel, "train", classmethod(lambda cls, *a, **k: trained))
    fm, source = _face_model(kit, ["k1", "k2"], cache)
    assert fm is trained
    if name.endswith(".pt"):
        assert source == "trained"
    else:  # a file facepii did not write (no digest of its own): never read as a model
        assert source.startswith("retrained (cache entry unusable: no digest recorded for it")
        assert cache.get_model(f"facemodel-{key}") == (b"new", None)  # the new model replaced it, digest recorded
        planted.write_bytes(b"edited")  # the right name, a digest on record, other content: refused
        assert cache.get_model(f"facemodel-{key}") == (None, "content does not match the digest facepii recorded")


@pytest.mark.parametrize("content", [pickle.dumps(Payload()), b"", b"\x00" * 100, b'{"__metadata__":1}'])
def test_face_model_loader_refuses_anything_but_its_own_tensors(tmp_path, content):
    from attacks.facemodel import FaceModel

    with pytest.raises(ValueError):
        FaceModel.from_bytes(content)


def test_face_model_loader_refuses_wrong_shapes(tmp_path):
    from safetensors.numpy import save

    from attacks.facemodel import FACEMODEL_VERSION, FaceModel

    data = save({"space.mean": np.zeros(10, np.float32), "space.components": np.zeros((2, 10), np.float32),
                 "space.scale": np.ones(2, np.float32)}, metadata={"format": FACEMODEL_VERSION, "d_in": "8"})
    with pytest.raises(ValueError, match="shape"):
        FaceModel.from_bytes(data)


@pytest.mark.parametrize("bad", ["../../../../etc/passwd", "/etc/passwd", "gallery/../../x.png", "recon/evil.sh"])
def test_manifest_cannot_pull_files_from_outside(tmp_path, bad):
    from facepii.outputs import build_study

    report = tmp_path / "report"
    write_outputs(fake_evaluation(), report)
    m = json.loads((report / "lineup/manifest.json").read_text())
    m["gallery"][0][0] = bad
    (report / "lineup/manifest.json").write_text(json.dumps(m))
    with pytest.raises(FacepiiError, match="not a lineup material file"):
        build_study(report, tmp_path / "study")
    assert not (tmp_path / "study" / "share.zip").exists()


def test_manifest_symlink_out_of_the_folder_is_refused(tmp_path):
    from facepii.outputs import build_study

    report = tmp_path / "report"
    write_outputs(fake_evaluation(), report)
    m = json.loads((report / "lineup/manifest.json").read_text())
    target = report / "lineup" / m["gallery"][0][0]
    target.unlink()
    target.symlink_to("/etc/passwd")
    with pytest.raises(FacepiiError, match="not a plain file"):
        build_study(report, tmp_path / "study")


def celeba(root: Path, lines: list[str], files: list[str]) -> Path:
    (root / "img_celeba").mkdir(parents=True)
    for f in files:
        (root / "img_celeba" / f).write_bytes(b"x")
    (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    return root


def test_celeba_list_cannot_name_paths_outside(tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"x")
    root = celeba(tmp_path / "c", [f"{secret} 1", "../secret.jpg 1", "a.jpg 1", "b.jpg 1"], ["a.jpg", "b.jpg"])
    fs = ds.load_celeba(root)
    assert all(str(secret) not in p and ".." not in p for p in fs.paths) and len(fs.paths) == 2
    reasons = [e["reason"] for e in fs.excluded]
    assert sum("names a path" in r for r in reasons) == 2


def test_celeba_link_out_of_the_image_folder_is_excluded(tmp_path):
    root = celeba(tmp_path / "c", ["a.jpg 1", "b.jpg 1", "l.jpg 1"], ["a.jpg", "b.jpg"])
    (root / "img_celeba" / "l.jpg").symlink_to(tmp_path / "outside.jpg")
    (tmp_path / "outside.jpg").write_bytes(b"x")
    fs = ds.load_celeba(root)
    assert len(fs.paths) == 2
    assert any("outside the dataset folder" in e["reason"] for e in fs.excluded)


def test_folder_links_out_of_the_folder_are_excluded(tmp_path):
    root = write_folder_dataset(tmp_path / "faces", n_ids=2, per_id=2)
    outside = tmp_path / "elsewhere"
    write_folder_dataset(outside, n_ids=1, per_id=1)
    (root / "person_00" / "link.png").symlink_to(outside / "person_00" / "img_0.png")
    (root / "linked_person").symlink_to(outside / "person_00")
    fs = ds.load_folder(root)
    assert all(str(outside) not in p for p in fs.paths) and len(fs.paths) == 4
    assert sum("outside the dataset folder" in e["reason"] for e in fs.excluded) == 2


def test_out_never_deletes_a_lineup_folder_it_did_not_write(tmp_path):
    out = tmp_path / "out"
    (out / "lineup").mkdir(parents=True)
    (out / "lineup" / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="no facepii lineup material"):
        check_out_dir(out)
    write_outputs(fake_evaluation(), tmp_path / "own")
    (tmp_path / "own" / "lineup" / "gallery" / "notes.txt").write_text("precious")
    with pytest.raises(OutputError, match="did not write"):
        check_out_dir(tmp_path / "own")
    assert (out / "lineup" / "thesis.tex").read_text() == "precious"
    assert (tmp_path / "own" / "lineup" / "gallery" / "notes.txt").read_text() == "precious"


def test_out_replaces_its_own_lineup_material(tmp_path):
    write_outputs(fake_evaluation(seed=0), tmp_path)
    first = (tmp_path / "lineup" / "recon" / "r00_v000.png").read_bytes()
    write_outputs(fake_evaluation(seed=1), tmp_path)
    assert (tmp_path / "lineup" / "recon" / "r00_v000.png").read_bytes() != first
    assert not list(tmp_path.glob(".lineup-new-*"))


@pytest.mark.parametrize("what", ["lineup", "report.json", "report.html"])
def test_out_refuses_planted_links(tmp_path, what):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / what).symlink_to(victim)
    with pytest.raises(OutputError):
        write_outputs(fake_evaluation(), tmp_path / "out")
    assert victim.read_text() == "keep me"


# ---------------------------------------------------------------- second round: outputs and the dataset


def test_out_inside_the_dataset_is_refused_and_facepii_outputs_are_never_photos(tmp_path, capsys):
    from helpers import run_cli

    data = write_folder_dataset(tmp_path / "data", n_ids=3)
    code, _, err = run_cli(["evaluate", "-q", "-d", f"folder:{data}", "--no-privacy", "--out", data / "out"], capsys)
    assert code == 2 and "inside the dataset folder" in err
    # a report folder someone moved into the dataset: listed as facepii's output, never read as a person
    rep = data / "old-report"
    write_outputs(fake_evaluation(), rep)
    fs = ds.load_folder(data)
    assert "old-report" not in set(fs.labels)
    assert any("facepii's own output" in e["reason"] for e in fs.excluded)


def test_nothing_is_written_through_a_link(tmp_path, capsys):
    from helpers import run_cli

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sface").symlink_to(elsewhere, target_is_directory=True)
    npz = tmp_path / "e.npz"
    np.savez(npz, embeddings=np.random.default_rng(0).normal(size=(20, 8)), labels=np.repeat(np.arange(10), 2))
    code, _, err = run_cli(["evaluate", "-q", "-d", f"folder:{write_folder_dataset(tmp_path / 'd', n_ids=4)}",
                            "--encoder", "sface,dlib", "--out", out], capsys)
    assert code == 2 and "symbolic link" in err and not list(elsewhere.iterdir())
    with pytest.raises(OutputError, match="symbolic link"):
        check_out_dir(out / "sface")
    (out / "irreversibility.png").mkdir()  # a folder where facepii writes a picture: refused before the work
    with pytest.raises(OutputError, match="irreversibility.png"):
        check_out_dir(out)


def test_a_kill_during_the_lineup_swap_leaves_no_debris(tmp_path, monkeypatch):
    """Killed at any point of the swap: the next run finds facepii's own leftovers and removes them, and
    never refuses the folder as one it did not write."""
    import facepii.outputs as O

    out = tmp_path / "out"
    write_outputs(fake_evaluation(), out)
    real_rename = Path.rename
    calls = {"n": 0}

    def killed(self, target):  # the second rename of the swap never happens
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed)
    with pytest.raises(KeyboardInterrupt):
        O.write_material(fake_evaluation(seed=1), out)
    monkeypatch.setattr(Path, "rename", real_rename)
    debris = sorted(p.name for p in out.glob(".lineup-*"))
    assert debris and not (out / "lineup").exists()
    (out / ".report.json.abc123").write_text("half a report")  # a temp file a kill left beside report.json
    check_out_dir(out)                                        # not refused: the debris is facepii's own
    write_outputs(fake_evaluation(seed=2), out)
    assert not list(out.glob(".lineup-*")) and not list(out.glob(".report.json.*"))
    assert (out / "lineup" / "manifest.json").is_file()


@pytest.mark.integration
def test_a_run_writes_only_under_out_and_cache_dir(celeba, mobilefacenet, tmp_path):
    """A job with an ONNX model (onnxruntime), photos (OpenCV) and pictures (matplotlib) under a fresh $HOME,
    $XDG_CACHE_HOME, $XDG_CONFIG_HOME and $TMPDIR: when it ends, no file exists outside --out and --cache-dir
    (onnxruntime's telemetry store and device id, matplotlib's font list would otherwise be written there)."""
    import os
    import subprocess
    import sys

    home, tmp, work = tmp_path / "home", tmp_path / "tmp", tmp_path / "work"
    for d in (home, tmp, work):
        d.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "TMPDIR": str(tmp),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share")}
    for k in ("MPLCONFIGDIR", "FACEPII_CACHE_DIR", "ORT_DISABLE_TELEMETRY"):
        env.pop(k, None)
    res = subprocess.run([sys.executable, "-m", "facepii", "evaluate", "-q", "--dataset", f"celeba:{celeba}",
                          "--max-identities", "3", "--encoder", f"onnx:{mobilefacenet}", "--no-privacy",
                          "--bootstrap", "100", "--cache-dir", str(work / "cache"), "--out", str(work / "out")],
                         cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    outside = [p for d in (home, tmp) for p in d.rglob("*")]
    assert outside == [], f"written outside --out and --cache-dir: {outside}"
    assert sorted(p.name for p in work.iterdir()) == ["cache", "out"]


def test_provenance_reads_git_without_taking_its_lock(monkeypatch, tmp_path):
    """`git status` takes .git/index.lock and may rewrite .git/index unless GIT_OPTIONAL_LOCKS=0."""
    import subprocess

    from facepii import provenance

    (tmp_path / ".git").mkdir()
    seen = []

    def fake(cmd, **kw):
        seen.append((cmd, kw.get("env") or {}))
        return subprocess.CompletedProcess(cmd, 0, stdout="abc\n", stderr="")

    monkeypatch.setattr(provenance.subprocess, "run", fake)
    assert provenance.git_revision(tmp_path) == {"revision": "abc", "edited": True}
    assert len(seen) == 2 and all(env.get("GIT_OPTIONAL_LOCKS") == "0" for _, env in seen)


@pytest.mark.integration
def test_non_utf8_photo_names_and_out_folder(celeba, tmp_path):
    """A photo whose file name is not UTF-8, and an --out folder whose name is not, end in a report (exit 0):
    the score files percent-encode the name's bytes (%E9), the other text files escape them."""
    import shutil
    import subprocess
    import sys

    ids = {}
    for line in (celeba / "identity_CelebA.txt").read_text().splitlines():
        f, i = line.split()
        if (celeba / "img_celeba" / f).is_file():
            ids.setdefault(i, []).append(f)
    chosen = [v[:3] for v in ids.values() if len(v) >= 3][:3]
    root = os.fsencode(tmp_path / "ds")
    for k, files in enumerate(chosen):
        d = os.path.join(root, b"p%d" % k)
        os.makedirs(d)
        for j, f in enumerate(files):
            name = b"caf\xe9_%d.jpg" % j if k == 0 else b"%d.jpg" % j
            shutil.copy(celeba / "img_celeba" / f, os.path.join(d, name))
    out = os.fsdecode(os.fsencode(tmp_path) + b"/out-\xe9")
    # a real process: the arguments reach facepii as the shell gives them (bytes), not through a test runner
    res = subprocess.run([sys.executable, "-m", "facepii", "evaluate", "-q", "--dataset",
                          b"folder:" + root, "--no-privacy", "--bootstrap", "100", "--cache-dir",
                          str(tmp_path / "cache"), "--out", os.fsencode(out)], capture_output=True, timeout=600)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    csv_text = (Path(out) / "scores" / "00-none.csv").read_text(encoding="utf-8")
    assert "caf%E9_0.jpg" in csv_text
    assert json.loads((Path(out) / "report.json").read_text())["rows"]
    (Path(out) / "report.md").read_text(encoding="utf-8")  # valid UTF-8
