"""Names and number formats every part of the report shares (a leaf module: it imports nothing of facepii).

- the JSON keys of the figures (``tar@far=1e-3``, ``sar@fmr=1e-3``, the privacy blocks of a row),
  defined once;
- how a row is named (``noise sigma=0.05``) in tables, plots, gate rules and lineups;
- how a figure with its interval is printed (``0.791 [0.752, 0.826]``).
"""

from __future__ import annotations

from typing import Any

FAR_LEVELS = (1e-2, 1e-3, 1e-4)


def fmr_text(f: float) -> str:
    """``1e-3`` for 0.001: how an operating point is written in keys and tables."""
    return f"{f:.0e}".replace("e-0", "e-")


def tar_key(far: float) -> str:
    return f"tar@far={fmr_text(far)}"


def sar_key(fmr: float) -> str:
    return f"sar@fmr={fmr_text(fmr)}"


def isr_key(fmr: float) -> str:
    return f"isr@fmr={fmr_text(fmr)}"


TAR_1E3 = tar_key(1e-3)
SAR_1E3 = sar_key(1e-3)
RANK1 = "rank1"
LEAKAGE = "leakage_ratio"

# the privacy blocks of a row: the headline key scenario, the secret key (keyed rows, --key both), the oracle
PRIVACY = "privacy"
PRIVACY_SECRET = "privacy_key_secret"
PRIVACY_ORACLE = "privacy_oracle"
PRIVACY_TEMPLATES = "privacy_templates_per_victim"  # K (text) -> privacy with K stolen templates per victim


def row_label(defense: str, params: dict) -> str:
    """``noise sigma=0.05``: how a row is named in tables, plots, gate rules and lineups."""
    p = format_params(params)
    return defense + (f" {p}" if p else "")


def label_of(row: dict) -> str:
    """The label of a row as report.json holds it."""
    return row_label(row["defense"], row.get("params", {}))


def format_params(params: dict) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in params.items())


def format_eps(epsilon: float | None, delta: float | None) -> str:
    if epsilon is None:
        return ""
    return f"{epsilon:.3g}" + (f" (d={delta:.0e})" if delta else "")


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def fmt_value(value: float | None, ci95: tuple | list | None, digits: int = 3) -> str:
    """``0.791 [0.752, 0.826]``; ``n/a`` when the value is missing (not estimable)."""
    if value is None or value != value:
        return "n/a"
    lo, hi = (ci95 or (None, None))[:2]
    if lo is None or hi is None or lo != lo or hi != hi:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_est(e: Any, digits: int = 3) -> str:
    """An Estimate (or its JSON form ``{"value", "ci95"}``) as text; blank when there is none."""
    if not e:
        return ""
    if isinstance(e, dict):
        return fmt_value(e.get("value"), e.get("ci95"), digits)
    return fmt_value(e.value, e.ci95, digits)


def fmt_queries(x: Any) -> str:
    return "none within the budget" if x is None else f"{x:g}"
