"""Hostile classes 3 and 4: values are checked where they enter (no figure from garbage), the cache is
verified on read (bad entries recomputed and counted), and every file under a dataset root is used,
skipped or excluded with a reason (nothing dropped without a word)."""

import os
import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from facepii import datasets as ds
from facepii.errors import DatasetError, EncoderError

from helpers import CountingEncoder, FixedAligner, run_cli, write_folder_dataset


def npz(tmp_path, emb, labels=None, **extra):
    p = tmp_path / "e.npz"
    np.savez(p, embeddings=emb, labels=np.repeat(np.arange(len(emb) // 2), 2) if labels is None else labels, **extra)
    return p


def good(n=20, d=8):
    return np.random.default_rng(0).normal(size=(n, d))


@pytest.mark.parametrize("emb, needle", [
    (np.vstack([np.zeros((1, 8)), good(19)]), "all zeros"),
    (good() + 1j, "real numbers"),
    (np.vstack([np.full((1, 8), 1e39), good(19)]), "beyond float32's range"),
    (np.ones((20, 8)), "point the same way"),
    (good() * 1e-31, "scores of such vectors vanish"),
    (np.vstack([np.full((1, 8), 1e18), good(19)]), "overflow"),
    (np.array([["a"] * 8] * 20), "real numbers"),
])
def test_degenerate_embeddings_are_refused(tmp_path, capsys, emb, needle):
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz(tmp_path, emb)}"], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_a_defense_that_makes_nan_templates_is_an_error(tmp_path, capsys):
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz(tmp_path, good())}", "--defense", "noise",
                            "--param", "sigma=1e39"], capsys)
    assert code == 2 and "NaN or infinite templates" in err


def test_npz_reads_only_its_members_and_says_what_is_wrong(tmp_path):
    import tracemalloc

    p = tmp_path / "big.npz"
    np.savez_compressed(p, embeddings=good(), labels=np.repeat(np.arange(10), 2),
                        unrelated=np.zeros(150_000_000, np.uint8))  # 150 MB inflated, ~150 kB on disk
    assert p.stat().st_size < 2_000_000
    tracemalloc.start()
    fs = ds.load_embeddings(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(fs) == 20 and peak < 50_000_000
    t = tmp_path / "text.npz"
    t.write_text("embeddings,labels\n1,2\n")
    with pytest.raises(DatasetError) as e:
        ds.load_embeddings(t)
    assert "pickle" not in str(e.value) and "not a zip archive" in str(e.value)


def test_tampered_cache_entries_are_recomputed_and_counted(tmp_path):
    from facepii.cache import Cache
    from facepii.extract import extract

    data = ds.load_folder(write_folder_dataset(tmp_path / "faces", n_ids=3, per_id=4))
    first = extract(data, [CountingEncoder()], Cache(tmp_path / "c"), aligner=FixedAligner())
    con = sqlite3.connect(tmp_path / "c" / "facepii-cache.sqlite3")
    keys = [k for (k,) in con.execute("SELECT key FROM embeddings ORDER BY key")]
    con.execute("UPDATE embeddings SET vec = substr(vec, 1, 4) WHERE key = ?", (keys[0],))   # truncated
    fake = np.ones(16, np.float32).tobytes()
    con.execute("UPDATE embeddings SET vec = ? WHERE key = ?", (fake, keys[1]))                # replaced
    lm_key = con.execute("SELECT key FROM landmarks LIMIT 1").fetchone()[0]
    con.execute("UPDATE landmarks SET lm = ? WHERE key = ?", (np.full(10, np.nan).tobytes(), lm_key))
    con.commit()
    con.close()
    enc, al = CountingEncoder(), FixedAligner()
    again = extract(data, [enc], Cache(tmp_path / "c"), aligner=al)
    assert again.stats["cache_rejected"] == 3 and enc.embedded == 2 and al.calls == 1 and len(again.faceset) == 12
    np.testing.assert_allclose(again.embeddings["counting@1"], first.embeddings["counting@1"], rtol=1e-6)


def test_old_cache_without_checksums_is_migrated_and_recomputed(tmp_path):
    from facepii.cache import Cache

    d = tmp_path / "c"
    d.mkdir()
    con = sqlite3.connect(d / "facepii-cache.sqlite3")
    con.executescript("CREATE TABLE landmarks (key TEXT PRIMARY KEY, lm BLOB, reason TEXT);"
                      "CREATE TABLE embeddings (key TEXT PRIMARY KEY, vec BLOB);")
    con.execute("INSERT INTO embeddings VALUES ('k', ?)", (np.ones(4, np.float32).tobytes(),))
    con.commit()
    con.close()
    c = Cache(d)
    assert c.get_embeddings(["k"], 4) == {} and c.rejected == 1
    c.put_embeddings({"k": np.ones(4)})
    assert list(c.get_embeddings(["k"], 4)) == ["k"]


def test_same_photo_under_two_identities_is_used_for_neither(tmp_path):
    from facepii.cache import Cache
    from facepii.extract import extract

    root = write_folder_dataset(tmp_path / "faces", n_ids=3, per_id=3)
    (root / "person_01" / "copy.png").write_bytes((root / "person_00" / "img_0.png").read_bytes())
    (root / "person_00" / "again.png").write_bytes((root / "person_00" / "img_1.png").read_bytes())
    ex = extract(ds.load_folder(root), [CountingEncoder()], Cache(None), aligner=FixedAligner())
    reasons = {s["path"].split("faces/")[1]: s["reason"] for s in ex.skipped}
    assert "under 2 identities" in reasons["person_00/img_0.png"]
    assert "under 2 identities" in reasons["person_01/copy.png"]
    pair = {"person_00/again.png", "person_00/img_1.png"}
    assert len(pair & set(reasons)) == 1 and "duplicate" in reasons[(pair & set(reasons)).pop()]


def test_celeba_photo_listed_under_two_identities(tmp_path):
    root = tmp_path / "c"
    (root / "img_celeba").mkdir(parents=True)
    for f in ("a.jpg", "b.jpg", "c.jpg"):
        (root / "img_celeba" / f).write_bytes(b"x")
    (root / "identity_CelebA.txt").write_text("a.jpg 1\na.jpg 2\nb.jpg 1\nc.jpg 1\nc.jpg 1\n")
    fs = ds.load_celeba(root)
    assert sorted(os.path.basename(p) for p in fs.paths) == ["b.jpg", "c.jpg"]
    reasons = " ".join(e["reason"] for e in fs.excluded)
    assert "listed under 2 identities" in reasons and "listed 2 times" in reasons


def test_float_tiff_is_read_not_called_faceless(tmp_path):
    from facepii.faces import read_image

    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    rgb = read_image(tmp_path / "f.tif")
    assert rgb.dtype == np.uint8 and rgb.max() == 255 and rgb.min() == 0


def onnx_model(path, outputs):
    """A tiny ONNX graph: input data (N, 3, 112, 112); outputs built from it."""
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])
    nodes, outs = [], []
    for name, kind in outputs:
        if kind == "image":
            nodes.append(helper.make_node("Identity", ["data"], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, 112, 112]))
        else:
            nodes.append(helper.make_node("ReduceMean", ["data"], [name], axes=[2, 3], keepdims=0))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3]))
    g = helper.make_graph(nodes, "g", [inp], outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_onnx_models_whose_output_is_no_embedding(tmp_path):
    from facepii.encoders import get_encoder

    img = onnx_model(tmp_path / "img.onnx", [("out", "image")])
    with pytest.raises(EncoderError, match="37632 values per face"):
        get_encoder(f"onnx:{img}")
    multi = onnx_model(tmp_path / "multi.onnx", [("gender", "vec"), ("age", "vec"), ("emb", "vec")])
    with pytest.raises(EncoderError, match="3 outputs.*output=NAME"):
        get_encoder(f"onnx:{multi}")
    enc = get_encoder(f"onnx:{multi}?output=emb")
    assert enc.dim == 3
    with pytest.raises(EncoderError, match="no output 'embedding'"):
        get_encoder(f"onnx:{multi}?output=embedding")


def test_every_file_under_a_folder_dataset_is_accounted_for(tmp_path):
    root = write_folder_dataset(tmp_path / "faces", n_ids=3, per_id=2)
    photo = (root / "person_00" / "img_0.png").read_bytes()
    (root / "loose.png").write_bytes(photo)                         # loose in the root
    (root / "person_01" / "nested").mkdir()
    (root / "person_01" / "nested" / "deep.png").write_bytes(photo)  # nested
    (root / "person_02" / ".hidden.png").write_bytes(photo)          # hidden
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(photo)                   # hidden folder
    (root / "person_02" / "notes.txt").write_text("x")               # not an image
    os.mkfifo(root / "person_02" / "pipe.png")                       # a FIFO named like a photo
    (root / "person_00" / "loop.png").symlink_to(root / "person_00" / "loop.png")  # a link loop
    (root / "README").write_text("x")                                # a file in the root
    fs = ds.load_folder(root)
    reasons = {os.path.relpath(e["path"], root): e["reason"] for e in fs.excluded}
    assert len(fs.paths) == 6
    assert "dataset root" in reasons["loose.png"]
    assert "nested folder" in reasons["person_01/nested/deep.png"]
    assert "hidden" in reasons["person_02/.hidden.png"] and "hidden" in reasons[".cache"]
    assert "not an image" in reasons["person_02/notes.txt"]
    assert "not a regular file" in reasons["person_02/pipe.png"]
    assert "loop" in reasons["person_00/loop.png"]
    assert "not a person's sub-folder" in reasons["README"]
    entries = {os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in files}
    accounted = {os.path.relpath(p, root) for p in fs.paths} | set(reasons)
    assert entries - {".cache/x.png"} <= accounted  # the hidden folder is excluded as a whole


# ---------------------------------------------------------------- class 1: a handful of people


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(2, 8), st.integers(2, 3), st.integers(0, 2 ** 16), st.sampled_from(
    [["noise"], ["biohash"], ["iom", "pca"], ["projection+quantize"]]))
def test_a_handful_of_people_gives_figures_or_says_not_estimable(tmp_path, n_ids, per, seed, defs):
    """2-8 identities with 2-3 photos: every bootstrapped figure is a number or 'not estimable' (None in
    report.json), never a crash; intervals stay inside what the figure can be."""
    from facepii.config import EvaluateConfig
    from facepii.pipeline import run

    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(n_ids), per)
    E = rng.normal(size=(n_ids, 32))[lab] + 0.6 * rng.normal(size=(n_ids * per, 32))
    p = tmp_path / f"e{n_ids}_{per}_{seed}.npz"
    np.savez(p, embeddings=E.astype(np.float32), labels=lab)
    params = {"biohash.bits": 16, "pca.dim": 4}
    params = {k: v for k, v in params.items() if any(k.startswith(d.split("+")[0]) for d in defs)}
    rep = run(EvaluateConfig.from_options(dataset=f"embeddings:{p}", defenses=defs, bootstrap=100, seed=seed,
                                          params={k.split(".")[1] if len(defs) == 1 and "+" not in defs[0] else k: [v]
                                                  for k, v in params.items()})).report.to_dict()
    for row in rep["rows"]:
        for key, fig in row["utility"].items():
            lo, hi = fig["ci95"]
            assert (lo is None) == (hi is None), (key, fig)
            if lo is not None:
                assert lo <= hi and 0 <= lo and hi <= 1, (key, fig)
        iso = row["iso30136"]
        if iso:
            d = iso["unlinkability"]["dsys"]
            assert d["ci95"][0] is None or 0 <= d["ci95"][0] <= d["ci95"][1] <= 1


@pytest.fixture
def tiny_world(tmp_path, monkeypatch):
    """Synthetic photos (a fixed 'face' position), tiny ONNX models as target and judge, a tiny budget."""
    from dataclasses import replace

    import facepii.extract as X
    from attacks import facemodel

    from helpers import tiny_face_model

    al = FixedAligner()
    monkeypatch.setattr(X, "default_aligner", lambda: al)
    monkeypatch.setattr(X, "_default_aligner_version", lambda: al.version)
    monkeypatch.setitem(facemodel.BUDGETS, "quick", replace(
        facemodel.BUDGETS["quick"], components=8, decoder_steps=2, finetune_steps=2, optimize_steps=2, flips=False,
        nes_steps=1, nes_samples=2))
    return (tiny_face_model(tmp_path / "t.onnx", size=64, two_outputs=False),
            tiny_face_model(tmp_path / "j.onnx", size=48, two_outputs=False, seed=3))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(2, 7), st.integers(2, 3), st.integers(0, 1000))
def test_every_stage_with_attacks_on_a_handful_of_people(tmp_path_factory, tiny_world, n_ids, per, seed):
    """Attacks, judges, irreversibility and the score oracle on 2-7 people: figures, or one clear error
    when there are too few people to split into victims and the attacker's own set."""
    from facepii.config import EvaluateConfig
    from facepii.errors import ParameterError
    from facepii.pipeline import run

    t, j = tiny_world
    d = write_folder_dataset(tmp_path_factory.mktemp("d"), n_ids=n_ids, per_id=per, seed=seed)
    cfg = EvaluateConfig.from_options(dataset=f"folder:{d}", encoder=f"onnx:{t}", judge=f"onnx:{j}",
                                      defenses=["biohash"], params={"bits": [8]}, oracle="score", bootstrap=100,
                                      seed=seed, budget="quick", no_cache=True,
                                      attacks=["nearest", "inverse", "decoder", "optimize"])
    if n_ids < 4:
        with pytest.raises(ParameterError, match="at least 4 identities"):
            run(cfg)
        return
    rows = run(cfg).report.to_dict()["rows"]
    assert len(rows) == 2
    for r in rows:
        for block in (r["privacy"], r["privacy_oracle"]):
            assert 0 <= block["rank1"]["value"] <= 1 and block["attack"] in block["per_attack"]
        assert r["iso30136"]["irreversibility"]["per_method"]


# ---------------------------------------------------------------- class 4: no figure from a degenerate model


def _scaled_model(path, scale: float, constant: bool = False):
    """An ONNX 'face model' whose output is multiplied by ``scale`` (0: all zeros), or a constant vector."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(8, 3, 3, 3)).astype(np.float32) / 50
    nodes = [helper.make_node("Conv", ["data", "W"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]), helper.make_node("Flatten", ["p"], ["f"])]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array(scale, np.float32), "s")]
    if constant:
        inits.append(numpy_helper.from_array(np.arange(1, 9, dtype=np.float32), "k"))
        nodes += [helper.make_node("Mul", ["f", "s"], ["z"]), helper.make_node("Add", ["z", "k"], ["embedding"])]
    else:
        nodes.append(helper.make_node("Mul", ["f", "s"], ["embedding"]))
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, 64, 64])],
                          [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 8])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("scale, constant, needle", [(0.0, False, "all zeros"), (0.0, True, "point the same way"),
                                                    (1e-30, False, "vanish or overflow")])
@pytest.mark.parametrize("role", ["encoder", "judge"])
def test_a_model_that_recognises_nobody_gives_no_figure(tmp_path, tiny_world, scale, constant, needle, role):
    from facepii.config import EvaluateConfig
    from facepii.pipeline import run

    t, _ = tiny_world
    bad = _scaled_model(tmp_path / "bad.onnx", scale, constant)
    d = write_folder_dataset(tmp_path / "d", n_ids=5, per_id=3)
    opts = {"encoder": f"onnx:{bad}"} if role == "encoder" else {
        "encoder": f"onnx:{t}", "judge": f"onnx:{bad}", "attacks": ["nearest"]}
    with pytest.raises(EncoderError, match=needle):
        run(EvaluateConfig.from_options(dataset=f"folder:{d}", no_cache=True, bootstrap=100, **opts))


def test_one_vector_under_two_identities_is_used_for_neither(tmp_path):
    from facepii.config import EvaluateConfig
    from facepii.pipeline import run

    E, lab = good(40, 8), np.repeat(np.arange(20), 2)
    E[3] = E[0]  # identity 0's vector listed again under identity 1
    rep = run(EvaluateConfig.from_options(dataset=f"embeddings:{npz(tmp_path, E, lab)}", bootstrap=100)).report
    skipped = rep.dataset["skipped"]
    assert [s["reason"] for s in skipped] == ["the same vector is listed under 2 identities"] * 2
    assert rep.dataset["n_used"] == 36  # and identities 0 and 1, one vector left each, are excluded


def test_a_cached_face_model_with_zeroed_weights_is_retrained(tmp_path):
    import torch

    from attacks.facemodel import BUDGETS
    from facepii.cache import Cache
    from facepii.reconstructions import AttackerKit, _face_model, face_model_key

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (24, 112, 112, 3), dtype=np.uint8)
    E = rng.normal(size=(24, 16)).astype(np.float32)
    from dataclasses import replace

    budget = replace(BUDGETS["quick"], components=8, decoder_steps=3, flips=False)
    kit = AttackerKit(type("T", (), {"name": "t", "version": "1", "embed": None})(), "black", budget, faces, E,
                      np.repeat(np.arange(12), 2).astype(str), None, None, 0, "cpu")
    cache = Cache(tmp_path / "c")
    fm, source = _face_model(kit, ["k"], cache)
    assert source == "trained" and _face_model(kit, ["k"], cache)[1] == "cache"  # a good entry is used
    with torch.no_grad():  # the same entry, its weights zeroed, written with a valid digest (a forged cache)
        for p in fm.decoder.parameters():
            p.zero_()
    key = face_model_key(kit, ["k"])
    cache.put_model(f"facemodel-{key}", fm.to_bytes())
    fm2, source = _face_model(kit, ["k"], cache)
    assert source.startswith("retrained (cache entry unusable: its faces do not depend on the embedding")


def test_attacks_that_use_no_face_model_train_none_and_give_the_same_figures(tmp_path, tiny_world, monkeypatch):
    """`--attack nearest` alone: no attack reads the attacker's face model (Attack.uses_face_model), so none
    is trained (nor its built-in prior); the report says so, and nearest's figures are those of a run that
    trained one for another attack."""
    from attacks import facemodel
    from facepii.config import EvaluateConfig
    from facepii.pipeline import run

    t, j = tiny_world
    d = write_folder_dataset(tmp_path / "d", n_ids=6, per_id=3, seed=1)

    def report(attacks):
        return run(EvaluateConfig.from_options(dataset=f"folder:{d}", encoder=f"onnx:{t}", judge=f"onnx:{j}",
                                               defenses=["noise"], params={"sigma": [0.1]}, bootstrap=100, seed=1,
                                               budget="quick", no_cache=True, attacks=attacks)).report.to_dict()

    both = report(["nearest", "decoder"])
    assert both["attacker"]["face_model"] == "trained"

    def no_training(*a, **k):
        raise AssertionError("a face model was trained for attacks that use none")

    monkeypatch.setattr(facemodel.FaceModel, "train", no_training)
    alone = report(["nearest"])
    assert alone["attacker"]["face_model"] == "not trained: no attack of this run uses one (nearest)"
    assert alone["attacker"]["prior"] == {"from": "not used: no face model"}
    for a, b in zip(both["rows"], alone["rows"]):
        assert a["privacy"]["per_attack"]["nearest"] == b["privacy"]["per_attack"]["nearest"]
        assert a["utility"] == b["utility"]
    with pytest.raises(AssertionError, match="face model was trained"):
        report(["nearest", "decoder"])
