"""The attacker's stage: its means (face model, differentiable target) and the Reconstructions.

Threat model (DESIGN.md): the attacker steals the protected templates of the
victims; knows the target encoder F (white box: can differentiate it; black
box: can only query it) and the defense's algorithm; has public photos of
OTHER people (the auxiliary identities) and computes their protected
templates itself with its own view of the defense (:class:`facepii.stages.AttackerView`):
the attacks are adaptive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facepii.cache import Cache
from facepii.config import PrivacyConfig
from facepii.encoders import Encoder, encoder_id
from facepii.stages import EmbeddedSet, Split, Templates


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
    face_model_source: str = "trained"   # "trained", "cache", or "retrained (cache entry unusable: ...)"


@dataclass
class Reconstructions:
    """One row and key scenario: each attack's faces for the victims' stolen templates (victim order)."""

    key: str
    faces: dict[str, np.ndarray]   # attack -> N x 112 x 112 x 3 uint8
    context: Any = None            # the row's AttackContext (fitted maps the irreversibility stage reuses)
    aux_templates: np.ndarray | None = None  # the auxiliary set's templates (the attacker's view)


def prepare_attacker(p: PrivacyConfig, seed: int, embedded: EmbeddedSet, split: Split, target: Encoder,
                     cache: Cache) -> AttackerKit:
    from attacks.facemodel import BUDGETS

    budget = BUDGETS[p.budget]
    labels = embedded.labels
    E = embedded.embeddings["target"]
    aux_faces = embedded.aligned(split.aux_pos)
    torch_enc = None
    if p.knowledge == "white":
        from facepii.torch_onnx import torch_encoder_for

        torch_enc = torch_encoder_for(target)
        if p.device != "cpu":
            torch_enc.net.to(p.device)
    kit = AttackerKit(target, p.knowledge, budget, aux_faces, E[split.aux_pos], labels[split.aux_pos], None,
                      torch_enc, seed, p.device)
    keys = [embedded.keys[int(i)] for i in split.aux_pos]
    kit.face_model, kit.face_model_source = _face_model(kit, keys, cache)
    return kit


def _face_model(kit: AttackerKit, aux_keys: list[str], cache: Cache):
    """Train the face model, or read it from the cache. A cache entry is data, never code
    (safetensors); one that does not read back as a face model of the right shape is retrained."""
    from attacks.facemodel import FaceModel

    key = FaceModel.cache_key(aux_keys, encoder_id(kit.target), kit.knowledge, kit.budget, kit.seed)
    path = Path(cache.folder) / "models" / f"facemodel-{key}.safetensors" if cache.enabled else None
    source = "trained"
    if path is not None and path.is_file() and not path.is_symlink():
        try:
            fm = FaceModel.load(path)
            if fm.d_in == kit.aux_embeddings.shape[1]:
                return fm, "cache"
            source = "retrained (cache entry unusable: wrong width)"
        except ValueError as exc:
            source = f"retrained (cache entry unusable: {exc})"
    # the mirrored faces' embeddings: a white-box attacker runs its own copy of the model (the same
    # function, about two thirds of onnxruntime's time); a black-box one queries the target
    query = kit.torch_encoder.embed if kit.torch_encoder is not None else kit.target.embed
    fm = FaceModel.train(kit.aux_embeddings, kit.aux_faces, kit.budget, kit.torch_encoder,
                         query=query, seed=kit.seed, device=kit.device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fm.save(tmp)
        tmp.replace(path)
    return fm, source


def reconstruct(kit: AttackerKit, templates: Templates, key: str, split: Split, labels: np.ndarray,
                attacks: list[str]) -> Reconstructions:
    """Fit every attack on the auxiliary set's templates (made with the attacker's own view of the
    defense) and reconstruct each victim's face from its stolen template."""
    view = templates.attacker[key]
    defense = templates.defense
    T_aux = view(kit.aux_embeddings, kit.aux_users)
    victims = labels[split.source_pos]
    ctx = _context(kit, defense, view, view.key, victims)
    return Reconstructions(key, _run(ctx, kit, T_aux, templates.templates[split.source_pos], victims, attacks),
                           ctx, T_aux)


def _context(kit: AttackerKit, defense, protect, key: str, victims: np.ndarray):
    from attacks.base import AttackContext

    return AttackContext(encoder=kit.target, defense=defense, face_model=kit.face_model,
                         aux_embeddings=kit.aux_embeddings, aux_users=kit.aux_users, protect=protect,
                         budget=kit.budget, knowledge=kit.knowledge, key=key, per_user_keys=defense.per_user,
                         torch_encoder=kit.torch_encoder, seed=kit.seed, device=kit.device, victim_users=victims)


def _run(ctx, kit: AttackerKit, T_aux: np.ndarray, T_vic: np.ndarray, victims: np.ndarray,
         attacks: list[str]) -> dict[str, np.ndarray]:
    import attacks as registry

    faces = {}
    for name in attacks:
        atk = registry.create(name)
        atk.fit(T_aux, kit.aux_faces, context=ctx)
        faces[name] = atk.reconstruct(T_vic, users=victims)
    return faces


def oracle_attack(kit: AttackerKit, templates: Templates, embedded: EmbeddedSet, split: Split, kind: str,
                  budget: int, threshold: float, attacks: list[str]):
    """The score / decision oracle against every victim (:mod:`attacks.oracle`), then faces from the
    recovered embeddings by the attacks on raw templates. Returns (Reconstructions, OracleResult)."""
    import defenses as defense_registry
    from attacks.oracle import Oracle, Prior, calibrate, decision_search, score_solver
    from facepii.stages import attacker_view

    d = templates.defense
    labels = embedded.labels
    victims = labels[split.source_pos]
    stored = (embedded.embeddings["target"] if d.encrypted else templates.templates)[split.source_pos]
    oracle = Oracle(d, stored, victims, threshold)
    prior = Prior(kit.aux_embeddings)
    if kind == "score":
        calib = calibrate(attacker_view(d, "secret", kit.seed), kit.aux_embeddings, kit.aux_users, kit.seed)
        res = score_solver(oracle, kit.aux_embeddings, calib, prior, budget, kit.seed)
    else:
        res = decision_search(oracle, kit.aux_embeddings, prior, budget, kit.seed)
    raw = defense_registry.create("none").fit(kit.aux_embeddings, comparator=kit.target.comparator)
    ctx = _context(kit, raw, lambda E, users=None: np.asarray(E, np.float32), "disclosed", victims)
    est = res.estimates.astype(np.float32)
    faces = _run(ctx, kit, kit.aux_embeddings, est, victims, attacks)
    return Reconstructions(f"{kind} oracle", faces, ctx, kit.aux_embeddings), res
