"""Several stolen templates per victim (--templates-per-victim K1,K2): the split, how attacks combine
K templates, the report's figures per K read back, and gate rules at a K."""

import copy

import numpy as np
import pytest
from test_contracts import ATTACKS, aux, threat  # noqa: F401  (aux: the contract tests' fixture)

import attacks
from attacks.base import RowCache, estimate_raw, per_template, pool
from facepii import gate as g
from facepii.config import EvaluateConfig
from facepii.errors import ConfigError, ParameterError, ReportError
from facepii.estimates import RowEstimates
from facepii.stages import split_identities

from helpers import make_report


def test_the_split_takes_k_photos_per_victim_none_of_them_in_the_gallery():
    labels = np.repeat(np.arange(30), 6)
    labels[:6] = 99  # one identity ...
    labels = np.concatenate([labels, [98, 98, 98]])  # ... and one with only 3 photos: never a victim at K = 4
    s4 = split_identities(labels, 10, seed=3, templates=4)
    assert s4.stolen.shape == (10, 4)
    np.testing.assert_array_equal(s4.stolen[:, 0], s4.source_pos)
    np.testing.assert_array_equal(s4.stolen_for(1), s4.source_pos)
    assert s4.stolen_for(2).shape == (10, 2)
    for v, row in zip(s4.victim_ids, s4.stolen):
        assert (labels[row] == v).all() and len(set(row)) == 4
        assert not np.isin(row, s4.gallery_pos).any()
        assert (labels[s4.gallery_pos] == v).sum() >= 1
    assert 98 not in s4.victim_ids
    assert np.isin(s4.victim_pos, np.flatnonzero(np.isin(labels, s4.victim_ids))).all()
    assert len(s4.victim_pos) == np.isin(labels, s4.victim_ids).sum()
    assert s4.to_dict(labels)["templates_per_victim_max"] == 4
    s1 = split_identities(labels, 10, seed=3)
    assert s1.stolen_pos is None and s1.stolen.shape == (10, 1)
    with pytest.raises(ParameterError, match="the split holds 1"):
        s1.stolen_for(2)
    with pytest.raises(ParameterError, match="7 images a victim needs"):
        split_identities(labels, 10, seed=3, templates=6)


def test_pooling_several_noisy_templates_recovers_the_embedding_better(aux):  # noqa: F811
    rng = np.random.default_rng(0)
    d, n, k = 128, 60, 4
    truth = rng.normal(size=(n, d))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    photos = truth[:, None, :] + 0.03 * rng.normal(size=(n, k, d))   # K photos of each victim
    noisy = photos + 0.1 * rng.normal(size=photos.shape)             # noise sigma 0.1: |noise| ~ 1.1
    noisy = (noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)).astype(np.float32)
    flat, users, kk = per_template(noisy, np.arange(n))
    assert flat.shape == (n * k, d) and kk == k and list(users[:k]) == [0] * k
    one = np.sum(noisy[:, 0] * truth, 1).mean()
    four = np.sum(pool(flat, k) * truth, 1).mean()
    assert four > one + 0.1, (one, four)   # 0.650 against 0.860
    # an attacker's estimate of raw templates does the same
    tm, _ = threat(aux, "white", "none")
    assert np.allclose(estimate_raw(tm, RowCache(), None, noisy, None), pool(flat, k), atol=1e-6)


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("defense", ["noise", "iom", "projection"])
def test_every_attack_combines_k_templates_into_one_face(aux, name, defense):  # noqa: F811
    enc, faces, E, users, fm = aux
    tm, d = threat(aux, "white", defense)
    T_aux = tm.protect(E, users)
    a = attacks.create(name).fit(T_aux, faces, threat=tm, cache=RowCache())
    vic = np.array(["v0", "v1"])
    T2 = d.transform(E[[0, 1, 3, 4]], np.repeat(vic, 2)).reshape(2, 2, -1)
    out = a.reconstruct(T2, users=vic)
    assert out.shape == (2, 112, 112, 3) and out.dtype == np.uint8
    # K copies of one template are that template
    one = a.reconstruct(T2[:, 0], users=vic)
    same = a.reconstruct(np.repeat(T2[:, :1], 3, axis=1), users=vic)
    assert np.abs(same.astype(int) - one.astype(int)).max() <= 2


def test_nearest_takes_the_best_mean_score_over_the_k_templates(aux):  # noqa: F811
    enc, faces, E, users, fm = aux
    tm, d = threat(aux, "white", "none")
    a = attacks.create("nearest").fit(E, faces, threat=tm)
    T = np.stack([E[[0, 1]], E[[0, 1]]], axis=1)           # victim 0: two templates of aux face 0 ...
    T[0, 1] = E[3]                                          # ... or one of 0 and one of 3
    S = d.score(E[[0, 3]], E).mean(axis=0)
    assert a.best(T[:1])[0] == int(np.argmax(S))
    assert a.best(T[1:])[0] == 1


def _row(block):
    return {"defense": "noise", "params": {"sigma": 0.1}, "utility": {}, "privacy": copy.deepcopy(block)}


def test_k_figures_are_written_read_back_and_checked():
    rep = make_report()
    noise = rep["rows"][1]
    noise["privacy_templates_per_victim"] = {"4": copy.deepcopy(noise["privacy"])}
    row = RowEstimates.from_dict(noise, "rows[1]")
    assert set(row.privacy_templates) == {4} and row.privacy_templates[4].attack == "optimize"
    assert row.to_dict()["privacy_templates_per_victim"] == RowEstimates.from_dict(
        row.to_dict(), "r").to_dict()["privacy_templates_per_victim"]
    # "²" passes str.isdigit() but not int(); "04" would be the same K as "4" and silently replace it
    for bad, needle in [({"x": {}}, "not a number of templates"), ({"0": {}}, "not a number of templates"),
                        ({"\u00b2": {}}, "not a number of templates"), ({"04": {}}, "not a number of templates"),
                        ({"2": {"not_applicable": "x"}}, "not the figures"), ([1], "not a table")]:
        with pytest.raises(ReportError, match=needle):
            RowEstimates.from_dict({**noise, "privacy_templates_per_victim": bad}, "rows[1]")


def test_gate_rules_at_a_k():
    rep = make_report(leak=(5.0, 3.0, 8.0))
    rep["settings"] = {"templates_per_victim": [1, 4]}
    four = copy.deepcopy(rep["rows"][1]["privacy"])
    four["rank1"] = {"value": 0.4, "ci95": [0.3, 0.5]}
    rep["rows"][1]["privacy_templates_per_victim"] = {"4": four}
    gate = {"max_rank1": 0.2, "templates_per_victim": {"4": {"max_rank1": 0.45}, "2": {"max_rank1": 0.9}}}
    g.check_gate(gate)
    vs = {v.rule: v for v in g.run_gate(rep, gate)}
    assert vs["max_rank1"].passed and vs["max_rank1"].judged == pytest.approx(8.0 / 50)
    assert not vs["max_rank1@K=4"].passed and vs["max_rank1@K=4"].judged == 0.5
    assert "4 stolen templates" in vs["max_rank1@K=4"].message
    assert not vs["max_rank1@K=2"].passed and "--templates-per-victim 1,2" in vs["max_rank1@K=2"].message
    # the headline K is read from the report: a report made with --templates-per-victim 4,1
    rep["settings"] = {"templates_per_victim": [4, 1]}
    vs = {v.rule: v for v in g.run_gate(rep, {"templates_per_victim": {"4": {"max_rank1": 0.2}}})}
    assert vs["max_rank1@K=4"].passed
    for bad, needle in [({"templates_per_victim": {"x": {}}}, "not a number of templates"),
                        ({"templates_per_victim": {"2": {"max_dsys": 0.1}}}, "has no rule 'max_dsys'"),
                        ({"templates_per_victim": [2]}, "one table per K")]:
        with pytest.raises(ConfigError, match=needle):
            g.check_gate(bad)


@pytest.mark.parametrize("value, needle", [("1,1", "distinct"), ("0", "1..16"), ("17", "1..16"), ("", "distinct"),
                                           ("a", "whole numbers")])
def test_the_option_is_checked_before_any_work(value, needle):
    with pytest.raises((ParameterError, ConfigError), match=needle):
        EvaluateConfig.from_options(attacks=["nearest"], templates_per_victim=value).validate()


def test_several_k_need_attacks():
    with pytest.raises(ParameterError, match="no effect without attacks"):
        EvaluateConfig.from_options(templates_per_victim="1,2").validate()
    cfg = EvaluateConfig.from_options(attacks=["nearest"], templates_per_victim="4,1,2").validate()
    assert cfg.privacy.templates_per_victim == [4, 1, 2]


def test_eot_views_are_seeded_differentiable_and_vanish_at_range_zero():
    import torch

    from attacks.eot import DEFAULT_RANGE, ViewRange, views

    x = torch.rand(3, 3, 112, 112, requires_grad=True)
    a = views(x, 2, np.random.default_rng(5))
    assert a.shape == (6, 3, 112, 112) and float(a.detach().min()) >= 0 and float(a.detach().max()) <= 1
    assert torch.equal(a.detach(), views(x.detach(), 2, np.random.default_rng(5)))
    assert not torch.equal(a.detach(), views(x.detach(), 2, np.random.default_rng(6)))
    a.sum().backward()
    assert float(x.grad.abs().sum()) > 0
    still = ViewRange(shift=0, scale=0, rotate=0, flip=0, blur=0, resample=112, brightness=0, contrast=0)
    same = views(x.detach(), 1, np.random.default_rng(0), still)
    assert float((same - x.detach()).abs().max()) < 1e-5
    assert DEFAULT_RANGE.scaled(2).rotate == 2 * DEFAULT_RANGE.rotate and DEFAULT_RANGE.scaled(0).resample == 112


def test_optimize_with_eot_is_seeded_and_optimises_other_views(aux):  # noqa: F811
    from attacks.optimize import Optimize

    enc, faces, E, users, fm = aux
    tm, d = threat(aux, "white", "none")
    out = []
    for eot in (1, 1, 0):
        a = Optimize(steps=3, eot=eot).fit(E, faces, threat=tm, cache=RowCache())
        out.append(a.reconstruct(E[:2]))
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.array_equal(out[0], out[2])


def test_optimize_gives_the_same_faces_whatever_part_of_the_batch_each_pass_takes(aux, monkeypatch):  # noqa: F811
    """The target's forward + backward passes a part of the faces and views at a time (memory): each face's
    gradient is its own, so one pass for all and one per chunk of 8 give the same faces, bit for bit."""
    from attacks.optimize import Optimize

    enc, faces, E, users, fm = aux
    tm, d = threat(aux, "white", "none")
    out = []
    for per_pass in (1000, 1, 2):
        monkeypatch.setattr(Optimize, "images_per_pass", per_pass)
        a = Optimize(steps=3, eot=2).fit(E, faces, threat=tm, cache=RowCache())
        out.append(a.reconstruct(E[:12]))  # 36 faces and views: 5 chunks of 8, the last one short
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])


def test_the_k_figure_draws_every_row_in_its_own_colour():
    from facepii.plots import templates_figure
    from facepii.report import Report

    rep = make_report()
    rep["settings"] = {"templates_per_victim": [1, 2]}
    noise = rep["rows"].pop()
    for sigma in (0.01, 0.02, 0.05, 0.1, 0.2):  # the 4th protected row once took the unprotected row's red
        rep["rows"].append({**copy.deepcopy(noise), "params": {"sigma": sigma}})
    for r in rep["rows"]:
        r["privacy_templates_per_victim"] = {"2": copy.deepcopy(r["privacy"])}
    fig = templates_figure(Report.from_dict(rep))
    from matplotlib.colors import to_hex

    colours = [to_hex(c.lines[0].get_color()) for c in fig.axes[0].containers]
    assert len(colours) == 6 and len(set(colours)) == 6
