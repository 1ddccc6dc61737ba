"""``a+b``: defenses applied in order (``--defense projection+quantize``), scikit-learn's composition.

A chain is itself a defense. Its parameters follow scikit-learn's composition (``steps``, each step by
name, ``step__param``), and ``step.param`` (the CLI's ``--param projection.dim=64``) or a bare name
that only one step has. Capabilities combine: keyed, per-user and randomized when any step is; it
emits what its last step emits, and matches with the last step's comparator. Every step is fitted
on what the steps before it give, with the users' ids (per-user keys work at any position).
Homomorphic encryption can only be the last step: a step after it would see plaintexts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from defenses.base import Defense
from facepii.errors import ParameterError


class Chain(Defense):
    """Defenses applied in order (``projection+quantize``); params as ``step.param``."""

    def __init__(self, steps: list[tuple[str, Defense]]):
        self.steps = steps

    @property
    def name(self) -> str:
        return "+".join(n for n, _ in self.steps)

    # ---- capabilities: from the steps ---------------------------------------------------------
    @property
    def keyed(self) -> bool:  # type: ignore[override]
        return any(d.keyed for _, d in self.steps)

    @property
    def per_user(self) -> bool:
        return any(d.per_user for _, d in self.steps)

    @property
    def randomized(self) -> bool:  # type: ignore[override]
        return any(d.randomized for _, d in self.steps)

    @property
    def emits(self) -> str:  # type: ignore[override]
        kinds = [d.emits for _, d in self.steps]
        return "embedding" if all(k == "embedding" for k in kinds) else self.steps[-1][1].emits

    @property
    def index_size(self) -> int | None:  # type: ignore[override]
        return self.steps[-1][1].index_size

    @property
    def encrypted(self) -> bool:  # type: ignore[override]
        return self.steps[-1][1].encrypted

    @property
    def invertible(self) -> bool:  # type: ignore[override]
        return False  # the numerical solver inverts one keyed step; a chain gets the learned inverse

    @property
    def matching(self) -> str:  # type: ignore[override]
        return self.steps[-1][1].matching

    @property
    def cosine_scores(self) -> bool:
        return self.steps[-1][1].cosine_scores

    def steps_(self) -> list[Defense]:
        return [d for _, d in self.steps]

    # ---- parameters ------------------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": self.steps}
        if deep:
            for n, d in self.steps:
                out[n] = d
                out.update({f"{n}__{k}": v for k, v in d.get_params(deep=True).items()})
        return out

    def flat_params(self) -> dict[str, Any]:
        return {f"{n}.{k}": v for n, d in self.steps for k, v in d.flat_params().items()}

    def set_params(self, **params: Any) -> Chain:
        steps = dict(self.steps)
        if "steps" in params:
            self.steps = params.pop("steps")
            steps = dict(self.steps)
        for key, v in params.items():
            if key in steps and isinstance(v, Defense):
                self.steps = [(n, v if n == key else d) for n, d in self.steps]
                steps[key] = v
                continue
            step, sep, p = (key.partition("__") if "__" in key else key.partition("."))
            if not sep:
                owners = [n for n, d in self.steps if key in d._param_names()]
                if len(owners) != 1:
                    raise ParameterError(
                        f"'{key}' is ambiguous or unknown in {self.name}; address it as step.param, "
                        f"e.g. {self.steps[0][0]}.{key}.")
                step, p = owners[0], key
            if step not in steps:
                raise ParameterError(f"{self.name} has no step '{step}'; steps: {', '.join(steps)}.")
            steps[step].set_params(**{p: v})
        return self

    def __sklearn_clone__(self) -> Chain:
        from sklearn.base import clone

        return Chain([(n, clone(d)) for n, d in self.steps])

    # ---- the transformer -----------------------------------------------------------------------
    def fit(self, E, users=None, *, comparator="cosine"):
        for n, d in self.steps[:-1]:
            if d.encrypted:
                raise ParameterError(f"{self.name}: {n} (encrypted templates) must be the last step of a chain; "
                                     "a step after it would work on plaintexts.")
        cmp = comparator
        X = E
        for i, (_, d) in enumerate(self.steps):
            d.fit(X, users, comparator=cmp)
            if i < len(self.steps) - 1:
                X = d.transform(X, users)
            cmp = d.output_comparator
        self.input_comparator_ = comparator
        self.dim_in_ = int(np.asarray(E).shape[1])
        return self

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
