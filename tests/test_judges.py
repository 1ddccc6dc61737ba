"""Several judges and bring-your-own ONNX models: option parsing, TOML beside the model, the cache key,
centring, the torch copy's pre-processing, threshold calibration, and the worst-judge figures."""

import numpy as np
import pytest

from facepii.errors import EncoderError, FacepiiError, ParameterError

onnx = pytest.importorskip("onnx")

from helpers import tiny_face_model as _model  # noqa: E402


def _faces(n=6, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def test_several_outputs_need_output_named(tmp_path):
    from facepii.encoders import get_encoder

    m = _model(tmp_path / "m.onnx")
    with pytest.raises(EncoderError, match="output=NAME"):
        get_encoder(f"onnx:{m}")
    with pytest.raises(EncoderError, match="has 1 values per face"):
        get_encoder(f"onnx:{m}?output=age")
    enc = get_encoder(f"onnx:{m}?output=embedding")
    assert enc.dim == 16 and enc.embed(_faces()).shape == (6, 16)


@pytest.mark.parametrize("query, needle", [
    ("output=embedding&size=abc", "size="), ("output=embedding&size=8", "size="),
    ("output=embedding&crop=2", "crop="), ("output=embedding&bgr=maybe", "bgr="),
    ("output=embedding&mean=1,2", "mean="), ("output=embedding&std=0", "std must not be 0"),
    ("output=embedding&layout=chw", "layout"), ("output=embedding&colour=1", "unknown option"),
    ("output=embedding&center=maybe", "center="), ("output=embedding&center", "key=value"),
])
def test_bad_onnx_options_are_named(tmp_path, query, needle):
    from facepii.encoders import get_encoder

    m = _model(tmp_path / "m.onnx")
    with pytest.raises(FacepiiError, match=needle):
        get_encoder(f"onnx:{m}?{query}")


def test_fixed_input_size_refuses_another(tmp_path):
    from facepii.encoders import get_encoder

    m = _model(tmp_path / "m.onnx", size=64)
    assert get_encoder(f"onnx:{m}?output=embedding").input_size == (64, 64)
    with pytest.raises(ParameterError, match="fixed at 64x64"):
        get_encoder(f"onnx:{m}?output=embedding&size=96")


def test_toml_beside_the_model_and_query_overrides_it(tmp_path):
    from facepii.encoders import get_encoder

    m = _model(tmp_path / "m.onnx")
    (tmp_path / "m.toml").write_text('output = "embedding"\nmean = [0, 0, 0]\nstd = 255\ncrop = "tight"\n'
                                     'size = "96"\nname = "mine"\n')
    enc = get_encoder(f"onnx:{m}")
    assert enc.name == "mine" and enc.input_size == (96, 96) and enc.crop == pytest.approx(88 / 112)
    np.testing.assert_array_equal(enc.mean, [0, 0, 0])
    again = get_encoder(f"onnx:{m}?crop=align")
    assert again.crop == 1.0 and again.name == "mine"
    (tmp_path / "m.toml").write_text("output = [")
    with pytest.raises(ParameterError, match="not a readable TOML"):
        get_encoder(f"onnx:{m}")


def test_options_that_change_the_output_change_the_cache_key(tmp_path):
    from facepii.encoders import encoder_id, get_encoder

    m = _model(tmp_path / "m.onnx")
    base = get_encoder(f"onnx:{m}?output=embedding")
    ids = {encoder_id(base)}
    for q in ("crop=tight", "size=96", "bgr=1", "mean=0&std=1"):
        e = get_encoder(f"onnx:{m}?output=embedding&{q}")
        assert not np.allclose(e.embed(_faces()), base.embed(_faces()))   # the options do change the output
        ids.add(encoder_id(e))
    assert len(ids) == 5                                                   # ... and so the cache key
    assert encoder_id(get_encoder(f"onnx:{m}?output=embedding&center=1")) == encoder_id(base)  # applied after


def test_centring_uses_the_evaluation_mean(tmp_path):
    from facepii.encoders import get_encoder

    m = _model(tmp_path / "m.onnx", two_outputs=False, relu_out=True)
    enc = get_encoder(f"onnx:{m}?center=1")
    E = enc.embed(_faces(20))
    assert (E >= 0).all()                              # non-negative features: every raw cosine positive
    enc.center_mean = E.mean(0)
    C = enc.embed(_faces(20))
    np.testing.assert_allclose(C.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(enc.raw(_faces(20)), E)  # the cache keeps the raw output


def test_torch_copy_follows_the_preprocessing(tmp_path):
    torch = pytest.importorskip("torch")
    from facepii.encoders import get_encoder
    from facepii.torch_onnx import torch_encoder_for

    m = _model(tmp_path / "m.onnx")
    for q in ("", "&crop=tight", "&size=64&bgr=1&mean=10,20,30&std=50", "&center=1"):
        enc = get_encoder(f"onnx:{m}?output=embedding{q}")
        if "center" in q:
            enc.center_mean = enc.embed(_faces(10)).mean(0)
        t = torch_encoder_for(enc)
        f = _faces(4)
        with torch.no_grad():
            y = t(torch.from_numpy(f.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
        want = enc.embed(f)
        cos = (y * want).sum(1) / np.linalg.norm(y, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() > 0.999, q                    # resizing: torch bilinear vs OpenCV's, nearly equal
        # the attacker's own queries (mirrored faces): batched, without gradients, the same values
        np.testing.assert_allclose(t.embed(f, batch=3), y, atol=1e-5)


def test_judge_list_parsing():
    from facepii.option_text import judge_specs

    assert judge_specs(None) == [None]
    assert judge_specs("dlib") == ["dlib"]
    assert judge_specs("dlib, sface") == ["dlib", "sface"]
    assert judge_specs("onnx:a.onnx?mean=0,0,0&std=1,dlib") == ["onnx:a.onnx?mean=0,0,0&std=1", "dlib"]
    for bad in ("dlib,,sface", "dlib,dlib", "dlib,"):
        with pytest.raises(ParameterError):
            judge_specs(bad)


def test_judges_that_are_the_target_or_repeat_a_model_are_not_counted(tmp_path):
    from facepii.encoders import get_encoder
    from facepii.judging import resolve_judges
    from facepii.option_text import judge_specs

    m = _model(tmp_path / "m.onnx")
    target = get_encoder(f"onnx:{m}?output=embedding")
    other = tmp_path / "other.onnx"
    _model(other, size=64)
    js, notes = resolve_judges(judge_specs(f"onnx:{other}?output=embedding,onnx:{m}?output=embedding"), target)
    assert [j.name for j in js] == ["onnx:other.onnx"] and "the target model itself" in notes[0]
    again = f"onnx:{other}?output=embedding,onnx:{other}?output=embedding&name=again"
    js, notes = resolve_judges(judge_specs(again), target)
    assert len(js) == 1 and "same model" in notes[0]


def test_threshold_calibrated_on_the_judges_own_impostor_scores():
    from facepii import metrics
    from facepii.judging import make_judge

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(40), 3)
    centres = rng.normal(size=(40, 32))
    E = centres[labels] + 0.5 * rng.normal(size=(120, 32))

    class Fake:
        name, version, dim, comparator = "fake", "1", 32, "cosine"

    j = make_judge(Fake(), E.astype(np.float32), labels, np.ones(120, bool))
    _, imp = metrics.pair_scores(E.astype(np.float32), labels, metrics.comparator("cosine"))
    assert np.mean(np.asarray(imp) >= j.threshold) <= 1e-3 + 1e-12          # FMR at most 1e-3 on its impostors
    assert np.mean(np.asarray(imp) >= np.nextafter(j.threshold, -1)) > 0      # the lowest such threshold


def test_a_judge_embeds_the_same_faces_once_and_other_faces_anew():
    from facepii.judging import Judge

    calls = []

    class Counting:
        name, comparator = "counting", "cosine"

        def embed(self, faces):
            calls.append(faces.shape)
            return faces.reshape(len(faces), -1).astype(np.float32).mean(axis=1, keepdims=True) + len(calls)

    j = Judge(Counting(), np.zeros((1, 1), np.float32), np.zeros(1), 0.5)
    a = np.random.default_rng(0).integers(0, 255, size=(3, 4, 4, 3), dtype=np.uint8)
    first = j.embed(a)
    assert np.array_equal(j.embed(a.copy()), first) and len(calls) == 1       # the same pixels: not again
    j.embed(a)[:] = -1                                                         # a caller's change stays its own
    assert np.array_equal(j.embed(a), first) and len(calls) == 1
    b = a.copy()
    b[0, 0, 0, 0] ^= 1
    assert not np.array_equal(j.embed(b), first) and len(calls) == 2          # one pixel differs: embedded
    assert not np.array_equal(j.embed(a[:2]), first[:2]) and len(calls) == 3  # another shape: embedded
    for k in range(10):                                                        # a few kept, not every one
        j.embed(a + np.uint8(k + 1))
    j.embed(a)
    assert len(calls) == 14


def _fig(r1, sar):
    from facepii.estimates import JudgeFigures
    from facepii.metrics import Estimate

    est = lambda v: Estimate(v, (v, v))  # noqa: E731
    return JudgeFigures(est(r1), est(r1), est(r1 * 50), est(sar), 0.02)


def _attack(head, **others):
    from facepii.estimates import AttackFigures
    from facepii.metrics import Estimate

    return AttackFigures(head, Estimate(0.3, (0.2, 0.4)), head, {"dlib": head, **others})


class _J:
    def __init__(self, name):
        self.encoder = type("E", (), {"name": name})()


JUDGES = {"judge": _J("dlib"), "target": _J("sface"), "judge2": _J("onnx:x")}


def test_worst_judge_is_each_judges_worst_attack_then_the_highest():
    from facepii.judging import privacy_block

    per_attack = {"inverse": _attack(_fig(0.5, 0.3), **{"onnx:x": _fig(0.66, 0.2)}),
                  "optimize": _attack(_fig(0.7, 0.4), **{"onnx:x": _fig(0.6, 0.5)})}
    b = privacy_block(JUDGES, per_attack, None)
    d = b.to_dict()
    assert d["attack"] == "optimize" and d["rank1"]["value"] == 0.7        # headline: the first judge
    assert d["judges"]["dlib"]["attack"] == "optimize"
    assert d["judges"]["onnx:x"]["attack"] == "inverse"                    # its own worst attack
    assert d["worst_judge"] == "dlib"
    per_attack["inverse"].judges["onnx:x"] = _fig(0.8, 0.1)
    assert privacy_block(JUDGES, per_attack, None).worst_judge == "onnx:x"
    # read back from JSON, the derived fields are recomputed, never believed
    from facepii.estimates import PrivacyEstimates

    d["worst_judge"], d["attack"] = "dlib", "inverse"
    back = PrivacyEstimates.from_dict(d, "privacy")
    assert back.attack == "optimize" and back.worst_judge == "dlib" and back.to_dict()["attack"] == "optimize"


def test_report_shows_the_worst_judge_and_every_judge():
    from facepii.estimates import RowEstimates, UtilityEstimates
    from facepii.judging import privacy_block
    from facepii.report import Report, render
    from facepii.report.tables import judge_table, tradeoff_table

    per_attack = {"optimize": _attack(_fig(0.7, 0.4), **{"onnx:x": _fig(0.8, 0.5)})}
    row = RowEstimates("none", {}, UtilityEstimates({}), privacy=privacy_block(JUDGES, per_attack, None))
    rep = Report(dataset={}, encoder={"name": "sface"}, seed=0, rows=[row], versions={}, settings={},
                 extra={"threat_model": "t", "split": {}})
    assert rep.has_judges
    h, body = tradeoff_table(rep)
    assert "worst judge: rank-1" in h and body[0][h.index("worst judge: rank-1")].endswith("(onnx:x)")
    h, body = judge_table(rep)
    assert [b[3] for b in body] == ["dlib", "onnx:x (worst)"]
    assert "## Every judge" in render.markdown(rep) and "every judge:" in render.text(rep)


def test_a_linked_toml_beside_the_model_is_refused(tmp_path):
    from facepii.encoders import get_encoder

    m = _model(tmp_path / "m.onnx")
    (tmp_path / "elsewhere.toml").write_text('output = "embedding"\n')
    (tmp_path / "m.toml").symlink_to(tmp_path / "elsewhere.toml")
    with pytest.raises(ParameterError, match="a link"):
        get_encoder(f"onnx:{m}")


def test_two_judges_under_one_name_are_refused(tmp_path):
    from facepii.encoders import get_encoder
    from facepii.judging import resolve_judges
    from facepii.option_text import judge_specs

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    target = get_encoder(f"onnx:{_model(tmp_path / 't.onnx', size=96)}?output=embedding")
    a, b = _model(tmp_path / "a" / "m.onnx"), _model(tmp_path / "b" / "m.onnx", size=64)  # different files
    with pytest.raises(ParameterError, match="both named onnx:m.onnx"):
        resolve_judges(judge_specs(f"onnx:{a}?output=embedding,onnx:{b}?output=embedding"), target)
    js, _ = resolve_judges(judge_specs(f"onnx:{a}?output=embedding,onnx:{b}?output=embedding&name=other"), target)
    assert [j.name for j in js] == ["onnx:m.onnx", "other"]


def test_what_a_person_would_see_sharpness_detection_and_the_nearest_stranger(celeba):
    """Real aligned photos against themselves: as sharp as a photo (1), faces found; blurred: a fraction of
    the detail; noise: no face. The nearest real stranger is another person's photo, never the victim's."""
    import cv2

    from facepii.faces import default_aligner
    from facepii.judging import Judge, realism

    from helpers import face_photo

    photos = np.stack([default_aligner()(face_photo(celeba, k))[0] for k in range(4)])

    class Pixels:
        name, comparator = "pixels", "cosine"

        def embed(self, faces):
            return faces[:, ::8, ::8].reshape(len(faces), -1).astype(np.float32)

    victims = np.array(["a", "b", "c", "d"])
    j = Judge(Pixels(), Pixels().embed(photos), victims, 0.5)
    same = realism(j, photos, victims, photos, 200, 0)
    assert abs(same["sharpness"].value - 1) < 1e-9 and same["face_found"].value == 1.0
    assert 0.6 < same["detector_score"].value <= 1
    assert same["nearest_real"].value < 1 - 1e-6  # its own photo (cosine 1) is excluded
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.5) for f in photos])
    soft = realism(j, blurred, victims, photos, 200, 0)
    assert soft["sharpness"].value < 0.2 and soft["sharpness"].ci95[1] < 0.3
    noise = np.random.default_rng(0).integers(0, 255, photos.shape, dtype=np.uint8)
    assert realism(j, noise, victims, photos, 200, 0)["face_found"].value == 0.0


def test_dlib_workers_leave_no_open_file_behind():
    """The worker processes' pipes are closed with them: no `ResourceWarning: unclosed file` in a run's stderr."""
    import gc
    import warnings

    from facepii.dlib_encoder import DlibEncoder

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (4, 112, 112, 3), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        enc = DlibEncoder(n_jobs=2)
        assert enc.embed(faces).shape == (4, 128)
        assert len(enc._workers) == 2
        enc.close()
        del enc
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
