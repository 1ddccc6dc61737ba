import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score, roc_curve

from facepii import metrics as M


def _sk_tar(g, i, far):
    y = np.r_[np.ones(len(g)), np.zeros(len(i))]
    fpr, tpr, _ = roc_curve(y, np.r_[g, i], drop_intermediate=False)
    return tpr[fpr <= far + 1e-15].max()


def _sk_eer(g, i):
    y = np.r_[np.ones(len(g)), np.zeros(len(i))]
    fpr, tpr, _ = roc_curve(y, np.r_[g, i], drop_intermediate=False)
    fnr = 1 - tpr
    k = np.nanargmin(np.abs(fnr - fpr))
    return (fpr[k] + fnr[k]) / 2


@pytest.mark.parametrize("seed", range(5))
def test_tar_eer_auc_match_sklearn_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    g = rng.normal(2.0, 1.0, 3000)
    i = rng.normal(0.0, 1.0, 200_000)
    for far in (1e-2, 1e-3, 1e-4):
        assert M.tar_at_far(g, i, far) == pytest.approx(_sk_tar(g, i, far), abs=1e-12)
    assert M.eer(g, i) == pytest.approx(_sk_eer(g, i), abs=2e-3)
    assert M.roc_auc(g, i) == pytest.approx(roc_auc_score(np.r_[np.ones(3000), np.zeros(200_000)], np.r_[g, i]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=60), st.lists(st.integers(0, 20), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.1, 0.01, 1e-3]))
def test_tar_and_auc_match_sklearn_with_ties(g, i, far):
    g, i = np.array(g, float), np.array(i, float)
    assert M.tar_at_far(g, i, far) == pytest.approx(_sk_tar(g, i, far), abs=1e-12)
    y = np.r_[np.ones(len(g)), np.zeros(len(i))]
    if 0 < y.sum() < len(y):
        assert M.roc_auc(g, i) == pytest.approx(roc_auc_score(y, np.r_[g, i]))


def test_exact_hand_made_scores():
    g = np.array([0.9, 0.8, 0.7, 0.6])
    i = np.array([0.75, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.0, -0.1, -0.2])
    # FAR <= 0.1 allows one impostor at or above the threshold: t just above 0.5 accepts all 4
    assert M.tar_at_far(g, i, 0.1) == 1.0
    # FAR < 0.1 allows none: threshold above 0.75 -> 2/4
    assert M.tar_at_far(g, i, 0.05) == 0.5
    # AUC: of 40 pairs, genuine 0.7 and 0.6 lose to 0.75 -> 38/40
    assert M.roc_auc(g, i) == pytest.approx(38 / 40)
    # (FAR, FRR) by threshold: (0.5, 0.6] -> (0.1, 0); (0.6, 0.7] -> (0.1, 0.25); (0.75, 0.8] -> (0, 0.5)
    # the smallest |FAR - FRR| is 0.1 at (0.1, 0): EER = 0.05
    assert M.eer(g, i) == pytest.approx(0.05)
    assert M.eer(np.array([1.0, 2.0]), np.array([-1.0, 0.0])) == 0.0


def _synthetic(n_id=40, per=6, noise=1.0, d=32, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(n_id), per)
    T = rng.normal(size=(n_id, d))[lab] + rng.normal(scale=noise, size=(len(lab), d))
    return T.astype(np.float32), lab


def test_pair_scores_counts_and_chunking_agree():
    T, lab = _synthetic()
    g1, i1 = M.pair_scores(T, lab, M.cosine_similarity)
    g2, i2 = M.pair_scores(T, lab, M.cosine_similarity, max_bytes=5_000)  # many tiny blocks
    n = len(lab)
    assert len(g1) == 40 * 6 * 5 // 2 and len(g1) + len(i1) == n * (n - 1) // 2
    np.testing.assert_allclose(np.sort(g1), np.sort(g2), atol=1e-5)
    np.testing.assert_allclose(np.sort(i1), np.sort(i2), atol=1e-5)


@pytest.mark.parametrize("noise", [0.8, 1.5])
def test_bootstrap_interval_is_as_wide_as_the_figure_varies_between_studies(noise):
    """The identity bootstrap must reflect how much a figure moves when the same experiment is run on
    other identities: its 95% interval is about 2 x 1.96 sd of the figure over independent studies."""
    keys = ("tar@far=1e-2", "eer", "auc", "rank1")
    figures = {k: [] for k in keys}
    widths = {k: [] for k in keys}
    for study in range(24):
        T, lab = _synthetic(n_id=30, per=4, noise=noise, seed=100 + study)
        u = M.utility(T, lab, M.cosine_similarity, n_boot=200, seed=study)
        for k in keys:
            figures[k].append(u[k].value)
            widths[k].append(u[k].ci95[1] - u[k].ci95[0])
            assert 0 <= u[k].ci95[0] <= u[k].ci95[1] <= 1, k
    for k in keys:
        spread = 2 * 1.96 * np.std(figures[k], ddof=1)
        assert 0.6 * spread < np.mean(widths[k]) < 2.2 * spread, (k, np.mean(widths[k]), spread)


def test_grid_bootstrap_with_unit_weights_reproduces_exact_values(monkeypatch):
    T, lab = _synthetic(n_id=60, per=8, noise=1.3)
    g, i = M.pair_scores(T, lab, M.cosine_similarity)
    import facepii.metrics._verification as V

    monkeypatch.setattr(V, "bootstrap_weights", lambda n, b, s: np.ones((b, n)))
    u = M.verification(T, lab, M.cosine_similarity, n_boot=2)
    assert u["tar@far=1e-2"].ci95[0] == pytest.approx(M.tar_at_far(g, i, 1e-2), abs=0.01)
    assert u["eer"].ci95[0] == pytest.approx(M.eer(g, i), abs=0.005)
    assert u["auc"].ci95[0] == pytest.approx(M.roc_auc(g, i), abs=0.002)


def test_block_bootstrap_above_max_groups():
    """Above max_groups identities are resampled in blocks: the point value is the same and the
    interval about as wide as resampling every identity."""
    T, lab = _synthetic(n_id=50, per=4)
    blocks = M.verification(T, lab, M.cosine_similarity, n_boot=400, max_groups=10)["eer"]
    each = M.verification(T, lab, M.cosine_similarity, n_boot=400)["eer"]
    assert blocks.value == each.value
    w_blocks, w_each = blocks.ci95[1] - blocks.ci95[0], each.ci95[1] - each.ci95[0]
    assert 0.5 * w_each < w_blocks < 2.0 * w_each


def test_more_noise_means_worse_verification():
    good = M.verification(*_synthetic(noise=0.8), M.cosine_similarity, n_boot=100)
    bad = M.verification(*_synthetic(noise=2.0), M.cosine_similarity, n_boot=100)
    assert good["eer"].value < bad["eer"].value
    assert good["tar@far=1e-2"].value > bad["tar@far=1e-2"].value


def test_rank_k_hits_ties_count_against():
    s = np.array([[0.9, 0.1, 0.9], [0.2, 0.8, 0.1], [0.5, 0.6, 0.7]])
    assert list(M.rank_k_hits(s, np.array([0, 1, 0]), 1)) == [0, 1, 0]
    assert list(M.rank_k_hits(s, np.array([0, 1, 0]), 2)) == [1, 1, 0]
    assert list(M.rank_k_hits(s, np.array([0, 1, 0]), 3)) == [1, 1, 1]


def test_identification_perfect_and_random():
    T, lab = _synthetic(noise=0.01)
    assert M.identification(T, lab, M.cosine_similarity).value == 1.0
    rng = np.random.default_rng(3)
    r = M.identification(rng.normal(size=T.shape), lab, M.cosine_similarity, n_boot=200)
    assert r.value < 0.2 and r.ci95[0] <= 1 / 40 <= r.ci95[1] + 0.05


def test_comparators():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(M.cosine_similarity(a, a), [[1, 0], [0, 1]], atol=1e-6)
    np.testing.assert_allclose(M.neg_l2(a, a), [[0, -np.sqrt(5)], [-np.sqrt(5), 0]], atol=1e-5)
    b = np.array([[1, 0, 1, 1], [0, 0, 1, 1]], float)
    np.testing.assert_allclose(M.hamming_similarity(b, b), [[1, 0.75], [0.75, 1]])


def test_bootstrap_mean_and_ratio():
    e = M.bootstrap_mean(np.r_[np.ones(30), np.zeros(70)], n_boot=500)
    assert e.value == 0.3 and e.ci95[0] < 0.3 < e.ci95[1]
    r = M.bootstrap_ratio(np.array([1, 2, 3.0]), np.array([2, 2, 4.0]), n_boot=500)
    assert r.value == pytest.approx(6 / 8)


@pytest.mark.parametrize("d", [40, 48, 64, 96])
def test_grid_bootstrap_exact_on_tied_binary_scores(monkeypatch, d):
    """Binary templates give few distinct scores; the bootstrap grid must keep '>= v' and '> v' apart,
    so with unit weights it reproduces the exact (no-interpolation) TAR@FAR."""
    T, lab = _synthetic(n_id=80, per=6, noise=1.4, d=d)
    B = (T > 0).astype(np.float32)
    g, i = M.pair_scores(B, lab, M.hamming_similarity)
    assert len(np.unique(i)) <= d + 1
    import facepii.metrics._verification as V

    monkeypatch.setattr(V, "bootstrap_weights", lambda n, b, s: np.ones((b, n)))
    levels = (3e-2, 1e-2, 3e-3, 1e-3)
    u = M.verification(B, lab, M.hamming_similarity, far_levels=levels, n_boot=2)
    for f in levels:
        assert u[M.far_key(f)].ci95[0] == pytest.approx(M.tar_at_far(g, i, f), abs=1e-12)


def test_binary_scores_interval_brackets_point():
    T, lab = _synthetic(n_id=80, per=6, noise=1.4, d=48)
    B = (T > 0).astype(np.float32)
    u = M.verification(B, lab, M.hamming_similarity, n_boot=400, seed=3)
    for key in ("tar@far=1e-2", "tar@far=1e-3", "eer", "auc"):
        assert u[key].ci95[0] <= u[key].value <= u[key].ci95[1], key


def test_scores_do_not_depend_on_how_the_gallery_is_sliced(monkeypatch):
    """The float64 steps of a score matrix take the gallery in slices (bounded memory): any slice size
    gives the same float32 scores, bit for bit."""
    from facepii.metrics import _comparators as C

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(40, 24)).astype(np.float32), rng.normal(size=(2500, 24)).astype(np.float32)
    whole = {f: f(a, b) for f in (C.cosine_similarity, C.neg_l2)}
    monkeypatch.setattr(C, "F64_STEP_BYTES", 8 * 40 * 13)  # slices of 13 gallery rows
    for f, want in whole.items():
        assert np.array_equal(f(a, b), want)
    np.testing.assert_allclose(whole[C.neg_l2], -np.linalg.norm(a[:, None].astype(np.float64) - b[None], axis=2),
                               atol=1e-5)
