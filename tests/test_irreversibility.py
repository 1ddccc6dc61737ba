"""ISO/IEC 30136 irreversibility, the score oracle and the `he` defense, on synthetic keyed templates
and hand-made score sets (the whole chain on real photos is in the slow integration test below)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import defenses
from attacks.oracle import Oracle, Prior, calibrate, decision_search, score_solver
from attacks.solver import can_solve, solve
from facepii import metrics
from facepii.irreversibility import accept_share, isr, operating_point, probing, sar_levels
from facepii.stages import attacker_view


def clustered(n_ids=120, per=5, d=128, spread=0.7, seed=1):
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(n_ids), per)
    E = (rng.normal(size=(n_ids, d))[lab] + spread * rng.normal(size=(n_ids * per, d))).astype(np.float32)
    return E / np.linalg.norm(E, axis=1, keepdims=True), lab


# ---------------------------------------------------------------- numerical solver


@pytest.mark.parametrize("spec,params,floor", [("projection", {"dim": 256}, 0.99), ("iom", {}, 0.9),
                                               ("biohash", {}, 0.7)])
def test_solver_inverts_keyed_templates_with_the_key(spec, params, floor):
    E, lab = clustered()
    users = np.array([f"u{x}" for x in lab])
    d = defenses.create(spec, **params).fit(E)
    T = d.transform(E[:20], users[:20])
    start = np.random.default_rng(0).normal(size=(20, E.shape[1])).astype(np.float32)  # no prior knowledge
    X, loss = solve(d, T, users[:20], start)
    assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    assert (X * E[:20]).sum(1).mean() > floor
    # with a wrong key the same solver recovers nothing like the source
    wrong = copy.deepcopy(d).set_params(seed=99)
    Xw, _ = solve(wrong, T, users[:20], start)
    assert (Xw * E[:20]).sum(1).mean() < 0.5


def test_solver_applies_to_single_keyed_steps_only():
    E, _ = clustered()
    assert can_solve(defenses.create("projection").fit(E))
    assert not can_solve(defenses.create("noise").fit(E))
    assert not can_solve(defenses.create("projection+quantize").fit(E))


# ---------------------------------------------------------------- ISR, SAR, operating points


def test_operating_point_reports_the_fmr_reached():
    imp = np.r_[np.zeros(990), np.ones(10)]  # ties: 1% of the impostors sit at 1.0
    op = operating_point(imp, 1e-3)
    assert op["threshold"] > 1.0 and op["fmr_reached"] == 0.0 and op["impostor_pairs"] == 1000
    op = operating_point(imp, 1e-2)
    assert op["fmr_reached"] <= 1e-2


def test_accept_share_and_isr_on_hand_made_scores():
    scores = np.array([[0.9, 0.1, 0.8], [0.2, 0.95, 0.1]])
    share = accept_share(scores, np.array([0, 1]), np.array([0, 1, 0]), 0.85)
    assert share.tolist() == [0.5, 1.0]  # victim 0: one of its two gallery photos accepts
    imp = np.linspace(-1, 0.5, 30_000)
    G = np.eye(4, dtype=np.float32)
    out = isr(G[[0, 1]], np.array([0, 1]), G, np.array([0, 1, 2, 3]), metrics.cosine_similarity, imp, 200, 0)
    assert out["isr@fmr=1e-3"].value == 1.0 and out["isr@fmr=1e-4"].value == 1.0
    # 10,000 impostor scores put one above the 1e-4 threshold: that rate is not estimable, 1e-3 still is
    out = isr(G[[0, 1]], np.array([0, 1]), G, np.array([0, 1, 2, 3]), metrics.cosine_similarity, imp[::3], 200, 0)
    assert out["isr@fmr=1e-3"].value == 1.0 and np.isnan(out["isr@fmr=1e-4"].value)
    out = isr(G[[2, 3]], np.array([0, 1]), G, np.array([0, 1, 2, 3]), metrics.cosine_similarity, imp, 200, 0)
    assert out["isr@fmr=1e-3"].value == 0.0  # recovered someone else: a failure


def test_sar_levels_grow_with_fmr_and_carry_the_curve():
    rng = np.random.default_rng(0)
    imp = rng.normal(size=50_000)
    scores = rng.normal(size=(40, 40)) + np.diag(rng.normal(loc=2.5, size=40))  # genuine on the diagonal
    out = sar_levels(scores, np.arange(40), np.arange(40), imp, 200, 0)
    vals = [out.sar[k].value for k in ("1e-2", "1e-3", "1e-4")]
    assert vals[0] >= vals[1] >= vals[2]
    assert len(out.curve["fmr"]) == len(out.curve["sar"]) and np.all(np.diff(out.curve["sar"]) >= 0)


@pytest.mark.parametrize("spec,params", [("noise", {"sigma": 0.1}), ("projection+noise", {"sigma": 0.1})])
def test_a_randomized_systems_answers_to_probes_do_not_depend_on_earlier_draws(spec, params):
    """Type I probes and oracle queries draw the system's randomness from streams of their own: what a row's
    other stages drew before (in another order, on another Dask worker) changes nothing."""
    E, lab = clustered(n_ids=30)
    d = defenses.create(spec, **params).fit(E, lab)
    d.transform(E, lab)  # the stored templates
    first = probing(d, 5).transform(E[:10], lab[:10])
    d.transform(E, lab)  # another stage draws from the system's own stream
    probing(d, 6).transform(E, lab)
    np.testing.assert_array_equal(probing(d, 5).transform(E[:10], lab[:10]), first)
    assert not np.array_equal(probing(d, 6).transform(E[:10], lab[:10]), first)
    keyed = defenses.create("projection").fit(E, lab)
    assert probing(keyed, 5) is keyed  # nothing random: the system itself


# ---------------------------------------------------------------- oracles


def _setup(spec, params=None):
    E, lab = clustered(n_ids=300)
    aux = lab >= 40
    vic = np.flatnonzero(~aux & (np.arange(len(lab)) % 5 == 0))
    d = defenses.create(spec, **(params or {})).fit(E[~aux])
    T = d.transform(E, lab)
    _, imp = metrics.pair_scores(T[~aux], lab[~aux], d.score)
    stored = E[vic] if d.encrypted else T[vic]
    return E, lab, aux, vic, d, Oracle(d, stored, lab[vic], metrics.threshold_at_far(imp, 1e-3))


def test_score_solver_recovers_raw_embeddings_within_the_budget():
    E, lab, aux, vic, d, oracle = _setup("none")
    calib = calibrate(attacker_view(d, "secret", 0), E[aux], lab[aux], 0)
    res = score_solver(oracle, E[aux], calib, Prior(E[aux]), 200, 0)
    assert res.queries_used.max() <= 200
    assert (res.estimates * E[vic]).sum(1).min() > 0.999  # more queries than dimensions: exact
    assert (res.queries_to_match > 0).all() and res.queries_to_match.max() <= 200


def test_score_solver_with_fewer_queries_than_dimensions_uses_the_prior():
    E, lab, aux, vic, d, oracle = _setup("noise", {"sigma": 0.05})
    calib = calibrate(attacker_view(d, "secret", 0), E[aux], lab[aux], 0)
    prior = Prior(E[aux])
    res = score_solver(oracle, E[aux], calib, prior, 64, 0)
    assert res.queries_used.max() <= 64
    mean = prior.mean / np.linalg.norm(prior.mean)
    assert (res.estimates * E[vic]).sum(1).mean() > (E[vic] @ mean).mean() + 0.2


def test_decision_search_counts_queries_and_beats_the_prior():
    E, lab, aux, vic, d, oracle = _setup("none")
    prior = Prior(E[aux])
    res = decision_search(oracle, E[aux], prior, 1500, 0)
    assert res.queries_used.max() <= 1500
    matched = res.queries_to_match > 0
    assert matched.any() and (res.queries_to_match[matched] <= res.queries_used[matched]).all()
    mean = prior.mean / np.linalg.norm(prior.mean)
    assert (res.estimates[matched] * E[vic][matched]).sum(1).mean() > (E[vic][matched] @ mean).mean() + 0.2


# ---------------------------------------------------------------- he (real CKKS)


def test_he_matching_through_real_encryption_matches_plaintext():
    pytest.importorskip("tenseal")
    E, lab = clustered(n_ids=20, per=4)
    d = defenses.create("he", impostor_pairs=1000).fit(E)
    U = E / np.linalg.norm(E, axis=1, keepdims=True)
    s = d.encrypted_pair_scores(E[:70], E[10:80])
    assert np.abs(s - (U[:70] * U[10:80]).sum(1)).max() < 1e-4
    assert 0 < np.abs(s - (U[:70] * U[10:80]).sum(1)).max()  # the numbers really went through CKKS
    assert d.ms_per_comparison() > 0 and d.template_nbytes() > 1000
    assert np.abs(d.transform(E) - U).max() < 1e-4
    c = d.with_randomness(3)  # the attacker's copy shares the key material
    assert c.context_ is d.context_


def test_he_utility_uses_all_genuine_pairs_and_a_seeded_impostor_sample():
    pytest.importorskip("tenseal")
    from facepii.metrics import sample_impostor_pairs
    from facepii.utility import encrypted_utility

    E, lab = clustered(n_ids=40, per=4, spread=1.0)
    pairs = sample_impostor_pairs(lab, 1000, 0)
    assert len(pairs) == 1000 and len({tuple(p) for p in pairs}) == 1000
    assert (lab[pairs[:, 0]] != lab[pairs[:, 1]]).all() and (pairs[:, 0] < pairs[:, 1]).all()
    assert np.array_equal(pairs, sample_impostor_pairs(lab, 1000, 0))
    d = defenses.create("he", impostor_pairs=1000).fit(E)
    u, info, _ = encrypted_utility(E, lab, d, 200, 0)
    assert info["genuine_pairs"] == 40 * 6 and info["impostor_pairs_sampled"] == 1000
    assert info["abs_error_vs_plaintext"]["max"] < 1e-4
    plain = metrics.verification(E, lab, metrics.cosine_similarity, n_boot=200)
    lo, hi = u["eer"].ci95
    assert lo - 0.02 <= plain["eer"].value <= hi + 0.02


def test_verification_from_listed_pairs_equals_all_pairs():
    E, lab = clustered(n_ids=60, per=8, d=64, spread=0.8)
    a = metrics.verification(E, lab, metrics.cosine_similarity, n_boot=300)
    S = metrics.cosine_similarity(E, E)  # the same scores, computed in one block: equal wherever it runs
    iu = np.triu_indices(len(lab), 1)
    same = lab[iu[0]] == lab[iu[1]]
    b = metrics.verification_pairs(S[iu][same], lab[iu[0]][same], S[iu][~same],
                                   np.stack([lab[iu[0]][~same], lab[iu[1]][~same]], 1), n_boot=300)
    for k in ("tar@far=1e-2", "tar@far=1e-3", "eer"):
        assert a[k].value == b[k].value and a[k].ci95 == b[k].ci95


# ---------------------------------------------------------------- the chain on real photos


@pytest.mark.slow
@pytest.mark.integration
def test_iso_and_oracle_figures_on_real_faces(celeba, session_cache, tmp_path):
    """Same 60 identities and face model as the other slow test (both cached in the session):
    he (real CKKS) and a keyed projection with irreversibility, SAR type I/II and the score oracle."""
    pytest.importorskip("tenseal")
    from facepii.config import EvaluateConfig
    from facepii.outputs import write_outputs
    from facepii.pipeline import run

    cfg = EvaluateConfig.from_options(dataset=f"celeba:{celeba}", encoder="sface", defenses=["he", "projection"],
                                      params={"impostor_pairs": [4096]}, attacks=["inverse"],
                                      budget="quick", max_identities=60, cache_dir=str(session_cache),
                                      bootstrap=200, seed=0, oracle="score")
    ev = run(cfg)
    rows = {r["defense"]: r for r in ev.report.to_dict()["rows"]}
    none, he, proj = rows["none"], rows["he"], rows["projection"]
    # he: utility through real encryption equals the plaintext row within its interval
    info = he["encrypted_matching"]
    assert info["impostor_pairs_sampled"] == 4096 and info["abs_error_vs_plaintext"]["max"] < 1e-4
    lo, hi = he["utility"]["tar@far=1e-3"]["ci95"]
    assert lo <= none["utility"]["tar@far=1e-3"]["value"] <= hi
    assert "not_applicable" in he["privacy_key_secret"]
    # the score oracle recovers raw-matching embeddings almost exactly (200 queries > 128 dimensions)
    o = he["privacy_oracle"]["oracle"]
    assert o["cosine_to_source"]["value"] > 0.99 and o["queries_used"]["max"] <= 200
    assert he["privacy_oracle"]["rank1"]["ci95"][0] > ev.report.extra["privacy_baselines"]["random_guess_rank1"]
    # irreversibility: the numerical solver runs for the keyed single step with the key disclosed
    ir = proj["iso30136"]["irreversibility"]
    assert set(ir["per_method"]) == {"learned", "solver"} and ir["key"] == "disclosed"
    for kind in ("type1", "type2"):
        op = ir["faces"][kind]["operating_point@fmr=1e-3"]
        assert op["fmr_reached"] <= 1e-3 and op["impostor_pairs"] > 10_000
    # raw templates: inverting the unprotected "template" is the embedding itself
    assert none["iso30136"]["irreversibility"]["cosine_to_source"]["value"] > 0.999
    paths = {p.name for p in write_outputs(ev, tmp_path / "out")}
    assert {"irreversibility.png", "report.md", "report.html"} <= paths
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Summary" in md and "## ISO/IEC 30136: irreversibility" in md and "## Score oracle" in md


# ---------------------------------------------------------------- the executive summary


def _row(defense, params, rank1, leak, tar, oracle=None):
    e = lambda v, lo, hi: {"value": v, "ci95": [lo, hi]}  # noqa: E731
    fig = {"rank1": e(*rank1), "leakage_ratio": e(*leak)}
    r = {"defense": defense, "params": params, "utility": {"tar@far=1e-3": e(tar, tar - 0.02, tar + 0.02)},
         "privacy": {"judge": "dlib", "per_attack": {"optimize": fig}}}
    if oracle:
        r["privacy_oracle"] = {"judge": "dlib", "per_attack": {"optimize": {"rank1": e(*oracle)}},
                               "oracle": {"kind": "score", "budget_per_victim": 200,
                                          "queries_to_match": {"median": 35.0}}}
    return r


def _summary(rows, victims=50):
    from facepii.report import Report
    from facepii.report.tables import executive_summary

    return " ".join(executive_summary(Report.from_dict({"rows": rows, "split": {"victims": victims}})))


def test_executive_summary_names_the_leak_the_best_protection_and_the_4x_line():
    rows = [_row("none", {}, (0.7, 0.6, 0.8), (35, 30, 40), 0.84),
            _row("noise", {"sigma": 0.1}, (0.44, 0.3, 0.6), (22, 15, 30), 0.25),
            _row("biohash", {}, (0.06, 0.0, 0.07), (3, 0, 3.5), 0.64, oracle=(0.3, 0.2, 0.4))]
    text = _summary(rows)
    assert "rank-1 0.700 [0.600, 0.800] among 50 victims" in text and "personal data" in text
    assert "biohash leaks least" in text and "+0.200 in TAR@FMR1e-3" in text
    assert "1 of 2 keep leakage below 4 times random" in text and "biohash." in text
    assert "200 queries per victim" in text and "median queries to a match 35" in text
    rows[2]["privacy"]["per_attack"]["optimize"]["leakage_ratio"]["ci95"] = [0, 5.0]  # upper end above the line
    assert "None of the tested protections" in _summary(rows)


def test_the_attacks_use_the_solver_when_the_attacker_finds_it_better_on_its_own_faces():
    from attacks.base import RowCache, ThreatModel, estimate_raw, learned_raw

    E, lab = clustered(n_ids=16)
    aux = lab >= 6
    vic = np.flatnonzero((lab < 6) & (np.arange(len(lab)) % 5 == 0))
    users = np.array([f"u{x}" for x in lab])
    d = defenses.create("projection", dim=192, key_mode="user").fit(E)
    T = d.transform(E, users)

    def threat(key):
        return ThreatModel(encoder=None, defense=d, face_model=None, aux_embeddings=E[aux], aux_users=users[aux],
                           protect=lambda X, u=None: d.transform(X, u), budget=None, key=key, seed=0)

    c, cache = threat("disclosed"), RowCache()
    est = estimate_raw(c, cache, T[aux], T[vic], users[vic])
    learned = learned_raw(c, cache, T[aux], T[vic], users[vic])
    assert cache.solver_better is True
    assert (est * E[vic]).sum(1).mean() > 0.999 >= (learned * E[vic]).sum(1).mean() - 1e-3
    s, cache = threat("secret"), RowCache()  # without the key nothing can be solved: the learned inverse only
    assert np.array_equal(estimate_raw(s, cache, T[aux], T[vic], users[vic]),
                          learned_raw(s, cache, T[aux], T[vic], users[vic]))
    assert cache.solver_better is None
