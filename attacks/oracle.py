"""Score-oracle attacks: the victim's template is never seen, only the matcher's answers.

Threat: the templates are out of reach (encrypted with the key held elsewhere, or simply never
leaked), but the attacker can enrol probes and read the matcher's output against a victim: a
verification API, a 1:1 check, a matcher over encrypted templates that decrypts the score. A probe
is an embedding the attacker chooses (its own face photos run through the target model, or a
template submitted at the matcher's API); the system protects it as for a verification claim of
the victim (the victim's key) and compares it with the victim's stored template.

- ``score`` oracle (``score-solver``): the attacker first learns, with its own instance of the
  defense on its own faces, how the matcher's score relates to the cosine of the raw embeddings
  (isotonic regression, and the residual spread). From the scores ``s`` of ``q`` known probe
  embeddings ``P`` it solves for the victim's embedding by Bayesian linear regression with the
  face prior of its auxiliary embeddings (mean ``mu``, covariance ``S``)::

      v = (P'P / s2 + S^-1)^-1 (P' g(s) / s2 + S^-1 mu),   then normalised

  exact for raw or encrypted cosine matching once ``q >= d``, fewer queries with the prior. It
  solves again after 8, 16, 32, ... probes and submits each solution once: the queries to the
  first accepted submission are the victim's "queries to match".
- ``decision`` oracle (``decision-search``): only accept / reject at the system's threshold.
  Phase 1 submits the mean face, then the attacker's face embeddings in a seeded order, until one
  is accepted (a dictionary attack; the queries to this first accept are counted). Phase 2 walks
  towards the centre of the accepted region: random tangent perturbations of the accepted point,
  the accepted ones minus the rejected ones give the direction, the radius adapts to keep about
  half accepted (a sign-gradient search in the spirit of HopSkipJump), until the budget is spent.

The recovered embeddings are then reconstructed into faces by facepii's attacks on raw templates.

Both are :class:`OracleAttack` plug-ins registered by ``registry_name`` (``--oracle NAME``, listed by
``facepii oracles``); a third-party one registers through the entry-point group ``facepii.oracles``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from facepii import progress
from facepii.params import Parameters


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-12)


@dataclass
class Oracle:
    """The matcher's answers for probes against one enrolled victim; counts every query."""

    defense: object
    stored: np.ndarray          # per victim: its stored template (or its raw embedding when encrypted)
    victims: np.ndarray
    threshold: float            # the system's decision threshold (FMR 1e-3)
    queries: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        self.queries = np.zeros(len(self.victims), np.int64)

    def scores(self, i: int, probes: np.ndarray) -> np.ndarray:
        probes = np.asarray(probes, np.float32)
        self.queries[i] += len(probes)
        d = self.defense
        if d.encrypted:  # real encrypted matching, the stored template encrypted too
            return d.encrypted_pair_scores(probes, np.repeat(self.stored[i:i + 1], len(probes), axis=0))
        T = d.transform(probes, np.full(len(probes), self.victims[i]))
        return np.asarray(d.score(T, self.stored[i:i + 1]), np.float64)[:, 0]

    def accepts(self, i: int, probes: np.ndarray) -> np.ndarray:
        return self.scores(i, probes) >= self.threshold


def calibrate(view, aux_E: np.ndarray, aux_users: np.ndarray, seed: int, anchors: int = 40, probes: int = 150):
    """Isotonic map score -> raw cosine, and the residual variance, from the attacker's own instance
    of the defense (its own keys) on its own faces, queried the way the oracle answers."""
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(seed + 515)
    U = _unit(aux_E)
    s_all, c_all = [], []
    for a in rng.choice(len(U), size=min(anchors, len(U)), replace=False):
        same = np.flatnonzero(aux_users == aux_users[a])
        idx = np.unique(np.concatenate([rng.choice(len(U), size=min(probes, len(U)), replace=False), same]))
        idx = idx[idx != a]
        user = np.full(len(idx) + 1, f"calibration-{aux_users[a]}")
        T = view(np.concatenate([U[a:a + 1], U[idx]]).astype(np.float32), user)
        s = np.asarray(view.defense.score(T[1:], T[:1]), np.float64)[:, 0]
        s_all.append(s)
        c_all.append(U[idx] @ U[a])
    s, c = np.concatenate(s_all), np.concatenate(c_all)
    iso = IsotonicRegression(out_of_bounds="clip").fit(s, c)
    var = float(np.mean((c - iso.predict(s)) ** 2))
    return iso, max(var, 1e-8)


class Prior:
    """The face prior: mean and covariance of the attacker's unit auxiliary embeddings."""

    def __init__(self, aux_E: np.ndarray):
        U = _unit(aux_E)
        self.mean = U.mean(axis=0)
        S = np.cov(U, rowvar=False) + 1e-4 * np.eye(U.shape[1])
        self.precision = np.linalg.inv(S)

    def solve(self, P: np.ndarray, y: np.ndarray, var: float) -> np.ndarray:
        A = P.T @ P / var + self.precision
        b = P.T @ y / var + self.precision @ self.mean
        return _unit(np.linalg.solve(A, b))


@dataclass
class OracleResult:
    estimates: np.ndarray             # recovered unit embeddings, victim order
    queries_used: np.ndarray          # per victim
    queries_to_match: np.ndarray      # per victim; -1 = no accepted submission within the budget
    kind: str
    budget: int


def score_solver(oracle: Oracle, pool: np.ndarray, calib, prior: Prior, budget: int, seed: int) -> OracleResult:
    iso, var = calib
    rng = np.random.default_rng(seed + 616)
    n = len(oracle.victims)
    d = pool.shape[1]
    out = np.zeros((n, d))
    to_match = np.full(n, -1)
    checkpoints = [c for c in (8 * 2 ** k for k in range(20)) if c < budget]
    checkpoints.append(budget - len(checkpoints) - 1)  # every solution is submitted once: all within the budget
    # probes are the attacker's own face embeddings: a pool smaller than the budget caps what it can submit
    checkpoints = sorted({min(c, len(pool)) for c in checkpoints if c > 0})
    with progress.bar("score oracle: victims", n) as bar:
        for i in range(n):
            _solve_one(i, oracle, pool, rng, checkpoints, prior, iso, var, out, to_match)
            bar.update()
    return OracleResult(out, oracle.queries.copy(), to_match, "score", budget)


def _solve_one(i, oracle, pool, rng, checkpoints, prior, iso, var, out, to_match) -> None:
    """One victim: score the probes in stages, solve after each, submit each solution once."""
    order = rng.permutation(len(pool))
    P = _unit(pool[order[:checkpoints[-1]]])
    got = 0
    s = np.zeros(0)
    for cp in checkpoints:
        s = np.concatenate([s, oracle.scores(i, P[got:cp])])
        got = cp
        out[i] = prior.solve(P[:got], iso.predict(s), var)
        if to_match[i] < 0 and oracle.accepts(i, out[i:i + 1])[0]:
            to_match[i] = oracle.queries[i]


def decision_search(oracle: Oracle, pool: np.ndarray, prior: Prior, budget: int, seed: int,
                    batch: int = 20) -> OracleResult:
    rng = np.random.default_rng(seed + 717)
    n = len(oracle.victims)
    out = np.tile(prior.mean / np.linalg.norm(prior.mean), (n, 1))
    to_match = np.full(n, -1)
    with progress.bar("decision oracle: victims", n) as bar:
        for i in range(n):
            _search_one(i, oracle, pool, prior, budget, rng, batch, out, to_match)
            bar.update()
    return OracleResult(out, oracle.queries.copy(), to_match, "decision", budget)


def _search_one(i, oracle, pool, prior, budget, rng, batch, out, to_match) -> None:
    """One victim: a dictionary search for a first accept, then a walk towards the accept region's centre."""
    d = pool.shape[1]
    cands = np.concatenate([prior.mean[None], _unit(pool[rng.permutation(len(pool))])])
    x = None
    for s in range(0, len(cands), 25):  # phase 1: dictionary
        left = budget - int(oracle.queries[i])
        if left <= 0:
            break
        part = cands[s:s + min(25, left)]
        acc = oracle.accepts(i, part)
        if acc.any():
            k = int(np.flatnonzero(acc)[0])
            to_match[i] = int(oracle.queries[i]) - len(part) + k + 1
            x = _unit(part[k])
            break
    if x is None:
        return
    radius = 0.3
    seen, said = [], []
    while int(oracle.queries[i]) + batch <= budget:  # phase 2: towards the centre
        u = rng.normal(size=(batch, d))
        u -= np.outer(u @ x, x)
        u = _unit(u)
        pts = _unit(x + radius * u)
        acc = oracle.accepts(i, pts)
        seen.append(pts)
        said.append(acc)
        rate = acc.mean()
        if 0 < rate < 1:
            g = (2.0 * acc - 1) @ u
            x = _unit(x + radius * g / max(np.linalg.norm(g), 1e-12))
        radius *= 1.3 if rate > 0.6 else (0.75 if rate < 0.4 else 1.0)
        radius = float(np.clip(radius, 1e-3, 1.5))
    out[i] = _boundary_normal(np.concatenate(seen), np.concatenate(said), x) if seen else x


def _boundary_normal(points: np.ndarray, accepted: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The accept region of a cosine matcher is a cap {p : p.v >= t}: the normal of a linear
    separator of every accepted vs rejected probe (logistic regression) points at v."""
    from sklearn.linear_model import LogisticRegression

    if accepted.all() or not accepted.any():
        return fallback
    w = LogisticRegression(C=100.0, max_iter=2000).fit(points, accepted).coef_[0]
    return _unit(w) if w @ fallback > 0 else fallback


@dataclass
class OracleInputs:
    """What an oracle attacker holds besides the matcher: its own face embeddings (the probes it may submit
    and its prior), their identities, its own instance of the defense (made when asked: ``view()``, the
    secret-key view of :func:`facepii.stages.attacker_view`) and the seed."""

    embeddings: np.ndarray
    users: np.ndarray
    view: Callable[[], object]
    seed: int


class OracleAttack(Parameters):
    """The contract of an oracle attack: from the matcher's answers to probes it chooses (``oracle``, which
    counts every query), recover each victim's raw embedding within ``budget`` queries per victim.

    Class attributes: ``registry_name`` (``--oracle NAME``), ``answers`` (what the matcher answers: the
    threat model's sentence), ``default_queries`` (the budget without ``--oracle-queries``)."""

    registry_name: str = ""
    answers: str = ""
    default_queries: int = 0

    def recover(self, oracle: Oracle, own: OracleInputs, budget: int) -> OracleResult:
        raise NotImplementedError


class ScoreOracle(OracleAttack):
    """The matcher returns a similarity score: calibrate score -> cosine on own faces, then Bayesian regression."""

    registry_name = "score"
    answers = "the matcher returns a similarity score for a probe against a victim (score-solver attack)"
    default_queries = 200

    def recover(self, oracle: Oracle, own: OracleInputs, budget: int) -> OracleResult:
        prior = Prior(own.embeddings)
        calib = calibrate(own.view(), own.embeddings, own.users, own.seed)
        return score_solver(oracle, own.embeddings, calib, prior, budget, own.seed)


class DecisionOracle(OracleAttack):
    """The matcher only accepts or rejects: a dictionary search for an accept, then a walk to the region's centre."""

    registry_name = "decision"
    answers = "the matcher only accepts or rejects at its threshold (decision-search attack)"
    default_queries = 2000

    def recover(self, oracle: Oracle, own: OracleInputs, budget: int) -> OracleResult:
        return decision_search(oracle, own.embeddings, Prior(own.embeddings), budget, own.seed)

