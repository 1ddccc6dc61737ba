"""Figures read back from a report file, checked (a report file is untrusted input): an
:class:`facepii.metrics.Estimate` from its JSON form within the bounds the figure cannot leave, tables,
DET curves; and the small helpers the typed estimates (:mod:`facepii.estimates`,
:mod:`facepii.iso_estimates`) share.
"""

from __future__ import annotations

import math
from typing import Any

from facepii.errors import ReportError
from facepii.metrics import Estimate

NAN = float("nan")


def nan_estimate() -> Estimate:
    return Estimate(NAN, (NAN, NAN))


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def est_to(e: Estimate | None) -> dict | None:
    return None if e is None else e.to_dict()


RATE = (0.0, 1.0)
SIMILARITY = (-1.0, 1.0)
COUNT = (0.0, math.inf)
TOL = 1e-9  # rounding slack at a bound


def est_from(d: Any, where: str, bounds: tuple[float, float] | None = RATE) -> Estimate | None:
    """An Estimate from its JSON form; None when absent; a one-line error when malformed or outside what
    the figure can be (``bounds``: a rate by default)."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ReportError(f"{where}: not a figure ({{\"value\": ..., \"ci95\": [lo, hi]}}), got {d!r}.")
    v, ci = d.get("value"), d.get("ci95")
    if v is not None and not is_number(v):
        raise ReportError(f"{where}: value {v!r} is not a number.")
    if ci is None:
        ci = [None, None]
    if not (isinstance(ci, list) and len(ci) == 2 and all(c is None or is_number(c) for c in ci)):
        raise ReportError(f"{where}: ci95 {ci!r} is not an interval [lo, hi].")
    if ci[0] is not None and ci[1] is not None and ci[0] > ci[1]:
        raise ReportError(f"{where}: ci95 {ci!r} is not an interval [lo, hi].")
    if bounds is not None:
        for x in (v, *ci):
            if x is not None and not bounds[0] - TOL <= x <= bounds[1] + TOL:
                raise ReportError(f"{where}: {x!r} is outside [{bounds[0]:g}, {bounds[1]:g}], which this figure "
                                  "cannot leave.")
    f = (lambda x: NAN if x is None else float(x))  # noqa: E731
    return Estimate(f(v), (f(ci[0]), f(ci[1])))


def table(d: Any, where: str) -> dict:
    """A JSON table (or {} when absent); a one-line error when it is anything else."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ReportError(f"{where}: not a table, got {type(d).__name__}.")
    return d


def value(e: Estimate | None) -> float | None:
    """The point value, or None when absent or not estimable."""
    return None if e is None or e.value != e.value else float(e.value)


def upper(e: Estimate | None) -> float | None:
    return None if e is None or e.ci95[1] != e.ci95[1] else float(e.ci95[1])


def order_key(e: Estimate | None) -> float:
    """An estimate's value for ordering (the worst attack, judge, method): absent or not estimable lowest."""
    return -math.inf if e is None or e.value != e.value else e.value


MAX_DET_POINTS = 10_000


def det_from(d: Any, where: str) -> dict | None:
    """A row's DET curve from its JSON form (checked: equal-length lists of rates, at most
    MAX_DET_POINTS, operating points with rates and counts); None when absent."""
    if d is None or d == {}:
        return None
    if not isinstance(d, dict):
        raise ReportError(f"{where}: not a DET curve (a table with fmr and fnmr lists).")
    fmr, fnmr = d.get("fmr"), d.get("fnmr")
    if not (isinstance(fmr, list) and isinstance(fnmr, list) and len(fmr) == len(fnmr) <= MAX_DET_POINTS):
        raise ReportError(f"{where}: fmr and fnmr must be two lists of equal length (at most {MAX_DET_POINTS}).")
    for name, xs in (("fmr", fmr), ("fnmr", fnmr)):
        if not all(is_number(x) and 0.0 <= x <= 1.0 for x in xs):
            raise ReportError(f"{where}.{name}: every entry must be a rate in [0, 1].")
    ops = table(d.get("operating_points"), f"{where}.operating_points")
    for k, op in ops.items():
        w = f"{where}.operating_points.{k}"
        if not isinstance(op, dict):
            raise ReportError(f"{w}: not a table.")
        for key in ("far", "fmr_reached", "fnmr"):
            if not (is_number(op.get(key)) and 0.0 <= op[key] <= 1.0):
                raise ReportError(f"{w}.{key}: {op.get(key)!r} is not a rate in [0, 1].")
        if not (isinstance(op.get("impostor_pairs"), int) and not isinstance(op["impostor_pairs"], bool)
                and op["impostor_pairs"] >= 0):
            raise ReportError(f"{w}.impostor_pairs: {op.get('impostor_pairs')!r} is not a count.")
        # the threshold is a number (it is formatted as one); "supported" a JSON boolean ("no" is truthy)
        if op.get("threshold") is not None and not is_number(op["threshold"]):
            raise ReportError(f"{w}.threshold: {op['threshold']!r} is not a number.")
        if "supported" in op and not isinstance(op["supported"], bool):
            raise ReportError(f"{w}.supported: {op['supported']!r} is not true or false.")
    return d
