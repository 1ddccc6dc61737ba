"""The defense contract: a scikit-learn transformer on embeddings (``sklearn.base.BaseEstimator``).

``fit(E, users=None)`` learns what the defense needs from the defender's own enrolment
embeddings (most learn nothing), ``transform(E, users=None)`` returns the stored templates,
``score(T1, T2)`` compares templates (higher = more likely the same person). ``users`` name the
identity of each embedding; they matter to defenses with one key per user. Parameters are the
``__init__`` arguments, stored unchanged (scikit-learn's discipline: no validation and no
randomness in ``__init__``; everything reproducible from ``get_params()`` and ``seed``), so
``sklearn.base.clone``, ``get_params(deep=True)`` and ``repr`` work as for any estimator.

Capabilities are declared as class attributes; attacks and stages read these, never class
names, and the contract test (``tests/test_contracts.py``) checks each against behaviour:

- ``emits``: what a template holds — ``"embedding"`` (the raw embedding, no protection),
  ``"real"`` vectors, ``"bits"``, ``"index"`` codes (``index_size`` values per position) or
  ``"ciphertext"``;
- ``keyed``: a key (``seed``) draws the transform; with ``key_mode="user"`` (where the class
  lists ``"user"`` in ``key_modes``) every user has a key of their own (:attr:`per_user`);
- ``randomized``: every ``transform`` draws fresh randomness from a generator the fitted defense
  owns (``rng_``), so a copy made with :meth:`with_randomness` — the attacker's — draws other noise;
- ``invertible``: :meth:`inversion_loss` gives a differentiable relaxation of the transform (the
  numerical solver of ISO/IEC 30136 irreversibility uses it with a disclosed key);
- ``encrypted``: templates are ciphertexts, matched by ``encrypted_pair_scores``;
- ``reproducible``: the same parameters and seed give the same templates (not so where a library draws
  keys from the operating system, as SEAL does);
- ``matching``: ``"comparator"`` (``score`` is the templates' comparator: cosine, L2 or Hamming;
  ``paired_score`` its row-wise form) or ``"own"`` (the class implements ``score`` and
  ``paired_score``); :attr:`cosine_scores` follows (an exact inner-product index can search them);
- re-issuable (:attr:`reissuable`, keyed or randomized): :meth:`reissued` gives the defense after a
  revocation, with new keys and fresh randomness.

:meth:`key_ids` tells which key each template used, so an attack can model a disclosed key.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import numpy as np

from facepii.errors import ParameterError
from facepii.metrics import COMPARATORS, ROWWISE, diagonal_scores
from facepii.params import Parameters

KEY_MODES = ("system", "user")


class Defense(Parameters):
    """Base class: identity transform, the input space's comparator."""

    #: the registry name of a built-in defense (a plug-in gets the name of its entry point)
    registry_name: str | None = None
    #: comparator of the templates; None = the comparator of the encoder's embeddings
    comparator: str | None = None
    emits: str = "real"          # "embedding" | "real" | "bits" | "index" | "ciphertext"
    index_size: int | None = None  # values per position when emits == "index"
    keyed: bool = False
    key_modes: tuple[str, ...] = ("system",)
    randomized: bool = False
    invertible: bool = False
    encrypted: bool = False
    reproducible: bool = True     # the same parameters and seed give the same templates
    matching: str = "comparator"  # "comparator" | "own"

    # ---- the parameter protocol: facepii.params.Parameters (scikit-learn's, kinds, constraints) --
    kind_label = "defense"

    def flat_params(self) -> dict[str, Any]:
        """The parameters as ``--param`` names them (a chain's as ``step.param``), in signature order."""
        return {k: getattr(self, k) for k in self._param_names()}

    # ---- capabilities that follow from the parameters --------------------------------------
    @property
    def per_user(self) -> bool:
        """Templates of different users are made with different keys."""
        return self.keyed and getattr(self, "key_mode", "system") == "user"

    @property
    def cosine_scores(self) -> bool:
        """Scores are the cosine of the templates (an exact inner-product index can search them)."""
        return self.matching == "comparator" and self.output_comparator == "cosine"

    @property
    def reissuable(self) -> bool:
        """A revoked template can be replaced by a new, different one (new key or fresh randomness)."""
        return self.keyed or self.randomized

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

    def reissued(self, seed: int, key_offset: int) -> Defense:
        """A copy of this fitted defense re-issued: randomized steps draw fresh randomness from
        ``seed``, keyed steps get new keys (their ``seed`` moved by ``key_offset``). The stored
        defense is untouched. What the defender does after a revocation, and what an attacker
        who keeps its own keys (a secret key) holds."""
        d = self.with_randomness(seed)
        for s in d.steps_():
            if s.keyed:
                s.set_params(seed=int(s.seed) + int(key_offset))
        return d

    # ---- the transformer -------------------------------------------------
    def fit(self, E: np.ndarray, users: np.ndarray | None = None, *, comparator: str = "cosine") -> Defense:
        """Learn from the defender's enrolment embeddings; records the input comparator."""
        self._validate()
        self.input_comparator_ = comparator
        self.dim_in_ = int(np.asarray(E).shape[1])
        return self

    def transform(self, E: np.ndarray, users: np.ndarray | None = None) -> np.ndarray:
        return np.asarray(E, np.float32)

    def fit_transform(self, E: np.ndarray, users: np.ndarray | None = None, *,
                      comparator: str = "cosine") -> np.ndarray:
        return self.fit(E, users, comparator=comparator).transform(E, users)

    def score(self, T1: np.ndarray, T2: np.ndarray) -> np.ndarray:
        """Similarity of every template in T1 with every template in T2 (higher = same person)."""
        return COMPARATORS[self.output_comparator](T1, T2)

    @property
    def output_comparator(self) -> str:
        return self.comparator or getattr(self, "input_comparator_", "cosine")

    def paired_score(self, T1: np.ndarray, T2: np.ndarray) -> np.ndarray:
        """Score of T1[k] with T2[k] for every k (sampled pairs of a large gallery): the row-wise
        comparator for ``matching = "comparator"``, else the diagonals of ``score`` (a class with its
        own matching overrides this with a faster row-wise form)."""
        if self.matching == "comparator":
            return ROWWISE[self.output_comparator](T1, T2)
        return diagonal_scores(self.score, T1, T2)

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
        solver can differentiate. The key's matrices are drawn once, when this is called.
        Defenses that declare ``invertible`` implement it."""
        raise NotImplementedError(f"defense '{self.name}' offers no differentiable relaxation")

    def key_ids(self, users: np.ndarray | None, n: int) -> np.ndarray:
        """Which key each of ``n`` templates used ("" for unkeyed defenses)."""
        if not self.keyed:
            return np.array([""] * n)
        if getattr(self, "key_mode", "system") == "user":
            if users is None:
                raise ParameterError(f"defense '{self.name}' with key_mode=user needs user ids.")
            return np.array([f"user:{u}" for u in users])
        return np.array(["system"] * n)

    def check_params(self) -> Defense:
        """Every parameter value checked, as fit would (before any data is read)."""
        for s in self.steps_():
            s._validate()
        return self

    def _validate(self) -> None:
        """Check parameter values (called by fit, never by __init__): the declared constraints, then what
        a class checks beyond them (values that depend on each other)."""
        self.check_constraints()
        if self.keyed:
            mode = getattr(self, "key_mode", "system")
            if mode not in KEY_MODES or mode not in self.key_modes:
                raise ParameterError(f"{self.name}: key_mode must be {' or '.join(repr(m) for m in self.key_modes)}, "
                                     f"got {mode!r}.")


class EncryptedMatching:
    """What a defense whose templates are ciphertexts provides (mix it in: ``class HE(Defense,
    EncryptedMatching)``); utility goes through it, and a chain whose last step has it forwards it
    (:func:`encrypted_matching`). Inputs are raw (or the earlier steps') embeddings, rows paired."""

    encrypted = True
    #: impostor pairs sampled for utility (each goes through real encryption)
    impostor_pairs: int

    def encrypted_pair_scores(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        """The score of A[i] with B[i] for every i, computed in the encrypted domain and decrypted."""
        raise NotImplementedError

    def encryption_info(self) -> dict:  # pragma: no cover - interface
        """The scheme and its parameters: ``scheme``, ``poly_modulus_degree``, ``scale_bits``,
        ``templates_per_ciphertext``."""
        raise NotImplementedError

    def ms_per_comparison(self) -> float | None:  # pragma: no cover - interface
        """Measured milliseconds per encrypted comparison so far (None before the first)."""
        raise NotImplementedError


def encrypted_matching(d: Defense):
    """The step of ``d`` that matches in the encrypted domain (``d`` itself, or a chain's last step) and the
    plaintext transform of the steps before it: ``(step, before)`` with ``before(E) -> embeddings``."""
    steps = d.steps_()
    last = steps[-1]
    if not isinstance(last, EncryptedMatching):
        raise TypeError(f"{d.name}: no encrypted matching (its last step is not an EncryptedMatching)")

    def before(E: np.ndarray) -> np.ndarray:
        for s in steps[:-1]:
            E = s.transform(E, None)
        return E

    return last, before


def keyed_steps(d: Defense) -> list[Defense]:
    return [s for s in d.steps_() if s.keyed]


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


def f64_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` summed in float64, handed on as float32: the same templates on every BLAS kernel and thread
    count (a float32 product moves by ~1e-7 with the kernel's summation order; see metrics' comparators)."""
    return (np.asarray(a, np.float64) @ np.asarray(b, np.float64)).astype(np.float32)


def l2_normalize(E: np.ndarray) -> np.ndarray:
    E = np.asarray(E, np.float32)
    return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)


def per_key(defense: Defense, E: np.ndarray, users: np.ndarray | None, fn) -> np.ndarray:
    """Apply ``fn(E_subset, key_seed)`` once per key used (system key or each user's key)."""
    E = np.asarray(E, np.float32)
    if len(E) == 0:  # no template to make: the transform's shape, from an empty batch
        return fn(E, key_seed(defense.seed, "system"))
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
