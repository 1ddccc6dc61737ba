"""The defender's stage of Estimates: what a protection costs in recognition accuracy.

Utility is verification and identification of protected templates against
protected templates of all usable photos (TAR at FAR 1e-2/1e-3/1e-4, EER, AUC,
rank-1; formulas in :mod:`facepii.metrics`), each with a 95% bootstrap
interval over identities. Per-user-key (cancelable) schemes look best when
every impostor brings a key of their own; the honest worst case, the stolen
token, is measured again with every template made with one key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from facepii import metrics
from facepii.stages import EmbeddedSet, Templates


def _plain(v: Any) -> Any:
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def estimates(u: dict) -> dict:
    return {k: v.to_dict() for k, v in u.items() if isinstance(v, metrics.Estimate)}


def utility_row(embedded: EmbeddedSet, t: Templates, fit_pos: np.ndarray | None, n_boot: int, seed: int) -> dict:
    """The utility part of a report row for one defense setting."""
    import defenses as registry
    from defenses.base import shared_key

    labels = embedded.labels
    d = t.defense
    u = metrics.utility(t.templates, labels, d.score, n_boot=n_boot, seed=seed)
    budget = d.privacy_budget() or {}
    row = {
        "defense": t.spec,
        "params": {k: _plain(v) for k, v in t.params.items()},
        "epsilon": budget.get("epsilon"),
        "delta": budget.get("delta"),
        "template_bytes": d.template_nbytes(),
        "all_params": {k: _plain(v) for k, v in d.get_params().items()},
        "utility": estimates(u),
        "pairs": {"genuine": u["n_genuine"], "impostor": u["n_impostor"]},
        "key_mode": "user" if d.per_user else ("system" if d.keyed else None),
    }
    if d.per_user:
        E = embedded.embeddings["target"]
        fit = slice(None) if fit_pos is None else fit_pos
        d2 = shared_key(registry.create(t.spec, **t.params))
        d2.fit(E[fit], labels[fit], comparator=embedded.encoders["target"]["comparator"])
        row["utility_stolen_token"] = estimates(
            metrics.utility(d2.transform(E, labels), labels, d2.score, n_boot=n_boot, seed=seed))
    return row
