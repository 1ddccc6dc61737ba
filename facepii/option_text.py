"""Option text parsed: ``--param`` values and the defense grid they sweep, the model lists of ``--judge``,
sizes (``--max-memory 4GB``) and score counts (``--scores 1e5``). The CLI, the gate's ``[evaluate]`` table
and :class:`facepii.config.EvaluateConfig` (whose validation parses its specs once with these) share them.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import defenses as defense_registry
from facepii.encoders import spec_list
from facepii.errors import ParameterError


def parse_value(text: str) -> Any:
    """'0.05' -> 0.05, '64' -> 64, 'true' -> True, anything else stays a string (NaN/inf refused)."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        v = float(t)
    except ValueError:
        return t
    if not math.isfinite(v):
        raise ParameterError(f"--param value {text!r}: must be a finite number.")
    return v


def parse_param_options(options: list[str]) -> dict[str, list[Any]]:
    """``["sigma=0.01,0.02", "bits=1"]`` -> ``{"sigma": [0.01, 0.02], "bits": [1]}``."""
    out: dict[str, list[Any]] = {}
    for opt in options:
        key, eq, values = opt.partition("=")
        key = key.strip()
        if not eq or not key or not values.strip():
            raise ParameterError(f"--param {opt!r}: write KEY=V1,V2 (e.g. --param sigma=0.02,0.05).")
        vals = [parse_value(v) for v in values.split(",") if v.strip()]
        out.setdefault(key, []).extend(vals)
    return out


def defense_grid(specs: list[str], params: dict[str, list[Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(spec, params) for each row: each defense gets the product of the parameters it has.

    ``sigma=...`` applies to every listed defense with a ``sigma``; ``noise.sigma=...``
    to the ``noise`` defense (or step) only. A parameter no listed defense has is an error,
    and so is a value of the wrong kind (checked by building each row's defense).
    """
    used: set[str] = set()
    rows: list[tuple[str, dict[str, Any]]] = []
    for spec in specs:
        names = set(defense_registry.create(spec).flat_params())
        steps = spec.split("+")
        mine: dict[str, list[Any]] = {}
        for key, vals in params.items():
            head, dot, tail = key.partition(".")
            if len(steps) == 1:
                if dot and head == spec and tail in names:
                    mine[tail] = vals
                    used.add(key)
                elif not dot and key in names:
                    mine[key] = vals
                    used.add(key)
            else:
                if dot and key in names:
                    mine[key] = vals
                    used.add(key)
                elif not dot:
                    owners = [n for n in names if n.split(".", 1)[1] == key]
                    if len(owners) == 1:
                        mine[owners[0]] = vals
                        used.add(key)
        keys = list(mine)
        for combo in itertools.product(*(mine[k] for k in keys)) if keys else [()]:
            row = dict(zip(keys, combo))
            defense_registry.create(spec, **row).check_params()  # kinds and ranges of the values
            rows.append((spec, row))
    unused = [k for k in params if k not in used]
    if unused:
        known = {s: sorted(defense_registry.create(s).flat_params()) for s in specs}
        raise ParameterError(
            f"--param {', '.join(unused)}: no listed defense has it; parameters: "
            + "; ".join(f"{s}: {', '.join(p) or '(none)'}" for s, p in known.items()) + ".")
    return rows


def judge_specs(spec: str | None) -> list[str | None]:
    """``--judge dlib,sface,onnx:PATH`` -> its entries (the first is the headline judge); none -> [None]."""
    return list(spec_list(spec, "--judge")) or [None]


def parse_size(text: str | int) -> int:
    """Bytes from ``4GB``, ``512MB``, ``4G``, ``1.5GB`` or a plain number of bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    t = str(text).strip().upper().removesuffix("B").replace("I", "")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    factor = mult.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in mult else t
    try:
        v = float(num)
    except ValueError:
        raise ParameterError(f"--max-memory {text!r}: write a size such as 4GB, 512MB or a number of bytes.") from None
    if not math.isfinite(v) or v <= 0:
        raise ParameterError(f"--max-memory {text!r}: must be a positive size.")
    return int(v * factor)


def parse_scores(text: str | int) -> int:
    """``--scores``: ``all`` (-1), ``none`` (0) or a number of impostor pairs per row."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    t = str(text).strip().lower().replace("_", "").replace(",", "")
    if t == "all":
        return -1
    if t in ("none", "0"):
        return 0
    # a whole number, in digits or as 1e5 (never rounded: 1.9 pairs is a mistake, not 1)
    n = None
    if re.fullmatch(r"[0-9]{1,15}", t):
        n = int(t)
    elif re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?e\+?[0-9]{1,2}", t):
        v = float(t)
        n = int(v) if v.is_integer() and v <= 1e15 else None
    if n is None:
        raise ParameterError(f"--scores {text!r}: write all, none or a whole number of impostor pairs (e.g. 100000 "
                             "or 1e5).")
    if n <= 0:
        raise ParameterError(f"--scores {text!r}: write all, none or a positive number of impostor pairs.")
    return n
