"""One contract for every registered plug-in of every kind, built-in or entry point (like scikit-learn's
``check_estimator``): defenses and attacks (the estimator protocol, and each declared capability checked
against behaviour) and encoders, which targets and judges both are (shape, norms, determinism, batch
independence, bad input, the declared differentiable graph)."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.base import clone

import attacks
import defenses
from attacks.base import RowCache, ThreatModel
from attacks.facemodel import BUDGETS, FaceModel
from defenses.base import EncryptedMatching, encrypted_matching
from facepii.encoder_base import NORM_RANGE, differentiable, encoder_id
from facepii.encoder_base import Encoder as EncoderProtocol
from facepii.encoders import get_encoder
from facepii.errors import EncoderError, ParameterError
from facepii.metrics import COMPARATORS, cosine_similarity
from facepii.registry import encoders as encoder_registry

from helpers import tiny_face_model

DEFENSES = defenses.registry.names()
ATTACKS = attacks.registry.names()


def embeddings(n_id=20, per=3, d=128, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(n_id), per)
    E = rng.normal(size=(n_id, d))[lab] + 0.5 * rng.normal(size=(n_id * per, d))
    return E.astype(np.float32), np.array([f"u{x}" for x in lab])


def fitted(name, **params):
    E, users = embeddings()
    return defenses.create(name, **params).fit(E, users), E, users


# ---------------------------------------------------------------- defenses


def fitted_state(obj) -> list[str]:
    """What fitting set on an estimator (scikit-learn's convention: public attributes ending in ``_``)."""
    return [k for k in vars(obj) if k.endswith("_") and not k.startswith("_")]


def stores_unchanged(cls, names) -> list[str]:
    """The parameters whose value ``__init__`` does not store as given (scikit-learn's rule: validation
    and conversion happen in ``fit``); ``clone`` and ``set_params`` rely on it."""
    marker = object()
    bad = []
    for k in names:
        try:
            obj = cls(**{k: marker})
        except Exception as exc:  # noqa: BLE001 - a constructor that looks at the value breaks the rule
            bad.append(f"{k}: __init__ raised {type(exc).__name__}")
            continue
        if getattr(obj, k, None) is not marker:
            bad.append(k)
    return bad


@pytest.mark.parametrize("name", DEFENSES)
def test_defense_is_an_estimator(name):
    d = defenses.create(name)
    c = clone(d)
    assert type(c) is type(d) and c.get_params() == d.get_params() and c.name == d.name
    assert repr(d).startswith(type(d).__name__ + "(")
    assert set(d.flat_params()) == set(type(d)._param_names())
    assert d.get_params(deep=True) == d.get_params(deep=False)  # no nested estimators in one step
    with pytest.raises(ParameterError, match="has no parameter"):
        d.set_params(no_such_parameter=1)
    assert not fitted_state(d)                       # nothing is validated or drawn in __init__
    if type(d).__name__ != "Chain":
        assert stores_unchanged(type(d), d.get_params()) == []


@pytest.mark.parametrize("name", DEFENSES)
def test_a_clone_of_a_fitted_defense_is_unfitted(name):
    d, E, users = fitted(name)
    assert fitted_state(d), "fit should leave what it learned in attributes ending in _"
    c = clone(d)
    assert fitted_state(c) == [] and c.get_params() == d.get_params()


@pytest.mark.parametrize("name", DEFENSES)
def test_declared_matching_is_what_score_does(name):
    d, E, users = fitted(name)
    T = d.transform(E, users)
    S = np.asarray(d.score(T, T[:7]), np.float64)
    assert S.shape == (len(T), 7) and np.isfinite(S).all()
    np.testing.assert_allclose(np.asarray(d.paired_score(T[:7], T[:7])), np.diag(S[:7]), atol=1e-5)
    if d.matching == "comparator":
        np.testing.assert_allclose(S, COMPARATORS[d.output_comparator](T, T[:7]), atol=1e-6)
    if d.cosine_scores:
        np.testing.assert_allclose(S, cosine_similarity(T, T[:7]), atol=1e-5)


@pytest.mark.parametrize("name", DEFENSES)
def test_declared_emits_is_what_transform_gives(name):
    d, E, users = fitted(name)
    T = d.transform(E, users)
    assert T.ndim == 2 and len(T) == len(E) and np.isfinite(np.asarray(T, np.float64)).all()
    if d.emits == "embedding":
        np.testing.assert_array_equal(T, E)
    elif d.emits == "bits":
        assert set(np.unique(T)) <= {-1.0, 0.0, 1.0} and len(np.unique(T)) <= 2
    elif d.emits == "index":
        assert d.index_size >= 2 and (T == np.round(T)).all() and T.min() >= 0 and T.max() < d.index_size
    assert d.template_nbytes() > 0


@pytest.mark.parametrize("name", DEFENSES)
def test_declared_randomness_and_reproducibility(name):
    d, E, users = fitted(name)
    first = d.transform(E, users)
    if d.reproducible:  # a second instance with the same parameters and seed: the same templates
        np.testing.assert_array_equal(first, defenses.create(name).fit(E, users).transform(E, users))
    if d.randomized:
        assert not np.array_equal(d.transform(E, users), d.transform(E, users))  # fresh draws per call
        own = d.with_randomness(99)
        assert not np.array_equal(own.transform(E, users), defenses.create(name).fit(E, users).transform(E, users))
    elif d.reproducible:
        np.testing.assert_array_equal(d.transform(E, users), first)


@pytest.mark.parametrize("name", DEFENSES)
def test_declared_keys(name):
    d, E, users = fitted(name)
    if not d.keyed:
        assert list(d.key_ids(users, len(E))) == [""] * len(E)
        return
    assert "seed" in d.get_params() and set(d.key_modes) <= {"system", "user"}
    if not d.reproducible:
        return
    other = defenses.create(name, seed=int(d.seed) + 1).fit(E, users)
    assert not np.allclose(d.transform(E, users), other.transform(E, users))  # the key draws the transform
    if "user" in d.key_modes:
        u = defenses.create(name, key_mode="user").fit(E, users)
        assert u.per_user
        a, b = u.transform(E[:4], np.array(["a"] * 4)), u.transform(E[:4], np.array(["b"] * 4))
        assert not np.allclose(a, b)  # another user's key: another template of the same face
        with pytest.raises(ParameterError, match="needs user ids"):
            u.transform(E[:4])


@pytest.mark.parametrize("name", DEFENSES)
def test_declared_reissue(name):
    d, E, users = fitted(name)
    new = d.reissued(seed=12345, key_offset=1000)
    before = d.transform(E, users)
    if d.reissuable and d.reproducible:
        assert not np.allclose(new.transform(E, users), before)
        np.testing.assert_array_equal(d.transform(E, users), before) if not d.randomized else None  # untouched
    elif not d.reissuable:
        np.testing.assert_array_equal(new.transform(E, users), before)  # nothing to re-issue: the same transform


@pytest.mark.parametrize("name", DEFENSES)
def test_declared_invertible_offers_a_relaxation_low_at_the_truth(name):
    import torch

    from defenses.base import key_seed

    d, E, users = fitted(name, **({"key_mode": "system"} if "key_mode" in defenses.create(name).get_params() else {}))
    if not d.invertible:
        with pytest.raises(NotImplementedError):
            d.inversion_loss(0)
        return
    U = E / np.linalg.norm(E, axis=1, keepdims=True)
    T = d.transform(E, users)
    loss = d.inversion_loss(key_seed(d.seed, "system"))
    at_truth = loss(torch.from_numpy(U), T).detach().numpy()
    shuffled = loss(torch.from_numpy(U[::-1].copy()), T).detach().numpy()
    assert at_truth.mean() < shuffled.mean()


@pytest.mark.parametrize("name", DEFENSES)
def test_declared_encryption(name):
    d, E, users = fitted(name)
    assert isinstance(d.steps_()[-1], EncryptedMatching) == bool(d.encrypted)  # declared = provided
    if not d.encrypted:
        with pytest.raises(TypeError):
            encrypted_matching(d)
        return
    m, before = encrypted_matching(d)
    s = m.encrypted_pair_scores(before(E[:3]), before(E[3:6]))
    plain = np.sum(E[:3] / np.linalg.norm(E[:3], axis=1, keepdims=True)
                   * E[3:6] / np.linalg.norm(E[3:6], axis=1, keepdims=True), axis=1)
    np.testing.assert_allclose(s, plain, atol=1e-4)
    assert set(d.encryption_info()) >= {"scheme", "poly_modulus_degree"}


PER_USER = [n for n in DEFENSES if "user" in defenses.create(n).key_modes]
OTHERS = [n for n in DEFENSES if not defenses.create(n).encrypted and n != "none"]


@pytest.mark.parametrize("per_user", PER_USER)
@pytest.mark.parametrize("other", OTHERS)
def test_every_chain_with_a_per_user_step_in_both_orders(per_user, other):
    if per_user == other:
        return
    E, users = embeddings()
    small = {"biohash": {"bits": 16}, "pca": {"dim": 16}, "projection": {"dim": 32}}  # widths every order fits
    for spec in (f"{per_user}+{other}", f"{other}+{per_user}"):
        params = {f"{n}.{k}": v for n in (per_user, other) for k, v in small.get(n, {}).items()}
        c = defenses.create(spec, **params, **{f"{per_user}.key_mode": "user"})
        assert c.per_user and c.keyed
        T = c.fit(E, users).transform(E, users)
        steps = c.steps_()
        X = E
        for s in steps:  # the chain is its steps by hand, each fitted on what the steps before it give
            X = clone(s).fit(X, users).transform(X, users) if not s.randomized else s.transform(X, users)
        if not c.randomized:
            np.testing.assert_allclose(T, X, atol=1e-5)
        assert np.isfinite(np.asarray(c.score(T, T), np.float64)).all()
        assert clone(c).get_params()[f"{per_user}__key_mode"] == "user"


def test_encryption_must_be_the_last_step_and_none_is_no_step():
    E, users = embeddings()
    with pytest.raises(ParameterError, match="must be the last step"):
        defenses.create("he+quantize").fit(E, users)
    with pytest.raises(ParameterError, match="'none' is no step"):
        defenses.create("none+iom")


def test_a_chain_ending_in_encryption_matches_through_its_last_step():
    pytest.importorskip("tenseal")
    from facepii.utility import encrypted_utility

    E, users = embeddings()
    d = defenses.create("pca+he", **{"pca.dim": 16, "he.impostor_pairs": 1000}).fit(E, users)
    m, before = encrypted_matching(d)
    assert m is d.steps_()[-1] and before(E[:4]).shape == (4, 16)
    P = before(E)
    u, info, _ = encrypted_utility(E, users, d, n_boot=100, seed=0)
    assert info["impostor_pairs_sampled"] == 1000
    assert info["abs_error_vs_plaintext"]["max"] < 1e-4  # CKKS error only: against the PCA'd plaintext
    s = m.encrypted_pair_scores(P[:5], P[5:10])
    U = P / np.linalg.norm(P, axis=1, keepdims=True)
    np.testing.assert_allclose(s, np.sum(U[:5] * U[5:10], axis=1), atol=1e-4)  # the PCA'd cosine, encrypted
    assert m.ms_per_comparison() > 0


# ---------------------------------------------------------------- attacks


def _faces(n, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(n, 14, 14, 3)).astype(np.uint8)
    return np.stack([cv2.resize(s, (112, 112), interpolation=cv2.INTER_CUBIC) for s in small])


class Encoder:
    """A stand-in target: a fixed random projection of the pixels (queries counted)."""

    name, version, dim, comparator = "proj", "1", 32, "cosine"

    def __init__(self):
        self.W = np.random.default_rng(1).normal(size=(28 * 28 * 3, 32)).astype(np.float32)
        self.queries = 0

    def embed(self, faces):
        self.queries += len(faces)
        return faces[:, ::4, ::4].reshape(len(faces), -1).astype(np.float32) / 255 @ self.W


class TorchCopy:
    """The same projection, differentiable; counts its calls (white-box gradients)."""

    def __init__(self, enc):
        import torch

        self.W = torch.from_numpy(enc.W)
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        # a product summed row by row: with the kernels pinned, MKL's CPU-independent branch sums a row of a
        # matrix product in an order that depends on how many rows the product has, and the tests that split
        # a batch into passes (as facepii's torch copies do, in fixed chunks) compare faces bit for bit
        a = x[:, :, ::4, ::4].permute(0, 2, 3, 1).reshape(len(x), -1) / 255
        return (a[:, :, None] * self.W[None]).sum(1)

    def embed(self, faces):
        import torch

        with torch.no_grad():
            return self(torch.from_numpy(faces.transpose(0, 3, 1, 2).copy()).float()).numpy()


TINY = replace(BUDGETS["quick"], name="tiny", components=8, decoder_steps=2, finetune_steps=2, optimize_steps=2,
               flips=False, nes_steps=1, nes_samples=2)


@pytest.fixture(scope="module")
def aux():
    enc = Encoder()
    faces = _faces(30)
    E = enc.embed(faces)
    users = np.repeat(np.arange(10), 3).astype(str)
    fm = FaceModel.train(E, faces, TINY, TorchCopy(enc), seed=0)
    return enc, faces, E, users, fm


def threat(aux, knowledge, defense="noise"):
    enc, faces, E, users, fm = aux
    d = defenses.create(defense).fit(E, users)
    tc = TorchCopy(enc) if knowledge == "white" else None
    return ThreatModel(encoder=enc, defense=d, face_model=fm, aux_embeddings=E, aux_users=users,
                       protect=lambda X, u=None: d.transform(X, u), budget=TINY, knowledge=knowledge,
                       torch_encoder=tc, seed=0, victim_users=np.array(["v0", "v1"])), d


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_is_an_estimator(name):
    a = attacks.create(name)
    c = clone(a)
    assert type(c) is type(a) and c.get_params() == a.get_params()
    assert repr(a).startswith(type(a).__name__ + "(")
    with pytest.raises(ParameterError, match="has no parameter"):
        a.set_params(no_such_parameter=1)
    assert not fitted_state(a)
    assert stores_unchanged(type(a), a.get_params()) == []


@pytest.mark.parametrize("name", ATTACKS)
def test_a_clone_of_a_fitted_attack_is_unfitted(aux, name):
    enc, faces, E, users, fm = aux
    tm, d = threat(aux, "white")
    a = attacks.create(name).fit(tm.protect(E, users), faces, threat=tm, cache=RowCache())
    assert fitted_state(a), "fit should leave what it learned in attributes ending in _"
    c = clone(a)
    assert fitted_state(c) == [] and c.get_params() == a.get_params()


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("knowledge", ["white", "black"])
def test_attack_reconstructs_faces_and_declares_its_gradients(aux, name, knowledge):
    enc, faces, E, users, fm = aux
    tm, d = threat(aux, knowledge)
    T_aux = tm.protect(E, users)
    T_vic = d.transform(E[:2])
    outs = []
    for _ in range(2):
        a = attacks.create(name).fit(T_aux, faces, threat=tm, cache=RowCache())
        outs.append(a.reconstruct(T_vic, users=np.array(["v0", "v1"])))
    assert outs[0].shape == (2, 112, 112, 3) and outs[0].dtype == np.uint8
    np.testing.assert_array_equal(outs[0], outs[1])  # seeded: the same faces again
    used = tm.torch_encoder.calls if tm.torch_encoder is not None else 0
    if knowledge == "white":
        assert (used > 0) == bool(type(a).white_box_gradients), used
    if not type(a).uses_face_model:  # declared: a run of such attacks alone trains no face model
        without = replace(tm, face_model=None)
        b = attacks.create(name).fit(T_aux, faces, threat=without, cache=RowCache())
        np.testing.assert_array_equal(b.reconstruct(T_vic, users=np.array(["v0", "v1"])), outs[0])


def test_a_row_shares_one_decoder_between_its_attacks(aux):
    tm, d = threat(aux, "white")
    enc, faces, E, users, fm = aux
    cache = RowCache()
    dec = attacks.create("decoder").fit(tm.protect(E, users), faces, threat=tm, cache=cache)
    opt = attacks.create("optimize").fit(tm.protect(E, users), faces, threat=tm, cache=cache)
    assert cache.decoder is dec and opt.decoder_ is dec


# ---------------------------------------------------------------- encoders (targets and judges)

ENCODERS = encoder_registry.names()


@pytest.fixture(scope="module")
def encoder_faces():
    """Eight aligned-face-sized images: a face-like blob with eyes on a gradient, each with noise of its own."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:112, 0:112] / 111.0
    blob = np.exp(-(((xx - 0.5) ** 2 + (yy - 0.52) ** 2) / 0.09))
    eyes = sum(np.exp(-(((xx - ex) ** 2 + (yy - 0.42) ** 2) / 0.002)) for ex in (0.35, 0.65))
    base = 40 + 150 * blob - 60 * eyes + 30 * yy
    out = [np.clip(np.stack([base, base * 0.85, base * 0.7], -1) + rng.normal(0, 8, (112, 112, 3)), 0, 255)
           for _ in range(8)]
    return np.stack(out).astype(np.uint8)


def encoder_for(name, tmp_path):
    """A working instance of every registered encoder: the argument its kind needs (a small ONNX file for
    onnx:PATH), none for the others (entry points included)."""
    if name == "onnx":
        return get_encoder(f"onnx:{tiny_face_model(tmp_path / 'tiny.onnx', two_outputs=False)}")
    return get_encoder(name)


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_declares_its_identity(name, tmp_path):
    e = encoder_for(name, tmp_path)
    assert isinstance(e, EncoderProtocol)
    assert isinstance(e.name, str) and e.name and isinstance(e.version, str) and e.version
    assert e.comparator in COMPARATORS
    assert isinstance(e.dim, int) and (e.dim == 0 if name == "precomputed" else 2 <= e.dim <= 65536)
    assert encoder_id(e) == encoder_id(encoder_for(name, tmp_path))  # the cache key is stable


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_embeds_faces_one_by_one_the_same_every_time(name, tmp_path, encoder_faces):
    e = encoder_for(name, tmp_path)
    if name == "precomputed":  # nothing to run: embedding images is a one-line error
        with pytest.raises(EncoderError) as exc:
            e.embed(encoder_faces)
        assert "\n" not in str(exc.value)
        return
    E = e.embed(encoder_faces)
    assert E.shape == (len(encoder_faces), e.dim) and E.dtype == np.float32 and np.isfinite(E).all()
    norms = np.linalg.norm(E.astype(np.float64), axis=1)
    assert ((norms > NORM_RANGE[0]) & (norms < NORM_RANGE[1])).all()
    np.testing.assert_array_equal(e.embed(encoder_faces), E)           # deterministic
    # batch independence: each face alone, and in another batch, gives its embedding (float32 kernels may
    # block a batch differently: a few float32 roundings of the largest value)
    alone = np.concatenate([e.embed(encoder_faces[i:i + 1]) for i in (0, 5)])
    tol = 1e-5 * float(np.abs(E).max())
    np.testing.assert_allclose(alone, E[[0, 5]], rtol=0, atol=tol)
    np.testing.assert_allclose(e.embed(encoder_faces[3:6]), E[3:6], rtol=0, atol=tol)
    assert not np.allclose(E[0], E[1])                                 # it looks at the face


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("bad", ["size", "dtype", "rank"])
def test_encoder_refuses_what_is_not_aligned_faces_in_one_line(name, bad, tmp_path, encoder_faces):
    e = encoder_for(name, tmp_path)
    x = {"size": encoder_faces[:, :100, :100], "dtype": encoder_faces.astype(np.float32),
         "rank": encoder_faces[..., 0]}[bad]
    with pytest.raises(EncoderError) as exc:
        e.embed(x)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_declares_a_graph_only_when_the_torch_copy_computes_it(name, tmp_path, encoder_faces):
    from facepii.torch_onnx import torch_encoder_for

    e = encoder_for(name, tmp_path)
    d = differentiable(e)
    if d is None:  # black box only: a white-box attack is refused in one line
        with pytest.raises(EncoderError, match="no ONNX graph to differentiate"):
            torch_encoder_for(e)
        return
    assert d.layout in ("NCHW", "NHWC") and len(d.size) == 2 and 0 < d.crop <= 1
    X = d.prepare(encoder_faces[:2])
    np.testing.assert_array_equal(d.run_graph(X), e.embed(encoder_faces[:2]))  # the two halves are the model
    t = torch_encoder_for(e, encoder_faces[:4])
    assert t.check["min_cosine"] > 0.9999


# ---------------------------------------------------------------- declared parameter constraints


def _estimators():
    return [("defense", n, type(defenses.create(n))) for n in DEFENSES] + \
           [("attack", n, type(attacks.create(n))) for n in ATTACKS]


@pytest.mark.parametrize("kind, name, cls", _estimators(), ids=lambda x: x if isinstance(x, str) else "")
def test_declared_constraints_name_parameters_and_hold_for_the_defaults(kind, name, cls):
    declared = {}
    for c in reversed(cls.__mro__):
        declared.update(getattr(c, "_parameter_constraints", None) or {})
    assert set(declared) <= set(cls._param_names()), f"{name}: constraints on parameters it does not have"
    cls().check_constraints()  # the defaults are admissible


def test_a_constraint_refuses_in_one_line_naming_the_parameter_and_the_range():
    from facepii.params import Interval, Options, describe

    assert Interval(int, 1, 16).holds(16) and not Interval(int, 1, 16).holds(17)
    assert not Interval(int, 1, None).holds(2.0) and not Interval(int, 1, None).holds(True)
    assert not Interval(float, 0, 50, "left").holds(50) and Interval(float, 0, 50, "left").holds(0)
    assert not Interval(float, 0, None, "neither").holds(float("inf")) and not Interval(float, 0, 1).holds("0.5")
    assert Options((8192, 16384)).holds(np.int64(8192)) and not Options((8192, 16384)).holds(8192.5)
    assert not Options(("gaussian",)).holds(True)
    assert describe([Interval(int, 2, None)]) == "an integer >= 2"
    assert describe([Interval(float, 0, 1, "neither"), None]) == "a number in (0, 1), or None"
    for name, params, says in [("biohash", {"bits": 0}, "biohash: bits must be an integer >= 1, got 0."),
                               ("quantize", {"clip": 50.0}, "quantize: clip must be a number in [0, 50), got 50.0."),
                               ("he", {"poly_modulus_degree": 4096}, "he: poly_modulus_degree must be 8192 or 16384"),
                               ("noise", {"delta": 1.0}, "noise: delta must be a number in (0, 1), got 1.0.")]:
        with pytest.raises(ParameterError) as exc:
            defenses.create(name, **params).check_params()
        assert str(exc.value).startswith(says) and "\n" not in str(exc.value)
    with pytest.raises(ParameterError, match="optimize: lr must be a number in"):
        attacks.create("optimize", lr=0.0).check_constraints()


def test_plugins_of_both_kinds_are_named_by_their_entry_point_and_keep_it_through_clone(monkeypatch):
    from attacks.nearest import Nearest
    from defenses.noise import Noise

    class MyAttack(Nearest):
        registry_name = None

    class MyDefense(Noise):
        registry_name = None

    monkeypatch.setattr(attacks.registry, "_entries", dict(attacks.registry._entries))
    monkeypatch.setattr(defenses.registry, "_entries", dict(defenses.registry._entries))
    attacks.registry.register("mine", MyAttack, origin="entry point (test)")
    defenses.registry.register("mine", MyDefense, origin="entry point (test)")
    for obj in (attacks.create("mine"), defenses.create("mine")):
        assert obj.name == "mine" and clone(obj).name == "mine"
    assert attacks.create("nearest").name == "nearest" and defenses.create("noise").name == "noise"


# ---------------------------------------------------------------- oracle attacks (--oracle)

ORACLES = attacks.oracle_registry.names()


class _MatcherOnly:
    """The matcher's interface and nothing else: an oracle attack that reads a victim's stored template or
    the defense behind it fails here with AttributeError."""

    def __init__(self, oracle):
        self._o = oracle
        self.victims, self.threshold = oracle.victims, oracle.threshold

    @property
    def queries(self):
        return self._o.queries

    def scores(self, i, probes):
        return self._o.scores(i, probes)

    def accepts(self, i, probes):
        return self._o.accepts(i, probes)


@pytest.mark.parametrize("name", ORACLES)
def test_oracle_attack_is_registered_and_declares_its_threat_and_budget(name):
    from attacks.oracle import OracleAttack

    o = attacks.create_oracle(name)
    assert isinstance(o, OracleAttack) and o.name == name and clone(o).name == name
    assert isinstance(o.answers, str) and o.answers.startswith("the matcher ")
    assert isinstance(o.default_queries, int) and 10 <= o.default_queries <= 100_000  # --oracle-queries' range
    assert not stores_unchanged(type(o), type(o)._param_names())


@pytest.mark.parametrize("name", ORACLES)
def test_oracle_attack_recovers_embeddings_from_answers_alone_within_the_budget(name):
    from attacks.oracle import Oracle, OracleInputs, Prior
    from facepii.metrics import pair_scores, threshold_at_far
    from facepii.stages import attacker_view

    E, lab = embeddings(n_id=60, per=4, d=32, seed=3)
    aux = np.repeat(np.arange(60) >= 12, 4)  # 48 of the attacker's people; 12 victims, one template each
    vic = np.flatnonzero(~aux & (np.arange(len(lab)) % 4 == 0))
    d = defenses.create("none").fit(E[aux])
    _, imp = pair_scores(E[aux], lab[aux], d.score)
    oracle = Oracle(d, d.transform(E[vic], lab[vic]), lab[vic], threshold_at_far(imp, 1e-3))
    own = OracleInputs(E[aux], lab[aux], lambda: attacker_view(d, "secret", 0), 0)
    budget = attacks.create_oracle(name).default_queries
    res = attacks.create_oracle(name).recover(_MatcherOnly(oracle), own, budget)
    assert res.estimates.shape == (len(vic), E.shape[1]) and np.isfinite(res.estimates).all()
    np.testing.assert_allclose(np.linalg.norm(res.estimates, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(res.queries_used, oracle.queries) and res.queries_used.max() <= budget
    assert ((res.queries_to_match == -1) | ((res.queries_to_match >= 1) & (res.queries_to_match <= budget))).all()
    mean = Prior(E[aux]).mean
    truth = E[vic] / np.linalg.norm(E[vic], axis=1, keepdims=True)
    # closer to each victim than the attacker's prior alone
    assert (res.estimates * truth).sum(1).mean() > (truth @ (mean / np.linalg.norm(mean))).mean() + 0.2
