"""One contract for every registered defense and attack, built-in or plug-in (like scikit-learn's
``check_estimator``): the estimator protocol, and each declared capability checked against behaviour."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.base import clone

import attacks
import defenses
from attacks.base import RowCache, ThreatModel
from attacks.facemodel import BUDGETS, FaceModel
from facepii.errors import ParameterError
from facepii.metrics import COMPARATORS, cosine_similarity

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
    # nothing is validated or drawn in __init__: a clone is unfitted
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(c))


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
    if not d.encrypted:
        assert not hasattr(d, "encrypted_pair_scores") or d.steps_()[-1].encrypted
        return
    s = d.encrypted_pair_scores(E[:3], E[3:6])
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


def test_a_row_shares_one_decoder_between_its_attacks(aux):
    tm, d = threat(aux, "white")
    enc, faces, E, users, fm = aux
    cache = RowCache()
    dec = attacks.create("decoder").fit(tm.protect(E, users), faces, threat=tm, cache=cache)
    opt = attacks.create("optimize").fit(tm.protect(E, users), faces, threat=tm, cache=cache)
    assert cache.decoder is dec and opt.decoder_ is dec
