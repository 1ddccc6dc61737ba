"""The attacker of a model it can only query, with public face models of its own (surrogates); and every torch
copy checked against onnxruntime when it is built."""

import numpy as np
import pytest

import attacks
import defenses
from attacks.base import RowCache, ThreatModel
from facepii.errors import EncoderError, ParameterError

from helpers import run_cli, tiny_face_model, write_folder_dataset


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return (tiny_face_model(d / "a.onnx", size=64, two_outputs=False),
            tiny_face_model(d / "b.onnx", size=48, two_outputs=False, seed=1))


def test_surrogates_are_for_a_black_box_attacker_and_never_judges(tmp_path, capsys, models):
    a, b = models
    data = write_folder_dataset(tmp_path / "d", n_ids=6)
    base = ["evaluate", "-q", "-d", f"folder:{data}", "--encoder", "sface", "--attack", "nearest"]
    code, _, err = run_cli([*base, "--surrogate", f"onnx:{a}"], capsys)
    assert code == 2 and "tools of a black-box attacker" in err
    code, _, err = run_cli([*base, "--knowledge", "black", "--surrogate", f"onnx:{a}", "--judge", f"dlib,onnx:{a}"],
                           capsys)
    assert code == 2 and "the attacker uses this model" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli([*base, "--knowledge", "black", "--surrogate", "sface"], capsys)
    assert code == 2 and "that is the target itself" in err
    code, _, err = run_cli([*base, "--knowledge", "black", "--surrogate", "dlib"], capsys)
    assert code == 2 and "no ONNX graph to differentiate" in err


def test_a_torch_copy_that_disagrees_with_onnxruntime_is_refused(monkeypatch, models):
    import facepii.torch_onnx as T
    import facepii.torch_onnx.encoder as E
    from facepii.encoders import get_encoder

    enc = get_encoder(f"onnx:{models[0]}")
    faces = np.random.default_rng(0).integers(0, 255, (6, 112, 112, 3), dtype=np.uint8)
    good = T.torch_encoder_for(enc, faces)
    assert good.check["faces"] == 6 and good.check["min_cosine"] > 0.9999
    real = T.build

    def off(model, output=None):  # a converter bug: one weight read wrong
        net = real(model, output)
        buf = next(iter(net.buffers()))
        buf.mul_(1.5)
        return net

    monkeypatch.setattr(E, "build", off)  # what torch_encoder_for builds the copy with
    with pytest.raises(EncoderError, match="disagrees with onnxruntime.*--knowledge black"):
        T.torch_encoder_for(enc, faces)


class Target:
    """A stand-in target model the attacker can only query (a fixed projection of the pixels)."""

    name, version, dim, comparator = "target", "1", 24, "cosine"

    def __init__(self):
        self.W = np.random.default_rng(7).normal(size=(28 * 28 * 3, 24)).astype(np.float32)

    def embed(self, faces):  # not centred, lengths far from 1: as real models' embeddings are
        x = faces[:, ::4, ::4].reshape(len(faces), -1).astype(np.float32) / 255 - 0.5
        return 10 * x @ self.W + 30


def test_a_black_box_attacker_works_through_its_surrogates_then_queries_the_target(models):
    from dataclasses import replace

    from attacks.facemodel import BUDGETS, FaceModel
    from facepii.encoders import get_encoder
    from facepii.torch_onnx import Ensemble, QueryCounter, torch_encoder_for

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (30, 112, 112, 3), dtype=np.uint8)
    target = QueryCounter(Target())
    E = target.embed(faces)
    encs = [get_encoder(f"onnx:{m}") for m in models]
    ens = Ensemble([torch_encoder_for(e, faces[:4]) for e in encs], [e.name for e in encs])
    space = ens.embed(faces)
    np.testing.assert_allclose(np.linalg.norm(space, axis=1), 1, atol=1e-5)  # mean cosine of the members
    budget = replace(BUDGETS["quick"], components=8, decoder_steps=2, finetune_steps=2, optimize_steps=2,
                     flips=False, nes_steps=2, nes_samples=3)
    fm = FaceModel.train(space, faces, budget, ens, query=ens.embed, seed=0)
    assert fm.d_in == space.shape[1]  # the face model lives in the surrogates' space
    users = np.repeat(np.arange(10), 3).astype(str)
    for spec in ("none", "projection"):
        d = defenses.create(spec).fit(E, users)
        tm = ThreatModel(encoder=target, defense=d, face_model=fm, aux_embeddings=E, aux_users=users,
                         protect=lambda X, u=None, d=d: d.transform(X, u), budget=budget, knowledge="black",
                         torch_encoder=ens, seed=0, space=space)
        assert tm.surrogate and not tm.templates_in_work_space
        cache = RowCache()
        T_aux = d.transform(E, users)
        before = target.queries
        for name in ("inverse", "decoder", "optimize"):
            out = attacks.create(name).fit(T_aux, faces, threat=tm, cache=cache).reconstruct(T_aux[:3])
            assert out.shape == (3, 112, 112, 3) and out.dtype == np.uint8
        # only optimize's final refinement queries the target: steps x 2 x samples per victim
        assert target.queries - before == 3 * budget.nes_steps * 2 * budget.nes_samples


def test_judge_defaults_avoid_the_attackers_models():
    from facepii.encoders import get_encoder
    from facepii.judging import resolve_judge

    sface = get_encoder("sface")
    target = type("T", (), {"name": "onnx:other", "version": "x", "path": None})()
    assert resolve_judge(None, target).name == "sface"                 # the default for a non-SFace target
    assert resolve_judge(None, target, [sface]).name == "dlib"         # unless the attacker uses SFace


def test_surrogate_cli_rejects_a_chain_with_white_knowledge_in_the_gate_config():
    from facepii.gate import check_evaluate

    with pytest.raises(ParameterError, match="black-box attacker"):
        check_evaluate({"surrogate": "sface"}).validate()


def test_a_stolen_raw_template_is_carried_into_the_surrogates_space():
    """Where the surrogates' embedding is a function of the target's direction (here a linear one), the map
    learned on the auxiliary faces carries a victim's stolen raw template across: its nearest surrogate
    embedding is its own. Real embeddings are neither centred nor of length 1; the map takes unit inputs."""
    from attacks.base import estimate_work

    rng = np.random.default_rng(0)
    E = 8 * rng.normal(size=(200, 24)) + 30  # the target's raw embeddings of 200 auxiliary faces
    U = E / np.linalg.norm(E, axis=1, keepdims=True)
    S = U @ rng.normal(size=(24, 32))
    S /= np.linalg.norm(S, axis=1, keepdims=True)
    d = defenses.create("none").fit(E)
    tm = ThreatModel(encoder=None, defense=d, face_model=None, aux_embeddings=E.astype(np.float32),
                     aux_users=np.arange(200).astype(str), protect=lambda X, u=None: X, budget=None,
                     knowledge="black", torch_encoder=object(), space=S.astype(np.float32))
    victims = 8 * rng.normal(size=(40, 24)) + 30  # new faces, never seen by the map
    truth = (victims / np.linalg.norm(victims, axis=1, keepdims=True)) @ np.linalg.lstsq(U, S, rcond=None)[0]
    est = estimate_work(tm, RowCache(), E, victims.astype(np.float32), None)
    hits = (np.argmax(est @ (truth / np.linalg.norm(truth, axis=1, keepdims=True)).T, axis=1) == np.arange(40))
    assert hits.mean() > 0.9, hits.mean()


@pytest.mark.parametrize("kind, says", [("constant", "point the same way"), ("zeros", "all zeros"),
                                        ("nan", "NaN")])
def test_a_degenerate_surrogate_is_named_as_such(tmp_path, kind, says, models):
    """A surrogate whose output is constant, all zeros or NaN gets the output checks targets and judges get,
    before its torch copy is built: one line that names the model, not the copy's disagreement."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from facepii.encoders import get_encoder
    from facepii.reconstructions import check_surrogates

    bias = {"constant": np.linspace(0.5, 1.5, 16), "zeros": np.zeros(16), "nan": np.full(16, np.nan)}[kind]
    inits = {"W": np.zeros((3, 16)), "B": bias}
    nodes = [helper.make_node("GlobalAveragePool", ["data"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "B"], ["embedding"])]
    g = helper.make_graph(nodes, "deg", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, 112, 112])],
                          [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 16])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    path = tmp_path / f"{kind}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    faces = np.random.default_rng(0).integers(0, 255, (6, 112, 112, 3), dtype=np.uint8)
    check_surrogates([get_encoder(f"onnx:{m}") for m in models], faces)  # working models pass
    with pytest.raises(EncoderError, match=f"--surrogate.*{says}") as e:
        check_surrogates([get_encoder(f"onnx:{path}")], faces)
    assert "disagrees" not in str(e.value) and len(str(e.value).splitlines()) == 1
