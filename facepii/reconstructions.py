"""The Reconstructions stage: the attacker's means (face model, differentiable target) and its faces.

Threat model (DESIGN.md): the attacker steals the protected templates of the
victims; knows the target encoder F (white box: can differentiate it; black
box: can only query it) and the defense's algorithm; has public photos of
OTHER people (the auxiliary identities) and computes their protected
templates itself with its own view of the defense (:class:`facepii.stages.AttackerView`):
the attacks are adaptive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

import attacks as attack_registry
import defenses as defense_registry
from attacks.base import RowCache, ThreatModel, recovered_embeddings
from attacks.facemodel import BUDGETS, FaceModel
from attacks.oracle import Oracle, OracleInputs
from attacks.prior import KINDS, PRIOR_BUDGETS, PRIOR_FORMAT, SAME_PERSON, FacePrior, PriorSettings
from facepii import kernels, progress
from facepii.attacker_data import AttackerPhotos, victim_centroids
from facepii.cache import Cache
from facepii.config import PrivacyConfig
from facepii.encoder_base import differentiable, embedding_problem, same_model
from facepii.encoders import Encoder, encoder_id, get_encoder
from facepii.errors import EncoderError, ParameterError
from facepii.irreversibility import ORACLE_RANDOMNESS, probing
from facepii.stages import EmbeddedSet, Split, Templates, attacker_view, encoder_dict
from facepii.torch_onnx import Ensemble, QueryCounter, torch_encoder_for

#: no prior facepii writes comes near this (the thorough budget's: about 0.4 GB)
MAX_PRIOR_BYTES = 4 << 30
CHECK_FACES = 16  # auxiliary faces on which a torch copy is checked against onnxruntime when it is built


@dataclass
class AttackerKit:
    """What the attacker holds for every row: its auxiliary faces and their embeddings, the face
    model trained on them (once per evaluation), and the differentiable target (white box)."""

    target: Encoder
    knowledge: str
    budget: Any
    aux_faces: np.ndarray
    aux_embeddings: np.ndarray
    aux_users: np.ndarray
    face_model: Any
    torch_encoder: Any
    seed: int
    device: str
    face_model_source: str = "trained"   # "trained", "cache", "retrained (cache entry unusable: ...)", or
    #                                      NO_FACE_MODEL (no attack of the run uses one: face_model is None)
    surrogates: list = field(default_factory=list)   # the black-box attacker's own face models (encoders)
    space: np.ndarray | None = None      # the surrogates' embeddings of the auxiliary faces
    queries: QueryCounter | None = None  # the target as a black-box attacker queries it
    aux_queries: int = 0                 # queries spent before any row: the auxiliary photos (and mirrors)
    prior_source: str = ""               # where the face prior came from: "trained", "cache", "file PATH"

    def models(self) -> dict:
        """Every model the attacker used, and how (the report names them)."""
        how = "white box (its torch copy, differentiated)" if self.knowledge == "white" else "queries only"
        out = {"target": {"name": self.target.name, "use": how}}
        if self.torch_encoder is not None and getattr(self.torch_encoder, "check", None):
            out["target"]["torch_copy_vs_onnxruntime"] = self.torch_encoder.check
        for s, check in zip(self.surrogates, getattr(self.torch_encoder, "checks", {}).values()):
            out.setdefault("surrogates", []).append({**encoder_dict(s), "use": "white box (its torch copy)",
                                                     "torch_copy_vs_onnxruntime": check})
        return out


@dataclass
class Reconstructions:
    """One row and key scenario: each attack's faces for the victims' stolen templates (victim order),
    and the raw embeddings the attacker recovered from those templates (per inversion method: what
    ISO/IEC 30136 irreversibility judges)."""

    key: str
    faces: dict[str, np.ndarray]                  # attack -> N x 112 x 112 x 3 uint8
    recovered: dict[str, np.ndarray] | None = None  # "learned" (and "solver") -> N x d unit embeddings
    queries: dict | None = None                   # a black-box attacker's queries to the target
    #: with several K (--templates-per-victim 1,2,4): K -> (attack -> faces, queries), from the same fitted
    #: attacks; ``faces`` above are the headline K's
    more: dict[int, tuple[dict[str, np.ndarray], dict | None]] = field(default_factory=dict)


def check_surrogates(surrogates: list[Encoder], faces: np.ndarray) -> None:
    """The output checks a target's and a judge's embeddings get (:func:`facepii.encoder_base.embedding_problem`:
    NaN, zeros, a constant), on the attacker's own faces, before any torch copy is built: a degenerate surrogate
    is named as such, never optimised through nor reported as a copy that disagrees."""
    for s in surrogates:
        why = embedding_problem(np.asarray(s.embed(faces)))
        if why:
            raise EncoderError(f"--surrogate {s.name}: on the attacker's own faces, {why}; a surrogate must be a "
                               "working face model (check the model file and its options: output, mean/std, "
                               "layout).")


def resolve_surrogates(specs: Sequence[str], target: Encoder) -> list[Encoder]:
    """``--surrogate onnx:PATH,...``'s entries (:attr:`EvaluateConfig.specs`): face models the black-box
    attacker owns and runs white box."""
    out: list[Encoder] = []
    for s in specs:
        enc = get_encoder(s)
        if differentiable(enc) is None:
            raise ParameterError(f"--surrogate {s}: no ONNX graph to differentiate; a surrogate is a model the "
                                 "attacker runs white box (sface or onnx:PATH).")
        if same_model(enc, target):
            raise ParameterError(f"--surrogate {s}: that is the target itself; an attacker who can differentiate it "
                                 "is white box (--knowledge white).")
        if any(same_model(enc, e) for e in out):
            raise ParameterError(f"--surrogate {s}: the same model twice.")
        out.append(enc)
    return out


def prepare_attacker(p: PrivacyConfig, seed: int, embedded: EmbeddedSet, split: Split, target: Encoder,
                     cache: Cache, surrogates: list[Encoder] | None = None, aux: AttackerPhotos | None = None,
                     centroids: np.ndarray | None = None) -> AttackerKit:
    """The attacker's means. White box: the torch copy of the target, checked against onnxruntime on its
    auxiliary faces. Black box: the target behind a query counter (its auxiliary photos' embeddings are
    queries too) and, with ``surrogates``, their torch copies, in whose space it works. Its photos: the
    split's auxiliary identities, or ``aux`` (``--attacker-data``). ``centroids``: the victims' mean SFace
    embeddings, when already computed."""
    budget = BUDGETS[p.budget]
    src, aux_pos = (embedded, split.aux_pos) if aux is None else (aux.photos, aux.pos)
    labels = src.labels
    E = src.embeddings["target"]
    aux_faces = src.aligned(aux_pos)
    check = aux_faces[:CHECK_FACES]
    torch_enc, space, queries = None, None, None
    if p.knowledge == "white":
        torch_enc = torch_encoder_for(target, check)
        if p.device != "cpu":
            torch_enc.net.to(p.device)
    else:
        queries = QueryCounter(target)
        if surrogates:
            check_surrogates(surrogates, check)
            torch_enc = Ensemble([torch_encoder_for(s, check) for s in surrogates], [s.name for s in surrogates])
            if p.device != "cpu":
                torch_enc.to(p.device)
            space = torch_enc.embed(aux_faces)
    kit = AttackerKit(target, p.knowledge, budget, aux_faces, E[aux_pos], labels[aux_pos], None,
                      torch_enc, seed, p.device, surrogates=list(surrogates or []), space=space, queries=queries)
    keys = [src.keys[int(i)] for i in aux_pos]
    victim_keys = [embedded.keys[int(i)] for i in split.victim_pos]
    people = None
    if p.prior not in KINDS:
        people = centroids if centroids is not None else victim_centroids(embedded, split, target)
    users = needs_face_model(p.attacks)
    if users or p.prior not in KINDS:  # a prior file is checked against the victims whatever the attacks
        prior, kit.prior_source = attacker_prior(p, seed, kit.aux_faces, keys, kit.aux_users, victim_keys, cache,
                                                 people)
    if users:
        kit.face_model, kit.face_model_source = _face_model(kit, keys, cache, prior)
    else:
        kit.face_model_source = NO_FACE_MODEL + f" ({', '.join(p.attacks)})"
        progress.note(f"attacker's face model: {kit.face_model_source}")
        if kit.prior_source:  # a prior file, checked against the victims
            kit.prior_source += " (checked, not used: no face model)"
    if queries is not None:  # the auxiliary photos' embeddings, and any mirrored faces the face model queried
        kit.aux_queries = len(aux_faces) + queries.queries
        queries.queries = 0
    return kit


NO_FACE_MODEL = "not trained: no attack of this run uses one"


def needs_face_model(attacks: Sequence[str]) -> list[str]:
    """The attacks among ``attacks`` that read the attacker's face model (``Attack.uses_face_model``):
    without any, the run trains none."""
    return [a for a in attacks if type(attack_registry.create(a)).uses_face_model]


def prior_key(p: PrivacyConfig, settings: PriorSettings, keys: list[str], seed: int) -> str:
    """The cache key of a prior trained on photos ``keys``: the photos, its settings and the seed (and the
    thread count, which rounds its face space: --threads)."""
    import torch

    h = hashlib.sha256()
    for part in [PRIOR_FORMAT, repr(settings), str(seed), f"threads:{torch.get_num_threads()}",
                 f"kernels:{kernels.fingerprint()}", *sorted(keys)]:
        h.update(part.encode())
        h.update(b"\0")
    return "prior-" + h.hexdigest()[:24]


def attacker_prior(p: PrivacyConfig, seed: int, faces: np.ndarray, keys: list[str], labels: np.ndarray,
                   victim_keys: list[str], cache: Cache, victim_centroids: np.ndarray | None = None
                   ) -> tuple[FacePrior, str]:
    """The attacker's face prior (:mod:`attacks.prior`): ``--prior FILE`` (refused when trained on a victim's
    photo, or on one of the victims by its identities' embeddings), or one of the built-in kinds trained on
    the attacker's faces (the auxiliary split's, or --attacker-data's), or read from the cache."""
    spec = p.prior
    if spec not in KINDS:
        prior = load_prior(spec)
        shared = prior.overlap(victim_keys)
        if shared:
            raise ParameterError(f"--prior {spec}: it was trained on {shared} of the victims' photos; an attacker's "
                                 "prior must come from other people's photos (train it with `facepii prior train` "
                                 "on data without the victims).")
        if victim_centroids is not None:
            same = int(prior.same_people(victim_centroids).sum())
            if same:
                raise ParameterError(f"--prior {spec}: {same} of the victims look like identities it was trained on "
                                     f"(SFace cosine of their mean embeddings >= {SAME_PERSON}); an attacker's prior "
                                     "must come from other people's photos.")
        return prior, f"file {spec}"
    settings = replace(PRIOR_BUDGETS[p.budget], kind=spec)
    source = "auxiliary split" if p.attacker_data is None else f"attacker data {p.attacker_data}"
    if spec == "eigenfaces":  # a PCA: cheaper to compute than to read
        return FacePrior.train(faces, keys, labels, settings, seed, source), "trained"
    name = prior_key(p, settings, keys, seed)
    data, why = cache.get_model(name)
    if data is not None:
        try:
            return FacePrior.from_bytes(data, "cached prior"), "cache"
        except ValueError as exc:
            why = str(exc)
    prior = FacePrior.train(faces, keys, labels, settings, seed, source)
    cache.put_model(name, prior.to_bytes())
    return prior, "trained" if why is None else f"retrained (cache entry unusable: {why})"


def load_prior(path: str) -> FacePrior:
    """A prior file (``facepii prior train``), checked; one-line ParameterError when it is not one."""
    from pathlib import Path

    f = Path(path)
    if not f.is_file():
        raise ParameterError(f"--prior {path}: no such file (give detail, eigenfaces, or a file written by "
                             "`facepii prior train`).")
    if f.stat().st_size > MAX_PRIOR_BYTES:
        raise ParameterError(f"--prior {path}: {f.stat().st_size / 1e9:.1f} GB, larger than any prior facepii writes.")
    try:
        return FacePrior.from_bytes(f.read_bytes(), f"--prior {path}")
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    except OSError as exc:
        raise ParameterError(f"--prior {path}: cannot read it ({exc.strerror or exc}).") from None


def face_model_key(kit: AttackerKit, aux_keys: list[str], prior: FacePrior | None = None) -> str:
    """The face model's cache key: its auxiliary photos, the models, the attacker's knowledge, the budget,
    the seed and torch's threads (they change the trained weights' rounding, --threads: a cache shared by
    runs with different --threads never mixes their models)."""
    import torch

    ids = encoder_id(kit.target) + "".join(f"|surrogate:{encoder_id(s)}" for s in kit.surrogates)
    ids += f"|torch-threads:{torch.get_num_threads()}"
    ids += f"|kernels:{kernels.fingerprint()}"  # a model trained at another kernels' level has other bits
    return FaceModel.cache_key(aux_keys, ids, kit.knowledge, kit.budget, kit.seed,
                               "" if prior is None else prior.digest())


def _face_model(kit: AttackerKit, aux_keys: list[str], cache: Cache, prior: FacePrior | None = None):
    """Train the face model, or read it from the cache. A cache entry is data, never code
    (safetensors); one that does not read back as a face model of the right shape is retrained."""
    key = face_model_key(kit, aux_keys, prior)
    source = "trained"
    data, why = cache.get_model(f"facemodel-{key}")
    if why:
        source = f"retrained (cache entry unusable: {why})"
    E = kit.aux_embeddings if kit.space is None else kit.space
    if data is not None:
        try:
            fm = FaceModel.from_bytes(data)
            if fm.d_in != E.shape[1]:
                raise ValueError("wrong width")
            why = fm.problem(E[:CHECK_FACES], kit.aux_faces[:CHECK_FACES])  # what the cache returns, checked
            if why:
                raise ValueError(why)
            return fm, "cache"
        except ValueError as exc:
            source = f"retrained (cache entry unusable: {exc})"
    # the mirrored faces' embeddings: a white-box attacker runs its own copy of the model (the same
    # function, about two thirds of onnxruntime's time), one with surrogates runs them; a black-box one
    # queries the target
    query = kit.torch_encoder.embed if kit.torch_encoder is not None else (kit.queries or kit.target).embed
    fm = FaceModel.train(E, kit.aux_faces, kit.budget, kit.torch_encoder, query=query, seed=kit.seed,
                         device=kit.device, prior=prior)
    cache.put_model(f"facemodel-{key}", fm.to_bytes())
    return fm, source


def reconstruct(kit: AttackerKit, templates: Templates, key: str, split: Split, labels: np.ndarray,
                attacks: Sequence[str], ks: tuple[int, ...] | list[int] = (1,)) -> Reconstructions:
    """Fit every attack on the auxiliary set's templates (made with the attacker's own view of the
    defense) and reconstruct each victim's face from its stolen templates: ``ks[0]`` per victim (the
    headline), then, from the same fitted attacks, every further K of ``ks`` (``Reconstructions.more``)."""
    view = templates.attacker[key]
    T_aux = view(kit.aux_embeddings, kit.aux_users)
    victims = labels[split.source_pos]
    threat = _threat(kit, templates.defense, view, view.key, victims)
    cache = RowCache()
    T_vic = templates.templates[split.stolen_for(ks[0])]
    start = kit.queries.queries if kit.queries is not None else 0
    fitted: dict = {}
    faces = _run(threat, cache, kit, T_aux, T_vic, victims, attacks, fitted)
    out = Reconstructions(key, faces, recovered_embeddings(threat, cache, T_aux, T_vic, victims),
                          _queries(kit, start, len(victims)))
    for k in ks[1:]:
        start = kit.queries.queries if kit.queries is not None else 0
        T_k = templates.templates[split.stolen_for(k)]
        out.more[k] = ({name: atk.reconstruct(T_k, users=victims) for name, atk in fitted.items()},
                       _queries(kit, start, len(victims)))
    return out


def _queries(kit: AttackerKit, start: int, n_victims: int) -> dict | None:
    """A black-box attacker's queries to the target: for the auxiliary photos (once, shared by every row)
    and, in this row, per victim."""
    if kit.queries is None:
        return None
    row = kit.queries.queries - start
    return {"auxiliary": int(kit.aux_queries), "row": int(row), "per_victim": row / max(n_victims, 1),
            "total": int(kit.aux_queries + row)}


def _threat(kit: AttackerKit, defense, protect, key: str, victims: np.ndarray) -> ThreatModel:
    return ThreatModel(encoder=kit.target if kit.queries is None else kit.queries, defense=defense,
                       face_model=kit.face_model, aux_embeddings=kit.aux_embeddings, aux_users=kit.aux_users,
                       protect=protect, budget=kit.budget, knowledge=kit.knowledge, key=key,
                       torch_encoder=kit.torch_encoder, seed=kit.seed, device=kit.device, victim_users=victims,
                       space=kit.space)


def _run(threat: ThreatModel, cache: RowCache, kit: AttackerKit, T_aux: np.ndarray, T_vic: np.ndarray,
         victims: np.ndarray, attacks: Sequence[str], fitted: dict | None = None) -> dict[str, np.ndarray]:
    """Each attack fitted, then its faces; the fitted attacks are kept in ``fitted`` when given."""
    faces = {}
    for name in attacks:
        atk = attack_registry.create(name)
        atk.fit(T_aux, kit.aux_faces, threat=threat, cache=cache)
        faces[name] = atk.reconstruct(T_vic, users=victims)
        if fitted is not None:
            fitted[name] = atk
    return faces


def oracle_attack(kit: AttackerKit, templates: Templates, embedded: EmbeddedSet, split: Split, kind: str,
                  budget: int, threshold: float, attacks: Sequence[str]):
    """The oracle attack ``kind`` against every victim (:mod:`attacks.oracle`), then faces from the
    recovered embeddings by the attacks on raw templates. Returns (Reconstructions, OracleResult)."""
    d = templates.defense
    labels = embedded.labels
    victims = labels[split.source_pos]
    stored = (embedded.embeddings["target"] if d.encrypted else templates.templates)[split.source_pos]
    oracle = Oracle(probing(d, kit.seed + ORACLE_RANDOMNESS), stored, victims, threshold)
    own = OracleInputs(kit.aux_embeddings, kit.aux_users, lambda: attacker_view(d, "secret", kit.seed), kit.seed)
    res = attack_registry.create_oracle(kind).recover(oracle, own, budget)
    raw = defense_registry.create("none").fit(kit.aux_embeddings, comparator=kit.target.comparator)
    threat = _threat(kit, raw, lambda E, users=None: np.asarray(E, np.float32), "disclosed", victims)
    est = res.estimates.astype(np.float32)
    faces = _run(threat, RowCache(), kit, kit.aux_embeddings, est, victims, attacks)
    return Reconstructions(f"{kind} oracle", faces, {"oracle": est}), res
