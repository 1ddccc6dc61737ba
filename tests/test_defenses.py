import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import defenses
from defenses.base import shared_key
from defenses.chain import Chain
from defenses.noise import gaussian_epsilon, gaussian_sigma_for
from facepii.errors import ParameterError, UnknownNameError
from facepii.metrics import cosine_similarity

from helpers import run_cli

FAMILIES = defenses.registry.names()  # every registered defense: built-in and plug-ins
RANDOM = [n for n in FAMILIES if (lambda d: (d.keyed or d.randomized) and d.reproducible)(defenses.create(n))]


def embeddings(n_id=12, per=4, d=128, noise=0.6, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(n_id), per)
    E = rng.normal(size=(n_id, d))[lab] + rng.normal(scale=noise, size=(n_id * per, d))
    return E.astype(np.float32), lab


def test_registry_lists_every_built_in_family():
    assert {"none", "noise", "quantize", "projection", "biohash", "iom", "polyprotect", "pca", "he"} <= set(FAMILIES)
    assert {"noise", "projection", "biohash", "iom", "polyprotect"} <= set(RANDOM)


@pytest.mark.parametrize("name", FAMILIES)
def test_shapes_dtypes_and_symmetric_score(name):
    E, lab = embeddings()
    d = defenses.create(name)
    T = d.fit_transform(E, lab)
    assert T.ndim == 2 and len(T) == len(E) and T.dtype == np.float32 and np.isfinite(T).all()
    S = d.score(T, T)
    assert S.shape == (len(E), len(E))
    np.testing.assert_allclose(S, S.T, atol=1e-5)
    assert d.template_nbytes() > 0
    assert set(d.get_params()) == set(type(d)._param_names())


@pytest.mark.parametrize("name", RANDOM)
def test_seed_reproducible_and_seed_matters(name):
    E, lab = embeddings()
    a = defenses.create(name, seed=1).fit_transform(E, lab)
    b = defenses.create(name, seed=1).fit_transform(E, lab)
    c = defenses.create(name, seed=2).fit_transform(E, lab)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", FAMILIES)
def test_genuine_scores_beat_impostors(name):
    E, lab = embeddings()
    d = defenses.create(name)
    T = d.fit_transform(E, lab)
    S = d.score(T, T)
    same = lab[:, None] == lab[None, :]
    off = ~np.eye(len(lab), dtype=bool)
    assert S[same & off].mean() > S[~same].mean()


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (20, 16), elements=st.floats(-3, 3, width=32)), st.integers(1, 8))
def test_quantize_is_idempotent(E, bits):
    d = defenses.create("quantize", bits=bits).fit(E)
    once = d.transform(E)
    np.testing.assert_array_equal(d.transform(once), once)
    assert len(np.unique(d.codes(E))) <= 2 ** bits


def test_one_bit_is_sign_with_hamming():
    E, lab = embeddings()
    d = defenses.create("quantize", bits=1).fit(E)
    T = d.transform(E)
    np.testing.assert_array_equal(T, np.where(E > 0, 1, -1))
    assert d.output_comparator == "hamming" and d.template_nbytes() == 16
    S = d.score(T[:2], T[:2])
    assert S[0, 1] == pytest.approx(np.mean((E[0] > 0) == (E[1] > 0)))


@pytest.mark.parametrize("dim", [32, 96])
def test_projection_keeps_cosines_with_one_key_jl(dim):
    from facepii.metrics import roc_auc

    E, lab = embeddings(n_id=30, per=3)
    d = defenses.create("projection", dim=dim, kind="gaussian", key_mode="system").fit(E)
    T = d.transform(E)
    iu = np.triu_indices(len(E), 1)
    c0, c1 = cosine_similarity(E, E)[iu], cosine_similarity(T, T)[iu]
    # JL: the cosine distortion shrinks like 1/sqrt(dim)
    assert np.abs(c0 - c1).mean() < 1.2 / np.sqrt(dim)
    same = (lab[:, None] == lab[None, :])[iu]
    assert roc_auc(c1[same], c1[~same]) > 0.99 * roc_auc(c0[same], c0[~same])
    o = defenses.create("projection", dim=64, kind="orthogonal").fit(E)
    R = o.matrix(123)
    np.testing.assert_allclose(R @ R.T, np.eye(64), atol=1e-5)


@pytest.mark.parametrize("name, params", [("projection", {"dim": 64}), ("biohash", {"bits": 128}),
                                          ("iom", {}), ("polyprotect", {})])
def test_different_user_keys_are_unlinkable(name, params):
    """The same face under two users' keys matches no better than two different people."""
    E, lab = embeddings(n_id=40, per=1, noise=0.0)
    d = defenses.create(name, key_mode="user", **params).fit(E)
    Ta = d.transform(E, users=np.array([f"a{i}" for i in range(40)]))
    Tb = d.transform(E, users=np.array([f"b{i}" for i in range(40)]))
    cross = np.diag(d.score(Ta, Tb))  # same embedding, different keys
    same_key = np.diag(d.score(Ta, Ta))
    impostor = d.score(Ta, Ta)[~np.eye(40, dtype=bool)]
    assert cross.mean() < same_key.mean() - 0.3
    assert abs(cross.mean() - impostor.mean()) < 0.1


def test_key_ids_record_which_key():
    d = defenses.create("biohash", key_mode="user").fit(embeddings()[0])
    assert list(d.key_ids(np.array(["x", "y"]), 2)) == ["user:x", "user:y"]
    d2 = defenses.create("projection").fit(embeddings()[0])
    assert list(d2.key_ids(None, 2)) == ["system", "system"]
    assert d.per_user and not d2.per_user and not shared_key(d).per_user


def test_noise_epsilon_falls_as_sigma_grows():
    eps = [gaussian_epsilon(s, 1e-5) for s in (0.5, 1, 2, 4, 8)]
    assert all(a > b for a, b in zip(eps, eps[1:]))


@pytest.mark.parametrize("target", [0.5, 1.0, 4.0, 16.0])
def test_calibrated_sigma_reproduces_target_epsilon(target):
    sigma = gaussian_sigma_for(target, 1e-5)
    got = gaussian_epsilon(sigma, 1e-5)
    assert got <= target and target - got <= 0.005 + 1e-9  # Opacus' tolerance


def test_noise_rows_report_budget_and_laplace_is_pure():
    E, lab = embeddings()
    g = defenses.create("noise", epsilon=4.0).fit(E)
    b = g.privacy_budget()
    assert b["mechanism"] == "gaussian" and b["epsilon"] <= 4.0 and b["delta"] == 1e-5
    lap = defenses.create("noise", mechanism="laplace", epsilon=2.0).fit(E)
    assert lap.privacy_budget() == {"epsilon": pytest.approx(2.0), "delta": 0.0, "mechanism": "laplace",
                                    "scale": pytest.approx(2 * np.sqrt(128) / 2.0)}
    T = defenses.create("noise", sigma=0.05).fit_transform(E)
    np.testing.assert_allclose(np.linalg.norm(T, axis=1), 1, atol=1e-5)


def test_composition_equals_steps_by_hand():
    E, lab = embeddings()
    chain = defenses.create("projection+quantize", **{"projection.dim": 32, "quantize.bits": 2})
    assert isinstance(chain, Chain)
    T = chain.fit_transform(E, lab)
    p = defenses.create("projection", dim=32)
    P = p.fit_transform(E, lab)
    q = defenses.create("quantize", bits=2)
    Q = q.fit_transform(P, lab)
    np.testing.assert_array_equal(T, Q)
    np.testing.assert_array_equal(chain.score(T, T), q.score(Q, Q))
    assert chain.flat_params()["projection.dim"] == 32 and chain.get_params()["projection__dim"] == 32
    assert chain.template_nbytes() == q.template_nbytes() == 8


def test_pca_and_polyprotect_shapes():
    E, lab = embeddings()
    assert defenses.create("pca", dim=8).fit_transform(E).shape == (len(E), 8)
    # 128 elements, sets of 5 overlapping by 2 (step 3): ceil(126 / 3) = 42 outputs
    assert defenses.create("polyprotect").fit_transform(E, users=lab).shape == (len(E), 42)
    assert defenses.create("polyprotect", overlap=0).fit_transform(E, users=lab).shape == (len(E), 26)


@pytest.mark.parametrize("spec, params, err, needle", [
    ("nosie", {}, UnknownNameError, "Did you mean 'noise'"),
    ("noise", {"sigmaa": 1}, ParameterError, "has no parameter 'sigmaa'"),
    ("quantize", {"bits": 0}, ParameterError, "bits must be an integer"),
    ("biohash", {"bits": 500}, ParameterError, "bits must be <= the embedding width"),
    ("projection", {"key_mode": "team"}, ParameterError, "key_mode must be"),
    ("polyprotect", {"overlap": 5}, ParameterError, "overlap must be"),
    ("projection+quantize", {"dim": 3, "bits": 2, "bogus.x": 1}, ParameterError, "no step 'bogus'"),
])
def test_bad_defense_specs(spec, params, err, needle):
    E, _ = embeddings()
    with pytest.raises(err, match=needle):
        defenses.create(spec, **params).fit(E)


@pytest.fixture
def npz(tmp_path):
    E, lab = embeddings(n_id=25, per=4)
    p = tmp_path / "e.npz"
    np.savez(p, embeddings=E, labels=lab.astype(str))
    return p


def test_cli_sweep_rows_and_epsilon(npz, tmp_path, capsys):
    import json

    out = tmp_path / "r.json"
    code, stdout, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz}", "--defense", "noise,quantize",
                                 "--param", "sigma=0.02,0.1", "--param", "bits=1,4", "--epsilon", "8",
                                 "--bootstrap", "100", "--json", out], capsys)
    assert code == 0, err
    rows = json.loads(out.read_text())["rows"]
    assert [(r["defense"], r["params"]) for r in rows] == [
        ("none", {}), ("noise", {"sigma": 0.02}), ("noise", {"sigma": 0.1}),
        ("quantize", {"bits": 1}), ("quantize", {"bits": 4}), ("noise", {"epsilon": 8.0})]
    noise = [r for r in rows if r["defense"] == "noise"]
    assert all(r["epsilon"] is not None and r["delta"] == 1e-5 for r in noise)
    assert noise[0]["epsilon"] > noise[1]["epsilon"] and noise[2]["epsilon"] <= 8
    assert rows[0]["utility_drop"] == 0 and rows[2]["utility_drop"] > rows[1]["utility_drop"]
    assert rows[3]["template_bytes"] == 16 and rows[4]["template_bytes"] == 64


@pytest.mark.parametrize("args, needle", [
    (["--defense", "foo"], "unknown defense 'foo'"),
    (["--defense", "noise", "--param", "dim=3"], "--param dim: no listed defense has it"),
    (["--defense", "quantize", "--param", "bits=0"], "bits must be an integer"),
    (["--epsilon", "-1"], "--epsilon -1.0: must be a finite number > 0"),
])
def test_cli_bad_defense_input(npz, capsys, args, needle):
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz}", *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_noise_is_fresh_per_call_and_the_attackers_is_its_own():
    """Defect found in review: the noise was a function of (seed, row position), so the attacker's
    own templates carried the defender's exact noise rows."""
    from defenses.base import l2_normalize
    from facepii.stages import attacker_view

    E = np.random.default_rng(0).normal(size=(500, 64)).astype(np.float32)
    first = defenses.create("noise", sigma=0.01, seed=3).fit(E)
    a, b = first.transform(E), first.transform(E)
    assert not np.allclose(a, b)                       # fresh randomness per call
    d = defenses.create("noise", sigma=0.01, seed=3).fit(E)
    view = attacker_view(d, "disclosed", seed=3)
    np.testing.assert_array_equal(d.transform(E), a)   # the same seed reproduces the defender's run
    mine, theirs = (view(E) - l2_normalize(E)).ravel(), (d.transform(E) - l2_normalize(E)).ravel()
    assert abs(np.corrcoef(mine, theirs)[0, 1]) < 0.05  # the attacker's noise is independent
    ok = defenses.create("noise", sigma=0.01, seed=3).fit(E)
    assert view.defense.sigma_ == ok.sigma_            # same mechanism, same parameters


@pytest.mark.parametrize("params, needle", [
    ({"sigma": "abc"}, "sigma='abc': must be a number"),
    ({"sigma": float("inf")}, "must be a finite number"),
    ({"sigma": float("nan")}, "must be a finite number"),
    ({"seed": 1.5}, "must be an integer"),
])
def test_parameter_values_of_the_wrong_kind_are_refused(params, needle):
    with pytest.raises(ParameterError, match=needle):
        defenses.create("noise", **params)
