"""Attack contract on synthetic faces (fast), and the real thing on the shared CelebA subset (slow)."""

from dataclasses import replace

import numpy as np
import pytest

import attacks
import defenses
from attacks.base import RowCache, ThreatModel
from attacks.facemodel import BUDGETS, FaceModel
from facepii.encoders import SFaceEncoder

TINY = replace(BUDGETS["quick"], name="tiny", components=12, decoder_steps=3, finetune_steps=2,
               optimize_steps=2, flips=False, nes_steps=1, nes_samples=2)


def synthetic_faces(n, seed=0):
    """Smooth random images (not faces: the contract does not need faces)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(n, 14, 14, 3)).astype(np.uint8)
    return np.stack([cv2.resize(s, (112, 112), interpolation=cv2.INTER_CUBIC) for s in small])


@pytest.fixture(scope="module")
def sface():
    return SFaceEncoder()


@pytest.fixture(scope="module")
def world(sface):
    from facepii.torch_onnx import torch_encoder_for

    faces = synthetic_faces(48)
    E = sface.embed(faces)
    users = np.repeat(np.arange(12), 4).astype(str)
    tenc = torch_encoder_for(sface)
    fm = FaceModel.train(E, faces, TINY, tenc, query=sface.embed, seed=0)
    return faces, E, users, tenc, fm


def context(world, sface, defense_spec="none", knowledge="white", key="disclosed", seed=0, **params):
    """(the attacker's threat model, its auxiliary templates, the fitted defense)."""
    from facepii.stages import attacker_view as _view

    faces, E, users, tenc, fm = world
    d = defenses.create(defense_spec, **params).fit(E, users)
    protect = _view(d, key, seed)
    tm = ThreatModel(encoder=sface, defense=d, face_model=fm, aux_embeddings=E, aux_users=users,
                     protect=protect, budget=TINY, knowledge=knowledge, key=protect.key,
                     torch_encoder=tenc if knowledge == "white" else None,
                     seed=seed, victim_users=np.array(["v0", "v1", "v2"]))
    return tm, protect(E, users), d


def fitted(name, T, faces, tm, cache=None):
    return attacks.create(name).fit(T, faces, threat=tm, cache=RowCache() if cache is None else cache)


@pytest.mark.parametrize("name", ["nearest", "inverse", "decoder", "optimize"])
@pytest.mark.parametrize("defense", ["none", "noise", "biohash"])
def test_contract_shapes(world, sface, name, defense):
    faces, E, users, _, _ = world
    tm, T, d = context(world, sface, defense)
    atk = fitted(name, T, faces, tm)
    victims = np.array(["v0", "v1", "v2"])
    out = atk.reconstruct(d.transform(E[:3], victims), users=victims)
    assert out.shape == (3, 112, 112, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("name", ["nearest", "decoder", "optimize"])
def test_same_seed_same_reconstructions(world, sface, name):
    faces, E, users, _, _ = world
    outs = []
    for _ in range(2):
        tm, T, d = context(world, sface, "noise", sigma=0.05)
        atk = fitted(name, T, faces, tm)
        outs.append(atk.reconstruct(T[:4]))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_facemodel_training_is_seeded(world, sface):
    faces, E, users, tenc, _ = world
    a = FaceModel.train(E, faces, TINY, tenc, seed=3).reconstruct(E[:2])
    b = FaceModel.train(E, faces, TINY, tenc, seed=3).reconstruct(E[:2])
    c = FaceModel.train(E, faces, TINY, tenc, seed=4).reconstruct(E[:2])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_cached_face_model_computes_exactly_what_the_trained_one_does(world, sface, tmp_path):
    """A face model read from the cache must give the very same faces as the one trained in this run (the
    same report either way): no array may differ, down to its memory layout, which picks the BLAS path."""
    import torch

    faces, E, users, tenc, fm = world
    loaded = FaceModel.from_bytes(fm.to_bytes())
    with torch.no_grad():
        e = torch.from_numpy(E[:6] / np.linalg.norm(E[:6], axis=1, keepdims=True))
        np.testing.assert_array_equal(fm.decoder(e).numpy(), loaded.decoder(e).numpy())
    np.testing.assert_array_equal(fm.space.encode(faces[:6]), loaded.space.encode(faces[:6]))
    outs = []
    for model in (fm, loaded):
        tm, T, d = context((faces, E, users, tenc, model), sface, "noise", sigma=0.05)
        outs.append([fitted(n, T, faces, tm).reconstruct(T[:4]) for n in ("decoder", "optimize")])
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_face_model_bytes_do_not_depend_on_the_metadata_order():
    """safetensors keeps metadata in a per-process-seeded hash map: the header is rewritten in one order."""
    import json
    import struct

    from safetensors.numpy import load, save

    from attacks.facemodel import canonical_header

    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones(3, np.int64)}
    one = canonical_header(save(arrays, metadata={"format": "x", "d_in": "128"}))
    two = canonical_header(save(arrays, metadata={"d_in": "128", "format": "x"}))
    raw = save(arrays, metadata={"format": "x", "d_in": "128"})
    assert one == two and len(one) == len(raw)
    n = struct.unpack("<Q", one[:8])[0]
    assert list(json.loads(one[8:8 + n])["__metadata__"]) == ["d_in", "format"]
    back = load(one)
    np.testing.assert_array_equal(back["b"], arrays["b"])
    np.testing.assert_array_equal(back["a"], arrays["a"])


_TRAIN_IN_A_PROCESS = """
import hashlib, numpy as np
from dataclasses import replace
from attacks.facemodel import BUDGETS, FaceModel
from facepii.executor import compute_threads
rng = np.random.default_rng(0)
faces = rng.integers(0, 255, (24, 112, 112, 3), dtype=np.uint8)
E = rng.normal(size=(24, 16)).astype(np.float32)
budget = replace(BUDGETS["quick"], components=6, decoder_steps=2, flips=False)
with compute_threads(1):
    fm = FaceModel.train(E, faces, budget, seed=0)
print(hashlib.sha256(fm.to_bytes()).hexdigest())
"""


def test_the_same_face_model_has_the_same_bytes_in_every_process():
    """Trained in processes started with and without OMP_NUM_THREADS=1 (what a Dask nanny and a CI runner
    do), at one torch thread: the same file, byte for byte (the cache's digest of it included)."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"CI": "true"}
    digests = set()
    for env in ({}, {"OMP_NUM_THREADS": "1"}, {}, {"OMP_NUM_THREADS": "1"}):
        out = subprocess.run([sys.executable, "-c", _TRAIN_IN_A_PROCESS], capture_output=True, text=True,
                             env=base | env, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        digests.add(out.stdout.split()[-1])
    assert len(digests) == 1


@pytest.mark.parametrize("defense", ["none", "projection", "quantize"])
def test_nearest_is_exact_on_templates_it_saw(world, sface, defense):
    faces, E, users, _, _ = world
    tm, T, _ = context(world, sface, defense)
    atk = fitted("nearest", T, faces, tm)
    np.testing.assert_array_equal(atk.reconstruct(T[[5, 17, 30]]), faces[[5, 17, 30]])


def test_secret_key_attacker_uses_other_keys(world, sface):
    faces, E, users, _, _ = world
    _, T_disclosed, d = context(world, sface, "projection", key="disclosed")
    _, T_secret, _ = context(world, sface, "projection", key="secret")
    np.testing.assert_allclose(T_disclosed, d.transform(E, users))
    assert not np.allclose(T_secret, T_disclosed)


def test_black_box_optimize_runs_queries_only(world, sface):
    """A black-box attacker reaches the target only through queries, and every query is counted: NES takes
    2 x samples faces per step and victim (antithetic pairs), and the refined faces are closer to the stolen
    templates than the decoder's start, by the target's own measure."""
    from dataclasses import replace as _replace

    from facepii.torch_onnx import QueryCounter

    faces, E, users, _, _ = world
    tm, T, _ = context(world, sface, "none", knowledge="black")
    assert tm.torch_encoder is None
    counter = QueryCounter(sface)
    tm = _replace(tm, encoder=counter)
    atk = fitted("optimize", T, faces, tm)
    before = counter.queries
    out = atk.reconstruct(T[:2])
    assert out.shape == (2, 112, 112, 3)
    assert counter.queries - before == 2 * TINY.nes_steps * 2 * TINY.nes_samples


def test_mapper_inverts_a_disclosed_projection(world, sface):
    """With the key, the ridge inverse recovers the direction of the raw embedding."""
    from attacks.base import Mapper

    faces, E, users, _, _ = world
    d = defenses.create("projection", dim=96).fit(E)
    m = Mapper(d).fit(d.transform(E), E)
    est = m.predict(d.transform(E[:5]))
    cos = (est * (E[:5] / np.linalg.norm(E[:5], axis=1, keepdims=True))).sum(1)
    assert cos.min() > 0.9


def test_unknown_attack_cli(tmp_path, capsys):
    from helpers import run_cli

    rng = np.random.default_rng(0)
    p = tmp_path / "e.npz"
    np.savez(p, embeddings=rng.normal(size=(20, 8)), labels=np.repeat(np.arange(10), 2))
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{p}", "--attack", "nearst"], capsys)
    assert code == 2 and "unknown attack 'nearst'" in err and "Did you mean 'nearest'" in err


# ---- real faces (skipped without ../shared/datasets) ---------------------------------------


def test_torch_sface_matches_onnxruntime_on_real_faces(celeba, session_cache, sface):
    from facepii.cache import Cache
    from facepii.datasets import load_dataset, select
    from facepii.extract import extract
    from facepii.torch_onnx import check_against_onnxruntime

    fs = select(load_dataset(f"celeba:{celeba}"), max_identities=4, seed=5)
    ex = extract(fs, [sface], Cache(session_cache))
    assert check_against_onnxruntime(sface, ex.aligned(np.arange(24))) < 1e-4


@pytest.mark.slow
@pytest.mark.integration
def test_reidentification_beats_random_and_strong_noise_lowers_leakage(celeba, session_cache, tmp_path):
    from facepii.config import EvaluateConfig
    from facepii.pipeline import run
    from facepii.report import render

    from helpers import tiny_face_model

    # 60 identities (seeded): 30 victims (the random baseline 1/30, far below what the attacks reach), 30
    # auxiliary; the judge embeds every photo in the one extraction pass (126 s for 100 identities, alone)
    # a second judge, a bring-your-own ONNX file (random weights: it recognises nobody), shows the
    # several-judges path end to end: its own threshold, its own figures, the worst judge
    extra = tiny_face_model(tmp_path / "tiny.onnx", size=64)
    cfg = EvaluateConfig.from_options(dataset=f"celeba:{celeba}", encoder="sface", defenses=["noise"],
                                      params={"sigma": [0.4]}, attacks=["nearest", "decoder"], budget="quick",
                                      judge=f"dlib,onnx:{extra}?output=embedding&crop=tight",
                                      max_identities=60, cache_dir=str(session_cache), bootstrap=500, seed=0)
    ev = run(cfg)
    rep = ev.report
    none, noisy = rep.to_dict()["rows"]
    base = rep.extra["privacy_baselines"]["random_guess_rank1"]
    dec = none["privacy"]["per_attack"]["decoder"]
    assert none["privacy"]["judge"] == "dlib"
    assert dec["rank1"]["ci95"][0] > base  # interval above the random baseline
    assert none["privacy"]["leakage_ratio"]["ci95"][0] > 1
    assert noisy["privacy"]["rank1"]["value"] < none["privacy"]["rank1"]["value"]
    assert rep.extra["split"]["victims"] == 30 and "OTHER people" in rep.extra["threat_model"]
    assert set(ev.reconstructions) == {0, 1} and [r.label for r in rep.rows] == ["none", "noise sigma=0.4"]
    assert ev.reconstructions[0].shape == (30, 112, 112, 3)
    judged = none["privacy"]["judges"]
    assert set(judged) == {"dlib", "onnx:tiny.onnx"} and judged["dlib"]["rank1"] == none["privacy"]["rank1"]
    assert none["privacy"]["worst_judge"] == "dlib"  # the random network re-identifies less than dlib
    assert set(rep.extra["judges"]["threshold@fmr=1e-3"]) == {"judge", "judge2", "target"}
    assert "## Every judge" in render.markdown(rep)
