"""Recognition and privacy metrics: plain functions of arrays (no I/O), like ``sklearn.metrics``.

Split the way scikit-learn splits its metrics; the formulas are in each module's docstring:

- :mod:`~facepii.metrics._comparators`: templates -> score matrices (cosine, negated L2, Hamming);
- :mod:`~facepii.metrics._bootstrap`: :class:`Estimate` (value + 95% interval), mid-p rates, identity bootstrap;
- :mod:`~facepii.metrics._verification`: TAR@FAR, EER, AUC of all pairs, thresholds at a FAR;
- :mod:`~facepii.metrics._identification`: rank-k, utility block, re-identification (leakage, SAR);
- :mod:`~facepii.metrics._image`: SSIM and sharpness of reconstructions.
"""

from facepii.metrics._bootstrap import (
    N_BOOT,
    Estimate,
    bootstrap_mean,
    bootstrap_ratio,
    bootstrap_weights,
    midp_interval,
    percentile_ci,
    rate_mean,
)
from facepii.metrics._comparators import (
    COMPARATORS,
    ROWWISE,
    ScoreFn,
    comparator,
    cosine_similarity,
    diagonal_scores,
    hamming_similarity,
    neg_l2,
)
from facepii.metrics._identification import (
    identification,
    identity_scores,
    rank_k_hits,
    reidentification,
    utility,
)
from facepii.metrics._image import sharpness, ssim
from facepii.metrics._pairs import paired_scores, sample_impostor_pairs
from facepii.metrics._verification import (
    FAR_LEVELS,
    MIN_IMPOSTORS_ABOVE,
    eer,
    far_key,
    lowest_supported_far,
    pair_scores,
    roc_auc,
    supported,
    tar_at_far,
    threshold_at_far,
    verification,
    verification_pairs,
)

__all__ = [
    "COMPARATORS", "ROWWISE", "diagonal_scores", "FAR_LEVELS", "N_BOOT", "Estimate", "ScoreFn", "bootstrap_mean",
    "bootstrap_ratio",
    "bootstrap_weights", "comparator", "cosine_similarity", "eer", "far_key", "hamming_similarity", "identification",
    "identity_scores", "neg_l2", "pair_scores", "paired_scores", "percentile_ci",
    "midp_interval", "rate_mean", "rank_k_hits", "reidentification",
    "roc_auc", "sample_impostor_pairs", "sharpness", "ssim", "tar_at_far", "threshold_at_far", "utility",
    "verification",
    "verification_pairs", "MIN_IMPOSTORS_ABOVE", "lowest_supported_far", "supported",
]
