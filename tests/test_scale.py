"""Large galleries: sampled impostor pairs within a memory budget, exact rank-1 search, paired scores."""

from __future__ import annotations

import numpy as np
import pytest

import defenses
from facepii import metrics
from facepii.metrics import _identification, _pairs


def clustered(n_ids=300, per=6, d=32, spread=1.2, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(n_ids), per)
    E = (rng.normal(size=(n_ids, d))[lab] + spread * rng.normal(size=(n_ids * per, d))).astype(np.float32)
    return E, lab


def test_sampled_impostors_are_distinct_impostor_pairs_and_seeded():
    _, lab = clustered()
    p = _pairs.sample_impostor_pairs(lab, 20_000, 3)
    assert len(p) == 20_000 and len(np.unique(p[:, 0] * len(lab) + p[:, 1])) == 20_000
    assert (p[:, 0] < p[:, 1]).all() and (lab[p[:, 0]] != lab[p[:, 1]]).all()
    assert np.array_equal(p, _pairs.sample_impostor_pairs(lab, 20_000, 3))
    assert not np.array_equal(p, _pairs.sample_impostor_pairs(lab, 20_000, 4))
    tiny = np.repeat(np.arange(4), 2)  # 24 impostor pairs there are: asking for more gives all of them
    assert len(_pairs.sample_impostor_pairs(tiny, 1000, 0)) == 24


def test_a_small_memory_budget_samples_impostors_and_says_how_much_that_adds(monkeypatch):
    E, lab = clustered()
    lab = lab.astype(str)  # text labels, as datasets give them
    exact = metrics.utility(E, lab, metrics.cosine_similarity, n_boot=200, seed=0)
    assert "impostor_sampling" not in exact
    monkeypatch.setattr(_pairs, "IMPOSTOR_SAMPLE", 200_000)
    sampled = metrics.utility(E, lab, metrics.cosine_similarity, n_boot=200, seed=0,
                              max_memory=1 << 20, paired_fn=metrics.ROWWISE["cosine"])
    s = sampled["impostor_sampling"]
    _, total = _pairs.pair_counts(lab)
    assert s["sampled"] == 200_000 and s["total"] == total == sampled["n_impostor"] + total - 200_000
    assert sampled["n_genuine"] == exact["n_genuine"]
    for k in ("tar@far=1e-2", "tar@far=1e-3", "eer"):
        lo, hi = sampled[k].ci95
        assert lo - 0.01 <= exact[k].value <= hi + 0.01
        assert 0 <= s["figures"][k]["share_of_variance"] <= 1
    assert sampled["rank1"].value == exact["rank1"].value  # identification is exact either way


def test_faiss_rank1_equals_the_score_matrix_search():
    pytest.importorskip("faiss")
    E, lab = clustered()
    a = metrics.identification(E, lab, metrics.cosine_similarity, 1, 200, 0, inner_product=True)
    b = metrics.identification(E, lab, metrics.cosine_similarity, 1, 200, 0, max_memory=1 << 16)
    assert a == b and 0.1 < a.value < 0.9


def test_ties_with_the_true_identity_count_against_it_in_faiss_too():
    pytest.importorskip("faiss")
    G = np.eye(3, dtype=np.float32)
    probes = np.array([[1, 1, 0], [1, 0, 0]], np.float32)  # first: tied between gallery 0 and 1
    hits = _identification.faiss_rank1(probes, G, np.array([0, 0]), block=10)
    assert hits.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("spec,params", [("none", {}), ("quantize", {"bits": 1}), ("quantize", {"bits": 4}),
                                         ("biohash", {}), ("iom", {}), ("projection+quantize", {}),
                                         ("polyprotect", {}), ("noise", {"sigma": 0.1})])
def test_paired_scores_equal_the_diagonal_of_the_score_matrix(spec, params):
    E, lab = clustered(n_ids=50, d=128)
    d = defenses.create(spec, **params).fit(E)
    T = d.transform(E, lab)
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(E), 400), rng.integers(0, len(E), 400)
    assert np.allclose(d.paired_score(T[i], T[j]), np.diagonal(d.score(T[i], T[j])), atol=1e-5)
