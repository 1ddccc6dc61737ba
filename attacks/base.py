"""The attack contract and what every attack of a row shares.

An attack is an estimator (scikit-learn style): parameters in ``__init__``,
``fit(templates, images, context=...)`` on the auxiliary set — the attacker's
public photos of OTHER people and the protected templates the attacker
computed for them with the defense's algorithm (the attack is adaptive) — and
``reconstruct(templates, users=None)`` -> uint8 faces N x 112 x 112 x 3.

:class:`AttackContext` carries the threat model of the row: the target
encoder (queries; plus its differentiable copy for a white-box attacker), the
fitted defense, whether the key is secret or disclosed, the budget, and the
shared face model. ``users`` name the victims whose templates are attacked;
they matter only when per-user keys are disclosed (the attacker then uses each
victim's own key).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attacks.facemodel import Budget, FaceModel, to_unit
from facepii.errors import ParameterError


@dataclass
class AttackContext:
    encoder: Any                       # the target encoder F (queries: embed(faces))
    defense: Any                       # the fitted defense D (algorithm and parameters known)
    face_model: FaceModel              # shared decoder + face space, trained on aux raw embeddings
    aux_embeddings: np.ndarray         # F(x) of the auxiliary faces (the attacker computes them)
    aux_users: np.ndarray              # identity labels of the auxiliary faces
    protect: Callable[..., np.ndarray]  # (E, users) -> templates as the attacker can make them
    budget: Budget
    knowledge: str = "white"           # "white": gradients through F; "black": queries only
    key: str = "disclosed"             # "secret" or "disclosed" (keyed defenses)
    per_user_keys: bool = False        # templates of different users use different keys
    torch_encoder: Any = None          # differentiable copy of F (white box)
    seed: int = 0
    device: str = "cpu"
    victim_users: np.ndarray | None = None  # the victims attacked (their keys, when disclosed per user)
    # fitted pieces the attacks of one row share
    mappers: dict[tuple, Mapper] = field(default_factory=dict)  # protected -> raw maps, per key
    decoder: Any = None                # the row's fitted ``decoder`` attack (``optimize`` starts from it)
    inversions: dict = field(default_factory=dict)  # solver results and the attacker's choice of inverse

    @property
    def raw_templates(self) -> bool:
        """Templates are the raw embeddings (the defense declares it emits them unchanged)."""
        return self.defense.emits == "embedding"

    @property
    def key_disclosed_per_user(self) -> bool:
        return self.per_user_keys and self.key == "disclosed"


class Attack:
    """Base class: parameter protocol and the contract."""

    name = "attack"

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> Attack:
        for k, v in params.items():
            if k not in self._param_names():
                raise ParameterError(f"attack '{self.name}' has no parameter '{k}'.")
            setattr(self, k, v)
        return self

    def fit(self, templates: np.ndarray, images: np.ndarray, *, context: AttackContext) -> Attack:
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


def mapper_for(ctx: AttackContext, T_aux: np.ndarray, key_user=None) -> Mapper:
    """The protected -> raw mapping of this row (per disclosed user key when ``key_user`` is set)."""
    cache = ctx.mappers
    k = ("shared",) if key_user is None else ("user", str(key_user))
    if k not in cache:
        if key_user is not None:
            T_aux = ctx.protect(ctx.aux_embeddings, np.full(len(ctx.aux_embeddings), key_user))
        cache[k] = Mapper(ctx.defense).fit(T_aux, ctx.aux_embeddings)
    return cache[k]


def estimate_raw(ctx: AttackContext, T_aux: np.ndarray, templates: np.ndarray,
                 users: np.ndarray | None) -> np.ndarray:
    """The attacker's estimate of each victim's raw embedding from its stolen template: the learned
    (ridge) inverse, or, with a disclosed key, the numerical solver of :mod:`attacks.solver` where the
    attacker finds it better on its own auxiliary templates (it knows their raw embeddings)."""
    if ctx.raw_templates:
        return to_unit(templates)
    learned = learned_raw(ctx, T_aux, templates, users)
    if ctx.key == "disclosed" and _solver_is_better(ctx, T_aux):
        return solved_raw(ctx, templates, users, learned)
    return learned


def learned_raw(ctx: AttackContext, T_aux: np.ndarray, templates: np.ndarray, users) -> np.ndarray:
    if ctx.raw_templates:  # the template is the embedding: nothing to learn
        return to_unit(templates)
    if ctx.key_disclosed_per_user and users is not None:
        out = np.empty((len(templates), ctx.aux_embeddings.shape[1]), np.float32)
        for i, u in enumerate(users):
            out[i] = mapper_for(ctx, T_aux, u).predict(templates[i:i + 1])[0]
        return out
    return mapper_for(ctx, T_aux).predict(templates)


def solved_raw(ctx: AttackContext, templates: np.ndarray, users, start: np.ndarray) -> np.ndarray:
    """The solver's recovered embeddings (computed once per set of templates; the attacks of a row
    and the irreversibility figures share them)."""
    import hashlib

    from attacks.solver import solve

    key = hashlib.sha256(np.ascontiguousarray(templates).tobytes() + repr(users).encode()).hexdigest()
    if key not in ctx.inversions:
        ctx.inversions[key], _ = solve(ctx.defense, templates, users, start, seed=ctx.seed)
    return ctx.inversions[key]


def _solver_is_better(ctx: AttackContext, T_aux: np.ndarray, n: int = 24) -> bool:
    """Decided once per row, out of sample, on the attacker's own faces: ``n`` auxiliary embeddings
    (seeded) are held out, protected with one key (the real system key; with per-user keys, one user
    key of the attacker's choosing), inverted by a ridge map fitted on the other auxiliary embeddings
    under that key and by the solver; the better mean cosine to the true embeddings wins."""
    from attacks.solver import can_solve, solve

    if "solver_better" not in ctx.inversions:
        better = False
        if can_solve(ctx.defense) and len(ctx.aux_embeddings) > 2 * n:
            rng = np.random.default_rng(ctx.seed + 808)
            held = np.zeros(len(ctx.aux_embeddings), bool)
            held[rng.choice(len(held), size=n, replace=False)] = True
            users = np.full(len(held), "validation") if ctx.per_user_keys else None
            T = ctx.protect(ctx.aux_embeddings, users) if ctx.per_user_keys else T_aux
            truth = to_unit(ctx.aux_embeddings[held])
            learned = Mapper(ctx.defense).fit(T[~held], ctx.aux_embeddings[~held]).predict(T[held])
            solved, _ = solve(ctx.defense, T[held], None if users is None else users[held], learned,
                              seed=ctx.seed)
            better = float(np.sum(solved * truth, 1).mean()) > float(np.sum(learned * truth, 1).mean())
        ctx.inversions["solver_better"] = better
    return ctx.inversions["solver_better"]
