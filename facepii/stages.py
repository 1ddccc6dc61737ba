"""The evaluation protocol's first stages and their artifacts (plain data: arrays and dataclasses).

    photos -> EmbeddedSet   target (and judge) embeddings from ONE extraction pass
           -> Split         attacker-auxiliary vs victim identities; per victim a source photo
           -> Templates     the defender's templates, and the attacker's own view of the defense

Each stage is a function of its inputs and the seed; its artifact can be
pickled to another process (encoders and caches stay outside the artifacts).
The later stages (Reconstructions, Estimates) are in :mod:`facepii.reconstructions`
and :mod:`facepii.judging`; :func:`facepii.pipeline.run` chains them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import defenses as registry
from facepii.cache import Cache
from facepii.config import EvaluateConfig
from facepii.datasets import FaceSet, load_dataset, select
from facepii.encoders import Encoder, encoder_id
from facepii.errors import DatasetError, ParameterError
from facepii.extract import Extraction, aligned_faces, extract
from facepii.labels import row_label

ATTACKER_RANDOMNESS = 7_654_321  # offset of the attacker's own seeds (keys and noise)


def encoder_dict(enc: Encoder) -> dict:
    return {"name": enc.name, "version": enc.version, "dim": enc.dim, "comparator": enc.comparator}


# ---------------------------------------------------------------- EmbeddedSet


@dataclass
class EmbeddedSet:
    """The usable photos of the evaluation with their embeddings, one matrix per role."""

    faceset: FaceSet                      # usable items only (their paths or arrays, and labels)
    embeddings: dict[str, np.ndarray]     # "target" (and "judge") -> (n, d) float32
    encoders: dict[str, dict]             # role -> name, version, dim, comparator
    landmarks: np.ndarray | None          # (n, 5, 2); None for an embeddings dataset
    keys: list[str]                       # content hash of each item
    dataset: dict                         # the report's dataset block (listed, skipped, excluded ...)

    @property
    def labels(self) -> np.ndarray:
        return self.faceset.labels

    @property
    def has_photos(self) -> bool:
        return self.landmarks is not None

    def aligned(self, positions) -> np.ndarray:
        """Aligned 112 x 112 RGB faces of the given items (decoded again from the photos)."""
        return aligned_faces(self.faceset, self.landmarks, positions)


def load_selected(cfg: EvaluateConfig) -> FaceSet:
    """The dataset, with the seeded selection of identities."""
    d = cfg.data
    fs = load_dataset(d.dataset)
    n = len(fs)
    fs = select(fs, d.min_images, d.max_identities, cfg.seed)
    fs.meta["n_listed"] = n
    return fs


def embed(cfg: EvaluateConfig, fs: FaceSet, encoders: dict[str, Encoder], cache: Cache,
          executor=None, fixed_centre: bool = False) -> EmbeddedSet:
    """One extraction pass over the photos for every role's encoder (a role sharing the target's
    model reuses its embeddings); identities left with fewer than --min-images usable photos are
    excluded, each photo listed with the reason. A mean-centred encoder takes the mean of these photos,
    or with ``fixed_centre`` keeps the one it holds (the attacker's photos are centred as the
    evaluation's are)."""
    unique = list({encoder_id(e): e for e in encoders.values()}.values())
    ex = extract(fs, unique, cache, executor=executor)
    min_images = cfg.data.min_images
    labels = ex.faceset.labels
    ids, counts = np.unique(labels, return_counts=True)
    short = set(ids[counts < min_images])
    excluded = list(ex.faceset.excluded)
    if short:
        keep = np.flatnonzero([lab not in short for lab in labels])
        for i in np.flatnonzero([lab in short for lab in labels]):
            excluded.append({"path": ex.faceset.item_name(i),
                             "reason": f"identity {labels[i]} has fewer than {min_images} usable images"})
        ex = Extraction(faceset=ex.faceset.subset(keep), index=ex.index[keep],
                        embeddings={k: v[keep] for k, v in ex.embeddings.items()},
                        landmarks=None if ex.landmarks is None else ex.landmarks[keep],
                        skipped=ex.skipped, stats=ex.stats, keys=[ex.keys[i] for i in keep])
    ex.faceset.excluded = excluded
    if len(ex.faceset) == 0 or ex.faceset.n_identities < 2:
        raise DatasetError(
            f"{fs.source}: only {ex.faceset.n_identities} identity with >= {min_images} usable "
            f"images ({len(ex.skipped)} images skipped); a verification needs at least 2.")
    block = {
        "spec": cfg.data.dataset, "source": fs.source, "kind": fs.kind, "n_listed": fs.meta.get("n_listed", len(fs)),
        "n_selected": len(fs), "n_used": len(ex.faceset), "n_identities": ex.faceset.n_identities,
        "n_skipped": len(ex.skipped), "skipped": ex.skipped, "excluded": excluded,
        "selection": {"min_images": min_images, "max_identities": cfg.data.max_identities,
                      "seed": cfg.seed, "identities_available": fs.meta.get("n_identities_available")},
        "embedding_stats": ex.stats,
    }
    embeddings = {}
    for r, e in encoders.items():
        E = ex.for_encoder(e)
        if getattr(e, "center", False) and fixed_centre:
            E = E - e.center_mean
        elif getattr(e, "center", False):
            # mean-centring (onnx:...?center=1): the mean of the evaluation's photos, kept by the encoder so
            # that everything it embeds later (reconstructions, queries) is centred the same way
            e.center_mean = E.mean(axis=0).astype(np.float32)
            block.setdefault("centred", {})[r] = float(np.linalg.norm(e.center_mean))
            E = E - e.center_mean
        embeddings[r] = E
    return EmbeddedSet(faceset=ex.faceset, embeddings=embeddings,
                       encoders={r: encoder_dict(e) for r, e in encoders.items()}, landmarks=ex.landmarks,
                       keys=ex.keys, dataset=block)


# ---------------------------------------------------------------- Split


def n_victims(n_ids: int, victims: float | int | None, aux_elsewhere: bool = False) -> int:
    """Default: a quarter of the identities, at least 50 where the data allows (with the attacker's photos
    elsewhere, ``aux_elsewhere``: every identity may be a victim; see :func:`split_identities`)."""
    if aux_elsewhere:
        n = n_ids if victims is None else round(victims * n_ids) if isinstance(victims, float) else int(victims)
        if n < 2 or n > n_ids:
            raise ParameterError(f"--victims {victims}: needs at least 2 victims and at most the {n_ids} identities "
                                 "of the dataset; give a count (e.g. 50) or a fraction (e.g. 0.25).")
        return n
    if victims is None:
        n = max(round(0.25 * n_ids), min(50, n_ids // 2))
    elif isinstance(victims, float) and 0 < victims < 1:
        n = round(victims * n_ids)
    else:
        n = int(victims)
    if n_ids < 4:
        raise ParameterError(f"the attacks need at least 4 identities (2 victims, 2 for the attacker's auxiliary "
                             f"set); this dataset has {n_ids} usable: bring more, or measure utility only "
                             "(--no-privacy).")
    if n < 2 or n > n_ids - 2:
        raise ParameterError(
            f"--victims {victims}: needs at least 2 victims and 2 auxiliary identities out of {n_ids}; "
            f"give a count (e.g. 50) or a fraction (e.g. 0.25).")
    return n


@dataclass
class Split:
    """Disjoint identities: auxiliary (the attacker's) and victims; per victim one source photo."""

    victim_ids: np.ndarray     # sorted identity labels
    aux_pos: np.ndarray        # positions (in the EmbeddedSet) of auxiliary photos
    source_pos: np.ndarray     # per victim (victim_ids order): the photo whose template is stolen
    gallery_pos: np.ndarray    # the victims' other photos: the judge's gallery
    seed: int
    aux_available: int | None = None  # auxiliary identities before the --max-aux sample
    stolen_pos: np.ndarray | None = None  # (victims x K_max): every stolen template's photo; column 0 = source_pos

    @property
    def stolen(self) -> np.ndarray:
        """(victims x K_max) positions of the photos whose templates are stolen (K_max = 1: the sources)."""
        return self.source_pos[:, None] if self.stolen_pos is None else self.stolen_pos

    def stolen_for(self, k: int) -> np.ndarray:
        """The stolen templates' positions with ``k`` per victim: (victims,) for 1, (victims x k) else."""
        if k > self.stolen.shape[1]:
            raise ParameterError(f"{k} stolen templates per victim: the split holds {self.stolen.shape[1]}.")
        return self.source_pos if k == 1 else self.stolen[:, :k]

    def to_dict(self, labels: np.ndarray) -> dict:
        out = {"seed": self.seed, "victims": int(len(self.victim_ids)),
               "auxiliary_identities": int(len(np.unique(labels[self.aux_pos]))),
               "auxiliary_identities_available": self.aux_available,
               "auxiliary_images": int(len(self.aux_pos)), "gallery_images": int(len(self.gallery_pos)),
               "source_images": int(self.stolen.size)}
        if self.stolen.shape[1] > 1:
            out["templates_per_victim_max"] = int(self.stolen.shape[1])
        return out

    @property
    def victim_pos(self) -> np.ndarray:
        """Every photo of the victims (stolen templates' photos and gallery), in order."""
        return np.sort(np.concatenate([self.stolen.ravel(), self.gallery_pos]))


def split_identities(labels: np.ndarray, victims: float | int | None, seed: int,
                     max_aux: int | None = None, templates: int = 1, aux_elsewhere: bool = False) -> Split:
    """Seeded: victims drawn among identities with >= ``templates`` + 1 photos (``templates`` stolen
    templates' photos, at least one in the judge's gallery), the rest is auxiliary (at most ``max_aux``
    identities of it, a seeded sample, drawn after the victims so that they do not change). With one
    template per victim the split is the same as it always was; with K_max > 1 every K <= K_max shares
    the victims, the gallery and the first stolen photo. With ``aux_elsewhere`` (``--attacker-data``) the
    attacker's photos come from another dataset: no auxiliary identity here, and by default every identity
    with enough photos is a victim."""
    labels = np.asarray(labels)
    ids, counts = np.unique(labels, return_counts=True)
    need = templates + 1
    eligible = ids[counts >= need]
    n = n_victims(len(eligible) if aux_elsewhere and victims is None else len(ids), victims, aux_elsewhere)
    if n > len(eligible):
        what = f"--templates-per-victim {templates}: " if templates > 1 else ""
        raise ParameterError(f"{what}--victims {n}: only {len(eligible)} identities have the {need} images a "
                             "victim needs" + (" (its stolen templates' photos and one for the judge's gallery)."
                                               if templates > 1 else "."))
    rng = np.random.default_rng(seed + 31337)
    vic = np.sort(rng.choice(eligible, size=n, replace=False))
    is_vic = np.isin(labels, vic)
    source, gallery, stolen = [], [], []
    for v in vic:
        pos = np.flatnonzero(labels == v)
        if templates == 1:
            taken = [int(rng.choice(pos))]
        else:
            taken = [int(x) for x in rng.choice(pos, size=templates, replace=False)]
        source.append(taken[0])
        stolen.append(taken)
        gallery.extend(int(p) for p in pos if p not in taken)
    aux = np.flatnonzero(~is_vic) if not aux_elsewhere else np.zeros(0, int)
    aux_ids = np.unique(labels[aux])
    if max_aux is not None and len(aux_ids) > max_aux:
        keep = np.random.default_rng(seed + 4242).choice(aux_ids, size=max_aux, replace=False)
        aux = aux[np.isin(labels[aux], keep)]
    return Split(vic, aux, np.array(source), np.array(sorted(gallery)), seed, int(len(aux_ids)),
                 None if templates == 1 else np.array(stolen))


# ---------------------------------------------------------------- Templates


@dataclass
class AttackerView:
    """How the attacker makes protected templates of its own faces: its own copy of the fitted
    defense (Kerckhoffs: algorithm and public parameters known), drawing its own randomness; with
    a disclosed key it holds the real keys, with a secret key keys of its own (other seeds, and
    per-user keys under names of its own users)."""

    defense: Any
    key: str                       # "disclosed" or "secret" ("disclosed" for unkeyed defenses)
    user_prefix: str | None = None

    def __call__(self, E: np.ndarray, users: np.ndarray | None = None) -> np.ndarray:
        if users is not None and self.user_prefix:
            users = np.array([f"{self.user_prefix}{u}" for u in users])
        return self.defense.transform(E, users)


def attacker_view(fitted, key: str, seed: int) -> AttackerView:
    if not fitted.keyed or key == "disclosed":
        return AttackerView(fitted.with_randomness(seed + ATTACKER_RANDOMNESS), "disclosed")
    return AttackerView(fitted.reissued(seed + ATTACKER_RANDOMNESS, ATTACKER_RANDOMNESS), "secret", "attacker-")


@dataclass
class Templates:
    """One defense setting: the defender's fitted defense and templates, and the attacker's views."""

    spec: str
    params: dict[str, Any]
    defense: Any                          # fitted on the defender's enrolments
    templates: np.ndarray                 # the defender's template of every photo
    attacker: dict[str, AttackerView] = field(default_factory=dict)  # key scenario -> view

    @property
    def scenarios(self) -> list[str]:
        return list(self.attacker)


def key_scenarios(defense, key: str) -> list[str]:
    """The key scenarios a row reports; the first is the headline."""
    if not defense.keyed:
        return ["disclosed"]
    return ["disclosed", "secret"] if key == "both" else [key]


def protect(embedded: EmbeddedSet, spec: str, params: dict[str, Any], fit_pos: np.ndarray | None,
            key: str, seed: int) -> Templates:
    """Fit the defense on the defender's enrolments (``fit_pos``; all photos by default), protect
    every embedding, and give the attacker its own view for each key scenario."""
    E, labels = embedded.embeddings["target"], embedded.labels
    fit = slice(None) if fit_pos is None else fit_pos
    d = registry.create(spec, **params)
    d.fit(E[fit], labels[fit], comparator=embedded.encoders["target"]["comparator"])  # users: the identities
    T = d.transform(E, labels)
    if not np.isfinite(np.asarray(T, np.float64)).all():
        raise ParameterError(f"{row_label(spec, params)}: the defense produced NaN or "
                             "infinite templates; choose parameters in a sane range.")
    views = {k: attacker_view(d, k, seed) for k in key_scenarios(d, key)}
    return Templates(spec, dict(params), d, T, views)


def check_rows_fit(grid: list[tuple[str, dict]], dim: int) -> None:
    """Every row's defense fitted on stand-in embeddings of the target's width, before any photo is read:
    what only the width decides (BioHash bits, an orthogonal projection's dim, PCA's dim) fails now, in one
    line naming the row, not after the attacks of the rows before it."""
    rng = np.random.default_rng(0)
    E = rng.normal(size=(max(2 * dim, 64), dim)).astype(np.float32)
    users = np.repeat(np.arange(len(E) // 2), 2).astype(str)
    for spec, params in grid:
        d = registry.create(spec, **params)
        if d.encrypted:  # a real key pair: checked when its row runs (a second or so)
            d.check_params()
            continue
        try:
            d.fit(E, users)
        except ParameterError as exc:
            label = row_label(spec, params)
            msg = str(exc)
            raise ParameterError(msg if msg.startswith(f"{label}:") or msg.startswith(f"{spec}:")
                                 else f"{label}: {msg}") from None
