"""The defense contract: a scikit-learn style transformer on embeddings.

``fit(E)`` learns what the defense needs from the defender's own enrolment
embeddings (most learn nothing), ``transform(E, users=None)`` returns the
stored templates, ``score(T1, T2)`` compares templates (higher = more likely
the same person). Parameters are the ``__init__`` arguments, stored unchanged
and readable with ``get_params()`` (scikit-learn's discipline: no validation
and no randomness in ``__init__``; everything reproducible from the parameters
and ``seed``).

Capabilities, declared as class attributes (attacks read these, never class names):
``emits`` says what a template holds — ``"embedding"`` (the raw embedding,
no protection), ``"real"`` vectors, ``"bits"``, or ``"index"`` codes (then
``index_size`` values per position); ``keyed`` says a key (``seed``) draws the
transform; ``per_user`` (keyed with ``key_mode="user"``) that every user has
a key of their own; ``randomized`` that every ``transform`` call draws fresh
randomness from a generator the fitted defense owns (``rng_``), so a copy made
with :meth:`Defense.with_randomness` — the attacker's — draws other noise.

Keyed defenses take ``key_mode``: ``"system"`` (one key for everyone) or
``"user"`` (one key per identity, the cancelable-biometrics setting, where the
key is derived from ``seed`` and the user id). :meth:`Defense.key_ids` tells
which key each template used, so an attack can model a disclosed key.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
from typing import Any

import numpy as np

from facepii.errors import ParameterError
from facepii.metrics import COMPARATORS


class Defense:
    """Base class: identity transform, the input space's comparator."""

    #: comparator of the templates; None = the comparator of the encoder's embeddings
    comparator: str | None = None
    keyed: bool = False
    emits: str = "real"          # "embedding" | "real" | "bits" | "index"
    randomized: bool = False     # transform draws fresh randomness from rng_
    index_size: int | None = None  # values per position when emits == "index"
    encrypted: bool = False      # templates are ciphertexts: matched by encrypted_pair_scores(A, B)

    # ---- scikit-learn parameter protocol --------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> Defense:
        valid = self._param_names()
        for k, v in params.items():
            if k not in valid:
                raise ParameterError(
                    f"defense '{self.name}' has no parameter '{k}'; its parameters: {', '.join(valid)}.")
            self._check_kind(k, v)
            setattr(self, k, v)
        return self

    def _check_kind(self, k: str, v: Any) -> None:
        """A value of the kind ``__init__`` declares: numbers finite, integers whole, flags bool."""
        p = inspect.signature(type(self).__init__).parameters[k]
        ann = str(p.annotation)
        if v is None and ("None" in ann or p.default is None):
            return
        where = f"defense '{self.name}': {k}={v!r}"
        if ann == "bool":
            if not isinstance(v, (bool, np.bool_)):
                raise ParameterError(f"{where}: must be true or false.")
        elif "int" in ann or "float" in ann:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ParameterError(f"{where}: must be a number.")
            if not math.isfinite(float(v)):
                raise ParameterError(f"{where}: must be a finite number.")
            if "float" not in ann and float(v) != int(v):
                raise ParameterError(f"{where}: must be an integer.")
        elif ann == "str" and not isinstance(v, str):
            raise ParameterError(f"{where}: must be text.")

    @property
    def per_user(self) -> bool:
        """Templates of different users are made with different keys."""
        return self.keyed and getattr(self, "key_mode", "system") == "user"

    def steps_(self) -> list[Defense]:
        """The defenses applied, in order (one, or a chain's steps)."""
        return [self]

    def with_randomness(self, seed: int) -> Defense:
        """A copy of this fitted defense (same keys, same learned parts) whose randomized steps
        draw their own randomness: what an attacker who runs the algorithm itself gets."""
        d = copy.deepcopy(self)
        for i, s in enumerate(d.steps_()):
            if s.randomized:
                s.rng_ = np.random.default_rng([int(seed), i])
        return d

    @property
    def name(self) -> str:
        return getattr(self, "_registry_name", type(self).__name__.lower())

    # ---- the transformer -------------------------------------------------
    def fit(self, E: np.ndarray, y: np.ndarray | None = None, *, comparator: str = "cosine") -> Defense:
        """Learn from the defender's enrolment embeddings; records the input comparator."""
        self._validate()
        self.input_comparator_ = comparator
        self.dim_in_ = int(np.asarray(E).shape[1])
        return self

    def transform(self, E: np.ndarray, users: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(E, np.float32)

    def fit_transform(self, E: np.ndarray, y: np.ndarray | None = None, *,
                      comparator: str = "cosine", users: np.ndarray | None = None) -> np.ndarray:
        return self.fit(E, y, comparator=comparator).transform(E, users)

    def score(self, T1: np.ndarray, T2: np.ndarray) -> np.ndarray:
        """Similarity of every template in T1 with every template in T2 (higher = same person)."""
        return COMPARATORS[self.output_comparator](T1, T2)

    @property
    def output_comparator(self) -> str:
        return self.comparator or getattr(self, "input_comparator_", "cosine")

    def paired_score(self, T1: np.ndarray, T2: np.ndarray) -> np.ndarray:
        """Score of T1[k] with T2[k] for every k (sampled pairs of a large gallery)."""
        from facepii.metrics import ROWWISE, diagonal_scores

        if type(self).score is Defense.score and self.output_comparator in ROWWISE:
            return ROWWISE[self.output_comparator](T1, T2)
        return diagonal_scores(self.score, T1, T2)

    @property
    def cosine_scores(self) -> bool:
        """Scores are the cosine of the templates (an exact inner-product index can search them)."""
        return type(self).score is Defense.score and self.output_comparator == "cosine"

    # ---- reporting -------------------------------------------------------
    def template_nbytes(self) -> int:
        """Bytes to store one template (float32 unless the defense says otherwise)."""
        return 4 * int(getattr(self, "dim_in_", 0))

    def privacy_budget(self) -> dict | None:
        """``{"epsilon": e, "delta": d, "mechanism": ...}`` for DP defenses, else None."""
        return None

    def inversion_loss(self, key: int):
        """``loss(X, T)``: per-row loss (torch) of unit embeddings ``X`` against stored templates ``T``
        made with ``key``, low when X would give T: a relaxation of the transform that a numerical
        solver can differentiate (ISO/IEC 30136 irreversibility with a disclosed key). The key's
        matrices are drawn once, when this is called. None = not available."""
        return None

    def key_ids(self, users: np.ndarray | None, n: int) -> np.ndarray:
        """Which key each of ``n`` templates used ("" for unkeyed defenses)."""
        if not self.keyed:
            return np.array([""] * n)
        if getattr(self, "key_mode", "system") == "user":
            if users is None:
                raise ParameterError(f"defense '{self.name}' with key_mode=user needs user ids.")
            return np.array([f"user:{u}" for u in users])
        return np.array(["system"] * n)

    def _validate(self) -> None:
        """Check parameter values (called by fit, never by __init__)."""
        if self.keyed and getattr(self, "key_mode", "system") not in ("system", "user"):
            raise ParameterError(f"{self.name}: key_mode must be 'system' or 'user', got {self.key_mode!r}.")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def keyed_steps(d: Defense) -> list[Defense]:
    return [s for s in d.steps_() if s.keyed]


def user_keyed(d: Defense) -> bool:
    """True when templates of different users are made with different keys."""
    return any(s.per_user for s in d.steps_())


def shared_key(d: Defense) -> Defense:
    """The same defense with every user's key replaced by one shared key: the stolen-token
    scenario, where an impostor's template is made with the victim's key (modifies ``d``)."""
    for s in keyed_steps(d):
        s.set_params(key_mode="system")
    return d


def key_seed(seed: int, key: str) -> int:
    """A 64-bit seed for one key, stable across runs and platforms."""
    h = hashlib.sha256(f"{seed}|{key}".encode()).digest()
    return int.from_bytes(h[:8], "little")


def l2_normalize(E: np.ndarray) -> np.ndarray:
    E = np.asarray(E, np.float32)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


def per_key(defense: Defense, E: np.ndarray, users: np.ndarray | None, fn) -> np.ndarray:
    """Apply ``fn(E_subset, key_seed)`` once per key used (system key or each user's key)."""
    E = np.asarray(E, np.float32)
    keys = defense.key_ids(users, len(E))
    out = None
    for k in dict.fromkeys(keys):
        idx = np.flatnonzero(keys == k)
        part = fn(E[idx], key_seed(defense.seed, k))
        if out is None:
            out = np.empty((len(E),) + part.shape[1:], part.dtype)
        out[idx] = part
    if out is None:
        return np.zeros((0, 0), np.float32)
    return out


class Pipeline(Defense):
    """Defenses applied in order (``--defense projection+quantize``); params as ``step.param``."""

    def __init__(self, steps: list[tuple[str, Defense]]):
        self.steps = steps

    @property
    def name(self) -> str:
        return "+".join(n for n, _ in self.steps)

    @property
    def keyed(self) -> bool:  # type: ignore[override]
        return any(d.keyed for _, d in self.steps)

    @property
    def emits(self) -> str:  # type: ignore[override]
        kinds = [d.emits for _, d in self.steps]
        return "embedding" if all(k == "embedding" for k in kinds) else self.steps[-1][1].emits

    @property
    def index_size(self) -> int | None:  # type: ignore[override]
        return self.steps[-1][1].index_size

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return any(d.randomized for _, d in self.steps)

    @property
    def per_user(self) -> bool:
        return any(d.per_user for _, d in self.steps)

    def steps_(self) -> list[Defense]:
        return [d for _, d in self.steps]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for n, d in self.steps:
            for k, v in d.get_params().items():
                out[f"{n}.{k}"] = v
        return out

    def set_params(self, **params: Any) -> Pipeline:
        steps = dict(self.steps)
        for key, v in params.items():
            step, dot, p = key.partition(".")
            if not dot:
                owners = [n for n, d in self.steps if p in d._param_names() or step in d._param_names()]
                if len(owners) == 1:
                    step, p = owners[0], step
                else:
                    raise ParameterError(
                        f"'{key}' is ambiguous or unknown in {self.name}; address it as step.param, "
                        f"e.g. {self.steps[0][0]}.{key}.")
            if step not in steps:
                raise ParameterError(f"{self.name} has no step '{step}'; steps: {', '.join(steps)}.")
            steps[step].set_params(**{p: v})
        return self

    def fit(self, E, y=None, *, comparator="cosine", users=None):
        cmp = comparator
        X = E
        for i, (_, d) in enumerate(self.steps):
            d.fit(X, y, comparator=cmp)
            if i < len(self.steps) - 1:
                X = d.transform(X, users)
            cmp = d.output_comparator
        self.input_comparator_ = comparator
        self.dim_in_ = int(np.asarray(E).shape[1])
        return self

    def fit_transform(self, E, y=None, *, comparator="cosine", users=None):
        return self.fit(E, y, comparator=comparator, users=users).transform(E, users)

    def transform(self, E, users=None):
        X = E
        for _, d in self.steps:
            X = d.transform(X, users)
        return X

    def score(self, T1, T2):
        return self.steps[-1][1].score(T1, T2)

    @property
    def output_comparator(self) -> str:
        return self.steps[-1][1].output_comparator

    @property
    def cosine_scores(self) -> bool:
        return self.steps[-1][1].cosine_scores

    def paired_score(self, T1, T2):
        return self.steps[-1][1].paired_score(T1, T2)

    def template_nbytes(self) -> int:
        return self.steps[-1][1].template_nbytes()

    def privacy_budget(self) -> dict | None:
        budgets = [b for _, d in self.steps if (b := d.privacy_budget())]
        return budgets[0] if len(budgets) == 1 else (
            {"epsilon": float(sum(b["epsilon"] for b in budgets)),
             "delta": float(sum(b.get("delta", 0.0) for b in budgets)),
             "mechanism": "+".join(b["mechanism"] for b in budgets)} if budgets else None)

    def key_ids(self, users, n):
        keyed = [d for _, d in self.steps if d.keyed]
        if not keyed:
            return np.array([""] * n)
        parts = [d.key_ids(users, n) for d in keyed]
        return np.array(["|".join(p) for p in zip(*parts)])

    def __repr__(self) -> str:
        return f"Pipeline({self.steps!r})"
