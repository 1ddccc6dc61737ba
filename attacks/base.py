"""The attack contract, the threat model of a row, and the fitted pieces its attacks share.

An attack is a scikit-learn estimator (``sklearn.base.BaseEstimator``: parameters in ``__init__``,
``clone``, ``get_params``, ``repr``): ``fit(templates, images, *, threat, cache)`` on the auxiliary set
— the attacker's public photos of OTHER people and the protected templates the attacker computed
for them with the defense's algorithm (the attack is adaptive) — and
``reconstruct(templates, users=None)`` -> uint8 faces N x 112 x 112 x 3. ``templates`` is N x d (one
stolen template per victim) or N x K x d (K stolen templates of each victim, from K photos: a breached
database holding several enrolments of one person); an attack combines a victim's K templates into one
face (:func:`per_template` and :func:`pool`: each template's estimate of the raw embedding, averaged on
the unit sphere; ``nearest`` averages its K scores; the decoder averages its K input embeddings).

- :class:`ThreatModel` (read-only) is what the attacker of one row and key scenario holds: the
  target encoder (queries; plus its differentiable copy for a white-box attacker), the fitted
  defense and the attacker's own way to protect faces with it, whether the key is secret or
  disclosed, the budget, the shared face model, the victims' user ids (their keys matter only
  when per-user keys are disclosed). A black-box attacker with surrogates (public face models of its
  own) works in their embedding space (``space``: the surrogates' embeddings of its auxiliary faces;
  ``torch_encoder``: the surrogates, differentiable): it maps stolen templates there, optimises
  through the surrogates, and only then queries the target.
- :class:`RowCache` (explicit, one per row and key scenario) holds what the attacks of a row fit
  once and share: the protected -> raw maps, the adaptive decoder (``optimize`` starts from it),
  the numerical solver's inversions and the attacker's choice between solver and learned inverse.

Capabilities an attack declares (checked by the contract test): ``white_box_gradients`` (it
differentiates the target's copy when the attacker is white box; a black-box attacker never
gives it one) and ``uses_face_model`` (it reads ``threat.face_model``; when no attack of a run
does, the attacker's face model is not trained and ``threat.face_model`` is None).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.facemodel import Budget, FaceModel, to_unit
from attacks.solver import can_solve, solve
from facepii.params import Parameters


@dataclass(frozen=True)
class ThreatModel:
    """The attacker of one row and key scenario: what it knows and holds (never changed by an attack)."""

    encoder: Any                       # the target encoder F (queries: embed(faces))
    defense: Any                       # the fitted defense D (algorithm and parameters known)
    face_model: FaceModel | None       # shared decoder + face space, trained on aux raw embeddings (None
    #                                    when no attack of the run uses it: Attack.uses_face_model)
    aux_embeddings: np.ndarray         # F(x) of the auxiliary faces (the attacker computes them)
    aux_users: np.ndarray              # identity labels of the auxiliary faces
    protect: Callable[..., np.ndarray]  # (E, users) -> templates as the attacker can make them
    budget: Budget
    knowledge: str = "white"           # "white": gradients through F; "black": queries only
    key: str = "disclosed"             # "secret" or "disclosed" (keyed defenses)
    torch_encoder: Any = None          # differentiable copy of F (white box)
    seed: int = 0
    device: str = "cpu"
    victim_users: np.ndarray | None = None  # the victims attacked (their keys, when disclosed per user)
    space: np.ndarray | None = None    # surrogates' embeddings of the auxiliary faces (black box + surrogate)

    @property
    def work_embeddings(self) -> np.ndarray:
        """The auxiliary faces in the space the attack works in: the surrogates', else the target's."""
        return self.aux_embeddings if self.space is None else self.space

    @property
    def surrogate(self) -> bool:
        return self.space is not None

    @property
    def per_user_keys(self) -> bool:
        """Templates of different users are made with different keys."""
        return bool(self.defense.per_user)

    @property
    def raw_templates(self) -> bool:
        """Templates are the target's raw embeddings (the defense declares it emits them unchanged)."""
        return self.defense.emits == "embedding"

    @property
    def templates_in_work_space(self) -> bool:
        """Templates need no map to the attack's working space (raw templates, no surrogate)."""
        return self.raw_templates and self.space is None

    @property
    def key_disclosed_per_user(self) -> bool:
        return self.per_user_keys and self.key == "disclosed"


@dataclass
class RowCache:
    """Fitted pieces the attacks of one row (and key scenario) share; filled as they are first needed."""

    mappers: dict[tuple, Mapper] = field(default_factory=dict)  # protected -> raw (or work space), per key
    decoder: Any = None  # the row's fitted ``decoder`` attack (fitted once; ``optimize`` starts from it)
    solved: dict[str, np.ndarray] = field(default_factory=dict)  # solver results per set of templates
    solver_better: bool | None = None                         # the attacker's out-of-sample choice

    def mapper(self, threat: ThreatModel, T_aux: np.ndarray, key_user=None, into: str = "work") -> Mapper:
        """The protected -> raw mapping of this row (per disclosed user key when ``key_user`` is set), into
        the attack's working space (``work``) or the target's raw embeddings (``raw``)."""
        space = "raw" if into == "raw" or not threat.surrogate else "work"
        k = ("shared",) if key_user is None else ("user", str(key_user))
        k = k if space == "raw" else (*k, "work")
        if k not in self.mappers:
            if key_user is not None:
                T_aux = threat.protect(threat.aux_embeddings, np.full(len(threat.aux_embeddings), key_user))
            Y = threat.aux_embeddings if space == "raw" else threat.work_embeddings
            self.mappers[k] = Mapper(threat.defense).fit(T_aux, Y)
        return self.mappers[k]

    def raw_to_work(self, threat: ThreatModel) -> Mapper:
        """The target's unit raw embeddings -> the surrogates' space (ridge on the auxiliary faces; unit inputs,
        as the raw estimates it maps are)."""
        if ("raw->work",) not in self.mappers:
            self.mappers[("raw->work",)] = Mapper(_RAW).fit(to_unit(threat.aux_embeddings), threat.work_embeddings)
        return self.mappers[("raw->work",)]

    def solution(self, threat: ThreatModel, templates: np.ndarray, users, start: np.ndarray) -> np.ndarray:
        """The solver's recovered embeddings, computed once per set of templates."""
        key = hashlib.sha256(np.ascontiguousarray(templates).tobytes() + repr(users).encode()).hexdigest()
        if key not in self.solved:
            self.solved[key], _ = solve(threat.defense, templates, users, start, seed=threat.seed)
        return self.solved[key]


class Attack(Parameters):
    """Base class: the parameter protocol (:class:`facepii.params.Parameters`: scikit-learn's, one-line
    errors, declared constraints that ``fit`` checks with :meth:`check_constraints`) and the contract."""

    kind_label = "attack"
    #: the registry name of a built-in attack (a plug-in gets the name of its entry point)
    registry_name: str | None = None
    white_box_gradients = False
    uses_face_model = True

    def fit(self, templates: np.ndarray, images: np.ndarray, *, threat: ThreatModel,
            cache: RowCache | None = None) -> Attack:
        raise NotImplementedError

    def reconstruct(self, templates: np.ndarray, users: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError


# ---------------------------------------------------------------- protected -> raw mapping


def template_features(T: np.ndarray, defense) -> np.ndarray:
    """Features a regression can use: index templates (``emits == "index"``) become one-hot codes."""
    T = np.asarray(T, np.float32)
    if defense.emits == "index":
        q = int(defense.index_size)
        idx = T.astype(np.int64)
        out = np.zeros((len(T), T.shape[1] * q), np.float32)
        out[np.arange(len(T))[:, None], np.arange(T.shape[1])[None, :] * q + idx] = 1.0
        return out
    return T


class Mapper:
    """Ridge regression from protected templates to unit raw embeddings (learned on aux data)."""

    def __init__(self, defense, alphas=(0.01, 0.1, 1.0, 10.0, 100.0)):
        self.defense = defense
        self.alphas = alphas

    def fit(self, T: np.ndarray, E: np.ndarray) -> Mapper:
        from sklearn.linear_model import Ridge, RidgeCV

        X = template_features(T, self.defense)
        Y = to_unit(E)
        self.model_ = (RidgeCV(alphas=self.alphas).fit(X, Y) if X.shape[1] <= 1024
                       else Ridge(alpha=1.0).fit(X, Y))
        return self

    def predict(self, T: np.ndarray) -> np.ndarray:
        return to_unit(self.model_.predict(template_features(T, self.defense)))

    @property
    def linear(self) -> tuple[np.ndarray, np.ndarray]:
        return self.model_.coef_, self.model_.intercept_


class _Raw:
    emits = "real"


_RAW = _Raw()  # what Mapper needs to know of embeddings taken as they are


def per_template(templates: np.ndarray, users: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Stolen templates one per line: N x d stays as it is (K = 1); N x K x d becomes (N K) x d, each
    victim's user id repeated K times (its K templates were made with its one key). Returns (templates,
    users, K)."""
    T = np.asarray(templates)
    if T.ndim != 3:
        return T, users, 1
    n, k = T.shape[:2]
    return T.reshape(n * k, *T.shape[2:]), None if users is None else np.repeat(np.asarray(users), k), k


def pool(X: np.ndarray, k: int) -> np.ndarray:
    """Each victim's K estimates ((N K) x d, victim-major) as one: their mean, back on the unit sphere (the
    maximum-likelihood direction under independent noise; K = 1: unchanged)."""
    if k == 1:
        return X
    X = to_unit(np.asarray(X, np.float32))
    return to_unit(X.reshape(len(X) // k, k, -1).mean(axis=1))


def _pooled(fn):
    """``fn(threat, cache, T_aux, templates, users, ...)`` for N x K x d templates: per template, then pooled."""
    def wrapper(threat, cache, T_aux, templates, users, *args, **kwargs):
        flat, u, k = per_template(templates, users)
        out = fn(threat, cache, T_aux, flat, u, *args, **kwargs)
        if isinstance(out, dict):
            return {m: pool(v, k) for m, v in out.items()}
        return pool(out, k)
    wrapper.__doc__, wrapper.__name__, wrapper.__wrapped__ = fn.__doc__, fn.__name__, fn
    return wrapper


@_pooled
def estimate_raw(threat: ThreatModel, cache: RowCache, T_aux: np.ndarray, templates: np.ndarray,
                 users: np.ndarray | None) -> np.ndarray:
    """The attacker's estimate of each victim's raw embedding from its stolen template: the learned
    (ridge) inverse, or, with a disclosed key, the numerical solver of :mod:`attacks.solver` where the
    attacker finds it better on its own auxiliary templates (it knows their raw embeddings). With K
    templates per victim, the mean of their K estimates on the unit sphere."""
    if threat.raw_templates:
        return to_unit(templates)
    learned = learned_raw(threat, cache, T_aux, templates, users)
    if threat.key == "disclosed" and solver_is_better(threat, cache, T_aux):
        return cache.solution(threat, templates, users, learned)
    return learned


@_pooled
def estimate_work(threat: ThreatModel, cache: RowCache, T_aux: np.ndarray, templates: np.ndarray,
                  users: np.ndarray | None) -> np.ndarray:
    """The estimate in the attack's working space: the raw estimate itself without a surrogate; with
    surrogates, the template mapped into their space (a ridge map learned on the auxiliary faces), or,
    where the raw estimate is exact or solved, that estimate carried across (raw -> surrogates)."""
    if not threat.surrogate:
        return estimate_raw(threat, cache, T_aux, templates, users)
    if threat.raw_templates or (threat.key == "disclosed" and solver_is_better(threat, cache, T_aux)):
        return to_unit(cache.raw_to_work(threat).predict(estimate_raw(threat, cache, T_aux, templates, users)))
    return learned_raw(threat, cache, T_aux, templates, users, into="work")


@_pooled
def recovered_embeddings(threat: ThreatModel, cache: RowCache, T_aux: np.ndarray, templates: np.ndarray,
                         users) -> dict[str, np.ndarray]:
    """Every inverse the attacker has of the stolen templates: ``learned`` (the ridge map), and
    ``solver`` with a disclosed key where the defense can be solved (the very solutions the row's
    attacks used, when they used them). What ISO/IEC 30136 irreversibility judges."""
    learned = to_unit(learned_raw(threat, cache, T_aux, templates, users))
    out = {"learned": learned}
    if threat.key == "disclosed" and can_solve(threat.defense):
        out["solver"] = cache.solution(threat, templates, users, learned)
    return out


@_pooled
def learned_raw(threat: ThreatModel, cache: RowCache, T_aux: np.ndarray, templates: np.ndarray,
                users, into: str = "raw") -> np.ndarray:
    """The ridge inverse of the stolen templates, into the target's raw space (``raw``) or the attack's
    working space (``work``: the surrogates')."""
    if threat.raw_templates and into == "raw":  # the template is the embedding: nothing to learn
        return to_unit(templates)
    width = (threat.aux_embeddings if into == "raw" else threat.work_embeddings).shape[1]
    if threat.key_disclosed_per_user and users is not None:
        out = np.empty((len(templates), width), np.float32)
        for i, u in enumerate(users):
            out[i] = cache.mapper(threat, T_aux, u, into).predict(templates[i:i + 1])[0]
        return out
    return cache.mapper(threat, T_aux, into=into).predict(templates)


def solver_is_better(threat: ThreatModel, cache: RowCache, T_aux: np.ndarray, n: int = 24) -> bool:
    """Decided once per row, out of sample, on the attacker's own faces: ``n`` auxiliary embeddings
    (seeded) are held out, protected with one key (the real system key; with per-user keys, one user
    key of the attacker's choosing), inverted by a ridge map fitted on the other auxiliary embeddings
    under that key and by the solver; the better mean cosine to the true embeddings wins."""
    if cache.solver_better is None:
        better = False
        if can_solve(threat.defense) and len(threat.aux_embeddings) > 2 * n:
            rng = np.random.default_rng(threat.seed + 808)
            held = np.zeros(len(threat.aux_embeddings), bool)
            held[rng.choice(len(held), size=n, replace=False)] = True
            users = np.full(len(held), "validation") if threat.per_user_keys else None
            T = threat.protect(threat.aux_embeddings, users) if threat.per_user_keys else T_aux
            truth = to_unit(threat.aux_embeddings[held])
            learned = Mapper(threat.defense).fit(T[~held], threat.aux_embeddings[~held]).predict(T[held])
            solved, _ = solve(threat.defense, T[held], None if users is None else users[held], learned,
                              seed=threat.seed)
            better = float(np.sum(solved * truth, 1).mean()) > float(np.sum(learned * truth, 1).mean())
        cache.solver_better = better
    return cache.solver_better
