"""Privacy side of the protocol: split, attacker's face model, attacks per row, the judge.

Threat model (DESIGN.md): the attacker steals the protected templates of the
victims; knows the target encoder F (white box: can differentiate it; black
box: can only query it) and the defense's algorithm; has public photos of
OTHER people (the auxiliary identities) and computes their protected
templates itself (adaptive attack). For keyed defenses the key is either
secret (the attacker protects its auxiliary faces with keys of its own) or
disclosed (a stolen token: it uses the real keys). An attack succeeds when an
independent judge J matches the reconstruction to the victim against a gallery
of OTHER photos of the victims (never the photo the template came from).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facepii import metrics
from facepii.encoders import Encoder, encoder_id
from facepii.errors import ParameterError

THREAT_MODEL = (
    "The attacker has stolen the protected templates of the victims. It knows the target encoder "
    "({knowledge}) and the defense's algorithm and public parameters (Kerckhoffs), and holds public "
    "photos of {n_aux} OTHER people (no identity in common with the {n_victims} victims), whose "
    "protected templates it computes itself: the attacks are trained on protected templates "
    "(adaptive). Keyed defenses: {key}. Success: an independent judge ({judge}) matches the "
    "reconstruction to the victim in a gallery of other photos of the {n_victims} victims (never "
    "the photo the template came from). Rates carry 95% bootstrap intervals over victims."
)

KNOWLEDGE_TEXT = {
    "white": "white box: it can run and differentiate it",
    "black": "black box: it can only query it",
}
KEY_TEXT = {
    "secret": "the key is secret (the attacker protects its own faces with keys of its own)",
    "disclosed": "the key is disclosed (a stolen token: the attacker uses the real keys)",
    "both": "reported for a secret key and for a disclosed key (stolen token); the disclosed case "
            "is the row's headline figure",
}


@dataclass
class PrivacyConfig:
    attacks: list[str]
    judge: str | None = None
    knowledge: str = "white"
    key: str = "both"
    budget: str = "standard"
    victims: float | int | None = None
    device: str = "cpu"
    n_boot: int = metrics.N_BOOT
    seed: int = 0


def default_judge(target: str) -> str:
    """dlib judges an SFace target; SFace judges anything else."""
    return "dlib" if target.split(":")[0] == "sface" else "sface"


def same_model(a: Encoder, b: Encoder) -> bool:
    """Whether two encoders run the same model (same name and version, or the same ONNX file)."""
    if encoder_id(a) == encoder_id(b):
        return True
    pa, pb = getattr(a, "path", None), getattr(b, "path", None)
    if pa and pb:
        from facepii.encoders import file_digest

        return file_digest(pa) == file_digest(pb)
    return False


def n_victims(n_ids: int, victims: float | int | None) -> int:
    if victims is None:
        n = max(round(0.25 * n_ids), min(50, n_ids // 2))
    elif isinstance(victims, float) and 0 < victims < 1:
        n = round(victims * n_ids)
    else:
        n = int(victims)
    if n < 2 or n > n_ids - 2:
        raise ParameterError(
            f"--victims {victims}: needs at least 2 victims and 2 auxiliary identities out of {n_ids}; "
            f"give a count (e.g. 50) or a fraction (e.g. 0.25).")
    return n


@dataclass
class Split:
    """Disjoint identities: auxiliary (the attacker's) and victims; per victim one source image."""

    victim_ids: np.ndarray     # sorted identity labels
    aux_pos: np.ndarray        # positions (in the extraction) of auxiliary images
    source_pos: np.ndarray     # per victim (victim_ids order): the photo whose template is stolen
    gallery_pos: np.ndarray    # the victims' other photos: the judge's gallery
    seed: int

    def to_dict(self, labels: np.ndarray) -> dict:
        return {"seed": self.seed, "victims": int(len(self.victim_ids)),
                "auxiliary_identities": int(len(np.unique(labels[self.aux_pos]))),
                "auxiliary_images": int(len(self.aux_pos)), "gallery_images": int(len(self.gallery_pos)),
                "source_images": int(len(self.source_pos))}


def split_identities(labels: np.ndarray, victims: float | int | None, seed: int) -> Split:
    labels = np.asarray(labels)
    ids, counts = np.unique(labels, return_counts=True)
    eligible = ids[counts >= 2]
    n = n_victims(len(ids), victims)
    if n > len(eligible):
        raise ParameterError(f"--victims {n}: only {len(eligible)} identities have the 2 images a victim needs.")
    rng = np.random.default_rng(seed + 31337)
    vic = np.sort(rng.choice(eligible, size=n, replace=False))
    is_vic = np.isin(labels, vic)
    source, gallery = [], []
    for v in vic:
        pos = np.flatnonzero(labels == v)
        s = int(rng.choice(pos))
        source.append(s)
        gallery.extend(int(p) for p in pos if p != s)
    return Split(vic, np.flatnonzero(~is_vic), np.array(source), np.array(sorted(gallery)), seed)


@dataclass
class Judge:
    """A face-recognition model that embeds reconstructions and searches the victims' gallery."""

    encoder: Encoder
    gallery: np.ndarray        # its embeddings of the gallery photos
    gallery_labels: np.ndarray
    threshold: float           # at FMR 1e-3 on its own impostor scores of the victims' real photos

    @property
    def score(self):
        return metrics.comparator(self.encoder.comparator)

    def judge(self, faces: np.ndarray, victims: np.ndarray, n_boot: int, seed: int) -> dict:
        emb = self.encoder.embed(faces)
        return metrics.reidentification(emb, victims, self.gallery, self.gallery_labels, self.score,
                                        self.threshold, n_boot=n_boot, seed=seed)


def make_judge(enc: Encoder, real_emb: np.ndarray, real_labels: np.ndarray, gallery_mask: np.ndarray) -> Judge:
    score = metrics.comparator(enc.comparator)
    _, imp = metrics.pair_scores(real_emb, real_labels, score)
    return Judge(enc, real_emb[gallery_mask], real_labels[gallery_mask], metrics.threshold_at_far(imp, 1e-3))


@dataclass
class PrivacySetup:
    cfg: PrivacyConfig
    split: Split
    labels: np.ndarray
    target: Encoder
    judges: dict[str, Judge]          # "judge" and "target"
    aux_faces: np.ndarray
    aux_embeddings: np.ndarray
    source_faces: np.ndarray
    gallery_sets: list[np.ndarray]    # per victim up to 3 gallery photos, aligned (grid, lineups)
    face_model: Any
    torch_encoder: Any
    budget: Any
    baselines: dict = field(default_factory=dict)

    @property
    def victims(self) -> np.ndarray:
        return self.labels[self.split.source_pos]

    def threat_model(self) -> str:
        note = ""
        if same_model(self.judges["judge"].encoder, self.target):
            note = (" Note: the judge is the target model itself, not an independent system: its figures "
                    "are the white-box upper bound.")
        return THREAT_MODEL.format(knowledge=KNOWLEDGE_TEXT[self.cfg.knowledge], n_aux=len(np.unique(
            self.labels[self.split.aux_pos])), n_victims=len(self.split.victim_ids), key=KEY_TEXT[self.cfg.key],
            judge=self.judges["judge"].encoder.name) + note


def validate(cfg: PrivacyConfig) -> None:
    """Check the privacy options before any long work starts."""
    import attacks  # noqa: F401  (registers the built-in attacks)
    from attacks.facemodel import BUDGETS
    from facepii.registry import attacks as reg

    for a in cfg.attacks:
        reg.get(a)
    if len(set(cfg.attacks)) != len(cfg.attacks):
        raise ParameterError(f"--attack lists an attack twice: {','.join(cfg.attacks)}.")
    if cfg.knowledge not in KNOWLEDGE_TEXT:
        raise ParameterError(f"--knowledge must be white or black, got {cfg.knowledge!r}.")
    if cfg.key not in KEY_TEXT:
        raise ParameterError(f"--key must be secret, disclosed or both, got {cfg.key!r}.")
    if cfg.budget not in BUDGETS:
        raise ParameterError(f"--budget must be one of {', '.join(BUDGETS)}, got {cfg.budget!r}.")
    _set_device(cfg.device)


def prepare(cfg: PrivacyConfig, ex, target: Encoder, cache) -> PrivacySetup:
    """Split, judge embeddings and thresholds, the attacker's face model (cached), empirical baselines."""
    from attacks.facemodel import BUDGETS
    from facepii.encoders import get_encoder
    from facepii.extract import extract

    validate(cfg)
    budget = BUDGETS[cfg.budget]
    labels = ex.faceset.labels
    split = split_identities(labels, cfg.victims, cfg.seed)
    E = ex.for_encoder(target)

    # the judges: an independent model, and the target itself (white-box upper bound)
    judge_enc = get_encoder(cfg.judge or default_judge(target.name))
    if cfg.judge is None and same_model(judge_enc, target):
        judge_enc = get_encoder("dlib")  # e.g. onnx:PATH pointing at SFace's own file
    vic_pos = np.sort(np.concatenate([split.source_pos, split.gallery_pos]))
    gallery_mask = np.isin(vic_pos, split.gallery_pos)
    if encoder_id(judge_enc) == encoder_id(target):
        judge_emb = E[vic_pos]
    else:
        sub = ex.faceset.subset(vic_pos)
        jx = extract(sub, [judge_enc], cache)
        if len(jx.faceset) != len(sub):
            raise ParameterError("the judge could not embed every victim photo.")
        judge_emb = jx.for_encoder(judge_enc)
    judges = {"judge": make_judge(judge_enc, judge_emb, labels[vic_pos], gallery_mask),
              "target": make_judge(target, E[vic_pos], labels[vic_pos], gallery_mask)}

    aux_faces = ex.aligned(split.aux_pos)
    source_faces = ex.aligned(split.source_pos)
    gallery_sets = [ex.aligned(split.gallery_pos[labels[split.gallery_pos] == v][:3]) for v in split.victim_ids]

    torch_enc = None
    if cfg.knowledge == "white":
        from facepii.torch_onnx import torch_encoder_for

        torch_enc = torch_encoder_for(target)
        if cfg.device != "cpu":
            torch_enc.net.to(cfg.device)
    face_model = _face_model(cfg, ex, split, target, E, aux_faces, budget, torch_enc, cache)
    setup = PrivacySetup(cfg, split, labels, target, judges, aux_faces, E[split.aux_pos], source_faces,
                         gallery_sets, face_model, torch_enc, budget)
    setup.baselines = _baselines(setup)
    return setup


def _set_device(device: str) -> None:
    if device not in ("cpu", "cuda"):
        raise ParameterError(f"--device must be cpu or cuda, got {device!r}.")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ParameterError("--device cuda: no CUDA device is available to torch here; use --device cpu.")


def _face_model(cfg, ex, split, target, E, aux_faces, budget, torch_enc, cache):
    from attacks.facemodel import FaceModel

    keys = [ex.keys[int(i)] for i in split.aux_pos]
    key = FaceModel.cache_key(keys, encoder_id(target), cfg.knowledge, budget, cfg.seed)
    path = Path(cache.folder) / "models" / f"facemodel-{key}.pt" if cache.enabled else None
    if path is not None and path.is_file():
        try:
            return FaceModel.load(path)
        except Exception:
            pass  # a broken cache file is retrained below
    fm = FaceModel.train(E[split.aux_pos], aux_faces, budget, torch_enc, query=target.embed, seed=cfg.seed,
                         device=cfg.device)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fm.save(tmp)
        tmp.replace(path)
    return fm


def _baselines(setup: PrivacySetup) -> dict:
    """Empirical floors through the same judges: a random auxiliary face, and the mean face."""
    cfg = setup.cfg
    rng = np.random.default_rng(cfg.seed + 99)
    n = len(setup.split.victim_ids)
    rand = setup.aux_faces[rng.choice(len(setup.aux_faces), size=n, replace=True)]
    mean = np.repeat(setup.aux_faces.mean(axis=0).round().astype(np.uint8)[None], n, axis=0)
    out = {}
    for name, faces in (("random_face", rand), ("mean_face", mean)):
        out[name] = {j: _summary(setup.judges[j].judge(faces, setup.victims, cfg.n_boot, cfg.seed))
                     for j in ("judge", "target")}
    return out


def _summary(r: dict) -> dict:
    keys = ("rank1", "rank5", "leakage_ratio", "sar@fmr=1e-3")
    out = {k: r[k].to_dict() for k in keys}
    out["baseline_rank1"] = r["baseline_rank1"]
    return out


# ---------------------------------------------------------------- one row


def attacker_protect(fitted, key: str):
    """How the attacker makes templates of its own faces: with the real keys (disclosed), or with
    keys of its own (secret: the same defense, fitted the same way, with other seeds and user ids).
    Unkeyed defenses: the defense itself."""
    import copy

    if not fitted.keyed or key == "disclosed":
        return lambda E, users=None: fitted.transform(E, users)
    own = copy.deepcopy(fitted)
    _reseed(own, 7_654_321)
    return lambda E, users=None: own.transform(
        E, None if users is None else np.array([f"attacker-{u}" for u in users]))


def _reseed(d, offset: int) -> None:
    steps = [s for _, s in d.steps] if hasattr(d, "steps") else [d]
    for s in steps:
        if "seed" in s.get_params():
            s.set_params(seed=int(s.seed) + offset)


def attack_row(setup: PrivacySetup, defense, T_all: np.ndarray, key: str) -> tuple[dict, dict]:
    """Run every attack against one defense setting. Returns (privacy block, reconstructions by attack)."""
    import attacks as attack_registry
    from attacks.base import AttackContext
    from defenses.base import user_keyed

    cfg, split = setup.cfg, setup.split
    aux_users = setup.labels[split.aux_pos]
    protect = attacker_protect(defense, key)
    T_aux = protect(setup.aux_embeddings, aux_users)
    T_vic = T_all[split.source_pos]
    ctx = AttackContext(encoder=setup.target, defense=defense, face_model=setup.face_model,
                        aux_embeddings=setup.aux_embeddings, aux_users=aux_users, protect=protect,
                        budget=setup.budget, knowledge=cfg.knowledge, key=key if defense.keyed else "disclosed",
                        per_user_keys=user_keyed(defense), torch_encoder=setup.torch_encoder, seed=cfg.seed,
                        device=cfg.device)
    ctx.shared["victim_users"] = setup.victims
    per_attack, recon = {}, {}
    for name in cfg.attacks:
        atk = attack_registry.create(name)
        if name == "decoder":
            ctx.shared["decoder_attack"] = atk
        atk.fit(T_aux, setup.aux_faces, context=ctx)
        faces = atk.reconstruct(T_vic, users=setup.victims)
        recon[name] = faces
        per_attack[name] = _judge_all(setup, faces)
    worst = max(per_attack, key=lambda a: (per_attack[a]["rank1"]["value"],
                                           per_attack[a]["sar@fmr=1e-3"]["value"]))
    block = {"attack": worst, "judge": setup.judges["judge"].encoder.name, **per_attack[worst],
             "per_attack": per_attack}
    if defense.keyed:
        block["key"] = key
    return block, recon


def _judge_all(setup: PrivacySetup, faces: np.ndarray) -> dict:
    cfg = setup.cfg
    j = setup.judges["judge"].judge(faces, setup.victims, cfg.n_boot, cfg.seed)
    t = setup.judges["target"].judge(faces, setup.victims, cfg.n_boot, cfg.seed)
    out = _summary(j)
    out["ssim"] = metrics.bootstrap_mean(metrics.ssim(faces, setup.source_faces), cfg.n_boot, cfg.seed).to_dict()
    out["target_judge"] = _summary(t)
    return out
