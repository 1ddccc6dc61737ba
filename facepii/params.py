"""The parameter protocol defenses and attacks share: scikit-learn's (``get_params``/``set_params``, the
``__init__`` signature is the parameter list, ``__init__`` stores values unchanged), one ``set_params``
that checks each value's kind against the annotation, and declared constraints
(``_parameter_constraints``, scikit-learn's style) checked in one place when the estimator is fitted.

    class BioHash(Defense):
        _parameter_constraints = {"bits": [Interval(int, 1, None)]}

A failed check is one line: ``biohash: bits must be an integer >= 1, got 0.``
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone

from facepii.errors import ParameterError


@dataclass(frozen=True)
class Interval:
    """Numbers of a kind (``int``: whole numbers; ``float``: any finite number) between ``low`` and ``high``
    (None: unbounded); ``closed``: which ends belong to it ("both", "left", "right", "neither")."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"

    def holds(self, v: Any) -> bool:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            return False
        if not math.isfinite(float(v)) or (self.kind is int and not isinstance(v, (int, np.integer))):
            return False
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and (v < self.low or (v == self.low and not lo_in)):
            return False
        return not (self.high is not None and (v > self.high or (v == self.high and not hi_in)))

    def __str__(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            if self.kind is int and self.closed == "both":
                return f"{what} in {lo}..{hi}"
            return f"{what} in {'[' if self.closed in ('both', 'left') else '('}{lo}, {hi}" \
                   f"{']' if self.closed in ('both', 'right') else ')'}"
        if lo is not None:
            return f"{what} {'>=' if self.closed in ('both', 'left') else '>'} {lo}"
        if hi is not None:
            return f"{what} {'<=' if self.closed in ('both', 'right') else '<'} {hi}"
        return what


@dataclass(frozen=True)
class Options:
    """One of the given values."""

    values: tuple

    def holds(self, v: Any) -> bool:
        for x in self.values:
            if isinstance(x, str):
                if isinstance(v, str) and v == x:
                    return True
            elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v == x:
                return True
        return False

    def __str__(self) -> str:
        vals = [str(x) for x in self.values]
        return vals[0] if len(vals) == 1 else ", ".join(vals[:-1]) + " or " + vals[-1]


def describe(constraints: list) -> str:
    parts = [str(c) for c in constraints if c is not None]
    text = " or ".join(parts) if parts else "a value"
    return text + (", or None" if None in constraints else "")


class Parameters(BaseEstimator):
    """scikit-learn's parameter protocol with one-line errors, value kinds checked in ``set_params`` and
    declared constraints checked by :meth:`check_constraints` (called by ``fit``)."""

    #: "defense" or "attack": how the messages name the estimator
    kind_label = "estimator"
    #: parameter -> list of admissible forms (:class:`Interval`, :class:`Options`, None)
    _parameter_constraints: dict[str, list] = {}

    #: the registry name of a built-in (a plug-in gets the name of its entry point)
    registry_name: str | None = None

    @property
    def name(self) -> str:
        """The name it is registered and reported under."""
        return self.__dict__.get("_registry_name") or self.registry_name or type(self).__name__.lower()

    def __sklearn_clone__(self):
        """A new, unfitted instance with the same parameters (cloned) and the same registered name."""
        new = type(self)(**{k: clone(v, safe=False) for k, v in self.get_params(deep=False).items()})
        if "_registry_name" in self.__dict__:
            new._registry_name = self._registry_name
        return new

    @classmethod
    def _param_names(cls) -> list[str]:
        """The ``__init__`` parameters in signature order (scikit-learn's ``_get_param_names`` sorts them)."""
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]

    def set_params(self, **params: Any):
        valid = self._param_names()
        for k, v in params.items():
            if k not in valid:
                raise ParameterError(f"{self.kind_label} '{self.name}' has no parameter '{k}'; its parameters: "
                                     f"{', '.join(valid) or '(none)'}.")
            self._check_kind(k, v)
            setattr(self, k, v)
        return self

    def _check_kind(self, k: str, v: Any) -> None:
        """A value of the kind ``__init__`` declares: numbers finite, integers whole, flags bool, text str."""
        p = inspect.signature(type(self).__init__).parameters[k]
        ann = str(p.annotation)
        if v is None and ("None" in ann or p.default is None):
            return
        where = f"{self.kind_label} '{self.name}': {k}={v!r}"
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

    def check_constraints(self) -> None:
        """Every declared constraint (this class's and its bases'), in declaration order."""
        seen: dict[str, list] = {}
        for cls in reversed(type(self).__mro__):
            seen.update(getattr(cls, "_parameter_constraints", None) or {})
        for k, allowed in seen.items():
            v = getattr(self, k)
            if v is None and None in allowed:
                continue
            if not any(c is not None and c.holds(v) for c in allowed):
                raise ParameterError(f"{self.name}: {k} must be {describe(allowed)}, got {v!r}.")
