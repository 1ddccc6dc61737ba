"""``noise``: additive noise on L2-normalised embeddings, then re-normalised.

Gaussian noise of standard deviation ``sigma`` per dimension, or Laplace noise
of scale ``scale`` (``mechanism="laplace"``). With ``epsilon`` set, the noise is
calibrated to that privacy budget instead.

The DP model, stated plainly: this is *per-template local differential
privacy*. Each stored template is one release of the user's unit-norm
embedding (L2 sensitivity 2, L1 sensitivity 2 sqrt(d) between any two unit
vectors); the epsilon bounds what one template reveals about which embedding
it came from. It says nothing about the face model, about several templates
of the same person (budgets add up), or about what the embedding itself
reveals about the face. Gaussian epsilon comes from Opacus' RDP accountant
(one release, sampling rate 1); Laplace epsilon is pure (delta = 0).
"""

from __future__ import annotations

import math

import numpy as np

from defenses.base import Defense, l2_normalize
from facepii.errors import ParameterError
from facepii.params import Interval, Options

L2_SENSITIVITY = 2.0  # max distance between two unit vectors


def gaussian_epsilon(sigma: float, delta: float) -> float:
    """Epsilon of one Gaussian release with noise std ``sigma`` on unit vectors (Opacus RDP)."""
    import warnings

    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma / L2_SENSITIVITY, 1.0, 1)]
    with warnings.catch_warnings():  # "optimal order is the smallest alpha": the bound still holds
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=delta))


def gaussian_sigma_for(epsilon: float, delta: float) -> float:
    """Noise std per dimension that gives (epsilon, delta) for one release (Opacus)."""
    import warnings

    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            z = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=1,
                                     accountant="rdp", epsilon_tolerance=0.005)
    except ValueError as exc:
        raise ParameterError(f"noise: cannot reach epsilon={epsilon}, delta={delta} ({exc}).") from None
    return float(z * L2_SENSITIVITY)


class Noise(Defense):
    """Gaussian/Laplace noise on unit embeddings (sigma, or epsilon via Opacus); per-template local DP."""

    registry_name = "noise"
    comparator = "cosine"
    randomized = True  # fresh noise per transform, from the fitted defense's own generator

    _parameter_constraints = {"mechanism": [Options(("gaussian", "laplace"))],
                              "epsilon": [Interval(float, 0, None, "neither"), None],
                              "delta": [Interval(float, 0, 1, "neither")]}

    def __init__(self, sigma: float = 0.05, mechanism: str = "gaussian", scale: float | None = None,
                 epsilon: float | None = None, delta: float = 1e-5, seed: int = 0):
        self.sigma = sigma
        self.mechanism = mechanism
        self.scale = scale
        self.epsilon = epsilon
        self.delta = delta
        self.seed = seed

    def _validate(self) -> None:
        super()._validate()
        if self.mechanism == "gaussian" and self.epsilon is None and not (float(self.sigma) >= 0):
            raise ParameterError(f"noise: sigma must be >= 0, got {self.sigma}.")
        if self.mechanism == "laplace" and self.epsilon is None and not (self.scale is not None and self.scale >= 0):
            raise ParameterError("noise: mechanism=laplace needs scale >= 0 (or epsilon).")

    def fit(self, E, users=None, *, comparator="cosine"):
        super().fit(E, users, comparator=comparator)
        d = self.dim_in_
        if self.mechanism == "gaussian":
            self.sigma_ = (gaussian_sigma_for(self.epsilon, self.delta) if self.epsilon is not None
                           else float(self.sigma))
            self.scale_ = None
        else:
            l1 = 2 * math.sqrt(d)
            self.scale_ = l1 / float(self.epsilon) if self.epsilon is not None else float(self.scale)
            self.sigma_ = None
        self.rng_ = np.random.default_rng(self.seed)
        return self

    def transform(self, E, users=None):
        X = l2_normalize(E)
        rng = self.rng_
        if self.mechanism == "gaussian":
            noise = rng.normal(0.0, self.sigma_, size=X.shape)
        else:
            noise = rng.laplace(0.0, self.scale_, size=X.shape)
        return l2_normalize(X + noise.astype(np.float32))

    def privacy_budget(self):
        if self.mechanism == "gaussian":
            if self.sigma_ == 0:
                return {"epsilon": math.inf, "delta": float(self.delta), "mechanism": "gaussian"}
            return {"epsilon": gaussian_epsilon(self.sigma_, self.delta), "delta": float(self.delta),
                    "mechanism": "gaussian", "sigma": self.sigma_, "accountant": "opacus-rdp"}
        eps = math.inf if self.scale_ == 0 else 2 * math.sqrt(self.dim_in_) / self.scale_
        return {"epsilon": eps, "delta": 0.0, "mechanism": "laplace", "scale": self.scale_}
