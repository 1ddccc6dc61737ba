"""The gate's configuration (``facepii.toml``, or ``[tool.facepii]`` in ``pyproject.toml``; the format is in
:mod:`facepii.gate`): its rules, and both tables read and checked before any work, the ``[evaluate]`` table
as an :class:`facepii.config.EvaluateConfig` (the CLI's option names and forms), the ``[gate]`` table rule by
rule. A bad value is one line naming the file and the table.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from attacks import DEFAULT_ATTACKS
from facepii.config import EvaluateConfig
from facepii.errors import ConfigError, ParameterError
from facepii.option_text import parse_param_options, parse_scores, parse_size

RULES = {
    "max_leakage_ratio": "upper 95% bound of the leakage ratio (rank-1 / random) <= value",
    "max_sar": "upper 95% bound of the success attack rate at the judge's FMR 1e-3 <= value",
    "max_rank1": "upper 95% bound of the judge's rank-1 re-identification rate <= value",
    "max_worst_judge_rank1": "upper 95% bound of the highest rank-1 among the judges (--judge a,b; with one "
                             "judge, its rank-1) <= value",
    "min_tar_at_far": "lower 95% bound of TAR at the given FAR >= value ({far = 1e-3, value = 0.7})",
    "max_utility_drop": "unprotected TAR@1e-3 minus the lower 95% bound of this row's <= value",
    "max_dsys": "upper 95% bound of the unlinkability measure D_sys (ISO/IEC 30136; 1 = fully linkable) <= value",
    "max_renewal_match": "upper 95% bound of the share of old templates that still match after re-issue "
                         "(at FMR 1e-3) <= value",
    "max_isr": "upper 95% bound of the inversion success rate at FMR 1e-3 (ISO/IEC 30136 irreversibility) <= value",
    "max_sar_type1": "upper 95% bound of the reconstructions' SAR against the target system at FMR 1e-3 <= value",
    "max_sar_type2": "upper 95% bound of the reconstructions' SAR against the independent judge at FMR 1e-3 "
                     "<= value",
    "max_oracle_rank1": "upper 95% bound of the judge's rank-1 for the score-oracle attack (--oracle) <= value",
    "min_oracle_queries_to_match": "lower 95% bound of the median oracle queries a victim takes to a match "
                                   "(no match within the budget counts as more than the budget) >= value",
}

#: the rules a [gate.templates_per_victim."K"] table may hold: those on the attacks' re-identification
PRIVACY_RULES = ("max_leakage_ratio", "max_sar", "max_rank1", "max_worst_judge_rank1")
MAX_K = 1000


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def load_config(path: str | Path) -> dict:
    """``{"evaluate": {...}, "gate": {...}}`` from facepii.toml or pyproject.toml's [tool.facepii]."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file.")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML ({exc}).") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{p}: cannot be read as UTF-8 text ({exc}).") from None
    if p.name == "pyproject.toml":
        tool = data.get("tool")
        data = tool.get("facepii") if isinstance(tool, dict) else None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: no [tool.facepii] table.")
    unknown = set(data) - {"evaluate", "gate"}
    if unknown:
        raise ConfigError(f"{p}: unknown table(s) {sorted(unknown)}; use [evaluate] and [gate].")
    evaluate = data.get("evaluate", {})
    gate = data.get("gate", {})
    if not isinstance(gate, dict):
        raise ConfigError(f"{p}: [gate] must be a table of rules.")
    check_evaluate(evaluate, p).validate()
    check_gate(gate, p)
    return {"evaluate": evaluate, "gate": gate}


def _type_ok(v: Any, t) -> bool:
    ts = t if isinstance(t, tuple) else (t,)
    if isinstance(v, bool):
        return bool in ts
    if float in ts and isinstance(v, int):
        return True
    return isinstance(v, ts)


def check_evaluate(ev: dict, where: Path | str = "config"):
    """The [evaluate] table as an EvaluateConfig: the CLI's option names, the CLI's defaults, except
    that attacks run unless ``attacks = []`` (a gate on leakage needs them)."""
    if not isinstance(ev, dict):
        raise ConfigError(f"{where}: [evaluate] must be a table.")
    ev = {"attacks": list(DEFAULT_ATTACKS), **ev}
    if isinstance(ev.get("max_memory"), str):  # "4GB", as --max-memory takes it
        ev["max_memory"] = parse_size(ev["max_memory"])
    # the CLI's forms: comma-separated lists as --defense/--attack/--epsilon take them, "sigma=0.02,0.05" (or a
    # list of such) as --param, "0.25" or "50" as --victims
    try:
        for key in ("defenses", "attacks"):
            if isinstance(ev.get(key), str):
                ev[key] = [x.strip() for x in ev[key].split(",") if x.strip()]
        if isinstance(ev.get("epsilons"), str):
            ev["epsilons"] = [float(x) for x in ev["epsilons"].split(",") if x.strip()]
        elif isinstance(ev.get("epsilons"), (int, float)) and not isinstance(ev["epsilons"], bool):
            ev["epsilons"] = [float(ev["epsilons"])]
        if isinstance(ev.get("params"), str):
            ev["params"] = parse_param_options([ev["params"]])
        elif isinstance(ev.get("params"), list) and all(isinstance(x, str) for x in ev["params"]):
            ev["params"] = parse_param_options(ev["params"])
        if isinstance(ev.get("victims"), str):
            v = float(ev["victims"])
            ev["victims"] = int(v) if v >= 1 and v == int(v) else v
    except (ValueError, ParameterError) as e:
        raise ConfigError(f"{where}: [evaluate]: {e}") from None
    if isinstance(ev.get("scores"), str):  # "all", "none", "1e5", as --scores takes it
        try:
            ev["scores"] = parse_scores(ev["scores"])
        except ParameterError as e:
            raise ConfigError(f"{where}: [evaluate] scores: {e}") from None
    return EvaluateConfig.from_options(where=f"{where}: [evaluate]", **ev)


def check_gate(gate: dict, where: Path | str = "config") -> None:
    def rules(table: dict, ctx: str, allowed=tuple(RULES)) -> None:
        for k, v in table.items():
            if k in ("rows", "templates_per_victim") and ctx == "[gate]":
                continue
            if k not in allowed:
                raise ConfigError(f"{where}: {ctx} has no rule '{k}'; rules: {', '.join(allowed)}.")
            if k == "min_tar_at_far":
                if not isinstance(v, dict) or set(v) != {"far", "value"} or not all(
                        _type_ok(x, float) for x in v.values()):
                    raise ConfigError(f"{where}: {ctx} min_tar_at_far must be {{far = 1e-3, value = 0.7}}, got {v!r}.")
                if v["far"] not in (1e-2, 1e-3, 1e-4):
                    raise ConfigError(f"{where}: {ctx} min_tar_at_far.far must be 1e-2, 1e-3 or 1e-4, got {v['far']}.")
                if not (_num(v["value"]) and 0 <= v["value"] <= 1):
                    raise ConfigError(f"{where}: {ctx} min_tar_at_far.value must be a rate in [0, 1], "
                                      f"got {v['value']}.")
            elif not _type_ok(v, float):
                raise ConfigError(f"{where}: {ctx} {k} must be a number, got {type(v).__name__} ({v!r}).")
            elif not _num(v) or v < 0:
                raise ConfigError(f"{where}: {ctx} {k} must be a finite number >= 0, got {v!r}.")

    rules(gate, "[gate]")
    rows = gate.get("rows", {})
    if not isinstance(rows, dict):
        raise ConfigError(f"{where}: [gate.rows] must hold one table per row label.")
    for label, table in rows.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [gate.rows.\"{label}\"] must be a table of rules.")
        rules(table, f'[gate.rows."{label}"]')
    per_k = gate.get("templates_per_victim", {})
    if not isinstance(per_k, dict):
        raise ConfigError(f"{where}: [gate.templates_per_victim] must hold one table per K (\"4\" = 4 stolen "
                          "templates per victim).")
    for k, table in per_k.items():
        # written as the report writes it ("4", never "04" or a digit of another script): one K, one table
        if not (re.fullmatch(r"[1-9][0-9]{0,5}", str(k)) and int(k) <= MAX_K):
            raise ConfigError(f'{where}: [gate.templates_per_victim."{k}"]: {k!r} is not a number of templates '
                              "per victim written in digits 0-9 without leading zeros (1, 2, 4 ...).")
        if not isinstance(table, dict):
            raise ConfigError(f'{where}: [gate.templates_per_victim."{k}"] must be a table of rules.')
        rules(table, f'[gate.templates_per_victim."{k}"]', PRIVACY_RULES)


def evaluate_config(ev: dict):
    """An EvaluateConfig from an [evaluate] table (see :func:`check_evaluate`)."""
    return check_evaluate(ev)
