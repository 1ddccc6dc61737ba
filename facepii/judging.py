"""The judges' stage: Reconstructions -> privacy Estimates.

A judge is a face-recognition model that embeds each reconstruction and
searches the victims' gallery (other real photos of the victims, never the
photo a template came from). Its threshold for the success attack rate is
calibrated at FMR 1e-3 on its own impostor scores of the victims' real photos.
Two judges always run: the independent judge (the headline), and the target
model itself (the white-box upper bound).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facepii import metrics
from facepii.encoder_base import same_model
from facepii.encoders import Encoder, get_encoder
from facepii.errors import ParameterError
from facepii.estimates import AttackFigures, JudgeFigures, PrivacyEstimates
from facepii.faces import face_scores
from facepii.metrics import Estimate
from facepii.stages import EmbeddedSet, Split


def default_judge(target: str) -> str:
    """dlib judges an SFace target; SFace judges anything else."""
    return "dlib" if target.split(":")[0] == "sface" else "sface"


def resolve_judges(specs: Sequence[str | None], target: Encoder,
                   attacker_models: list[Encoder] | tuple = ()) -> tuple[list[Encoder], list[str]]:
    """Every independent judge of ``--judge``'s entries ``specs`` (:attr:`EvaluateConfig.specs`: headline
    first; None, the default judge) and notes. A judge that runs the target's
    own model is not independent: listed first it stays the headline and is marked as the white-box upper
    bound (as with one judge); listed after the first it is dropped with a note (the target already
    judges every reconstruction as the upper bound), as is a second entry running the same model. A model
    the attacker used (a surrogate) is never a judge: named, it is refused; by default another is chosen."""
    first = resolve_judge(specs[0], target, attacker_models)
    out, notes = [first], []
    for s in specs[1:]:
        enc = resolve_judge(s, target)
        if same_model(enc, target):
            notes.append(f"judge {s}: the target model itself, already reported as the upper bound; not "
                         "counted as an independent judge.")
        elif any(same_model(enc, e) for e in out):
            notes.append(f"judge {s}: the same model as another judge; judged once.")
        else:
            out.append(enc)
    # figures are keyed by model name: two models under one name would overwrite each other's (the
    # target's own model as the first judge is the allowed exception: it is the upper bound)
    names = [e.name for e in out] + ([] if same_model(out[0], target) else [target.name])
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ParameterError(f"--judge: two models are both named {dup[0]} (the target or another judge); "
                             "give one its own name, e.g. onnx:PATH?name=mine.")
    for j in out:
        used = next((m for m in attacker_models if same_model(j, m)), None)
        if used is not None:
            raise ParameterError(f"--judge {j.name}: the attacker uses this model (--surrogate {used.name}); a judge "
                                 "must be independent of the attack: judge with another model.")
    return out, notes


def judge_role(i: int) -> str:
    """Role names in the EmbeddedSet: ``judge`` (headline), ``judge2``, ``judge3``, ..."""
    return "judge" if i == 0 else f"judge{i + 1}"


def resolve_judge(spec: str | None, target: Encoder, avoid: list[Encoder] | tuple = ()) -> Encoder:
    """The independent judge: ``spec``, or the default for the target (never the target's own model or a
    model the attacker uses when chosen by default, e.g. ``onnx:PATH`` pointing at SFace's own file)."""
    enc = get_encoder(spec or default_judge(target.name))
    if spec is None and (same_model(enc, target) or any(same_model(enc, m) for m in avoid)):
        enc = get_encoder("dlib")
    return enc


@dataclass
class Judge:
    """A face-recognition model with its embeddings of the victims' gallery and its threshold."""

    encoder: Encoder
    gallery: np.ndarray        # its embeddings of the gallery photos
    gallery_labels: np.ndarray
    threshold: float           # at FMR 1e-3 on its own impostor scores of the victims' real photos
    impostor: np.ndarray | None = None  # those impostor scores (thresholds at other FMRs)
    _seen: dict = field(default_factory=dict, repr=False, compare=False)  # digest of faces -> embeddings

    @property
    def score(self):
        return metrics.comparator(self.encoder.comparator)

    def embed(self, faces: np.ndarray) -> np.ndarray:
        """The judge's embeddings of ``faces``. The same faces met again (a row's worst attack's faces,
        judged as an attack and again for irreversibility) are not embedded twice: the last few results
        are kept by the faces' digest (an encoder computes the same embeddings each time)."""
        faces = np.ascontiguousarray(faces)
        key = hashlib.sha256(faces.tobytes()).hexdigest() + repr((faces.shape, faces.dtype.str))
        if key not in self._seen:
            while len(self._seen) >= 8:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = self.encoder.embed(faces)
        return self._seen[key].copy()  # a caller that changes its copy leaves the kept one as computed

    def judge(self, faces: np.ndarray, victims: np.ndarray, n_boot: int, seed: int) -> JudgeFigures:
        return self.judge_scores(faces, victims, n_boot, seed)[0]

    def judge_scores(self, faces: np.ndarray, victims: np.ndarray, n_boot: int,
                     seed: int) -> tuple[JudgeFigures, np.ndarray]:
        """The figures and the (victims x gallery) scores they rest on."""
        emb = self.embed(faces)
        r = metrics.reidentification(emb, victims, self.gallery, self.gallery_labels, self.score,
                                     self.threshold, n_boot=n_boot, seed=seed)
        return (JudgeFigures(r["rank1"], r["rank5"], r["leakage_ratio"], r["sar@fmr=1e-3"], r["baseline_rank1"]),
                r["scores"])


def make_judge(enc: Encoder, real_emb: np.ndarray, real_labels: np.ndarray, gallery_mask: np.ndarray) -> Judge:
    score = metrics.comparator(enc.comparator)
    _, imp = metrics.pair_scores(real_emb, real_labels, score)
    return Judge(enc, real_emb[gallery_mask], real_labels[gallery_mask], metrics.threshold_at_far(imp, 1e-3),
                 np.asarray(imp, np.float32))


def make_judges(embedded: EmbeddedSet, split: Split, judge: Encoder, target: Encoder,
                extra: list[Encoder] | tuple = ()) -> dict[str, Judge]:
    """"judge" (independent) and "target" (upper bound), from the embeddings of the one extraction pass."""
    pos = split.victim_pos
    gallery_mask = np.isin(pos, split.gallery_pos)
    labels = embedded.labels[pos]
    out = {"judge": make_judge(judge, embedded.embeddings["judge"][pos], labels, gallery_mask),
           "target": make_judge(target, embedded.embeddings["target"][pos], labels, gallery_mask)}
    for i, enc in enumerate(extra, start=1):  # further independent judges (--judge a,b,c)
        role = judge_role(i)
        out[role] = make_judge(enc, embedded.embeddings[role][pos], labels, gallery_mask)
    return out


def independent(judges: dict[str, Judge]) -> list[str]:
    """The roles of the independent judges, headline first."""
    return [r for r in judges if r != "target"]


def realism(judge: Judge, faces: np.ndarray, victims: np.ndarray, sources: np.ndarray, n_boot: int,
            seed: int) -> dict[str, Estimate]:
    """What a person would see, per victim, with intervals over victims:

    - ``sharpness``: the reconstructions' fine detail relative to the victims' real aligned photos (the
      stolen templates' sources): sum of the variance of the Laplacian over the reconstructions / the same
      over the photos (:func:`facepii.metrics.sharpness`; 1 = as much detail as a photo);
    - ``face_found``: the share a face detector (YuNet) finds a face in; ``detector_score``: its mean score
      (0 where it finds none);
    - ``nearest_real``: the judge's score between the reconstruction and the nearest real photo of ANOTHER
      person (the other victims' gallery): how close it lies to real faces in the judge's feature space,
      apart from whether it is the victim (the judge's own units: cosine, or minus the L2 distance)."""
    det = face_scores(faces)
    emb = judge.embed(faces)
    S = np.asarray(judge.score(emb, judge.gallery), np.float64)
    S[np.asarray(victims)[:, None] == judge.gallery_labels[None, :]] = -np.inf
    nearest = S.max(axis=1)
    return {"sharpness": metrics.bootstrap_ratio(metrics.sharpness(faces), metrics.sharpness(sources), n_boot, seed),
            "face_found": metrics.rate_mean((det > 0).astype(float)),
            "detector_score": metrics.bootstrap_mean(det, n_boot, seed),
            "nearest_real": metrics.bootstrap_mean(nearest[np.isfinite(nearest)], n_boot, seed)}


def judge_faces(judges: dict[str, Judge], faces: np.ndarray, victims: np.ndarray, sources: np.ndarray,
                n_boot: int, seed: int) -> AttackFigures:
    """One attack's figures: the independent judges', the target's as judge, SSIM to the source, and what a
    person would see (:func:`realism`)."""
    scores = {}
    head, scores[judges["judge"].encoder.name] = judges["judge"].judge_scores(faces, victims, n_boot, seed)
    ssim = metrics.bootstrap_mean(metrics.ssim(faces, sources), n_boot, seed)
    looks = realism(judges["judge"], faces, victims, sources, n_boot, seed)
    target, scores[judges["target"].encoder.name] = judges["target"].judge_scores(faces, victims, n_boot, seed)
    roles = independent(judges)
    every = None
    if len(roles) > 1:
        every = {judges["judge"].encoder.name: head}
        for r in roles[1:]:
            every[judges[r].encoder.name], scores[judges[r].encoder.name] = judges[r].judge_scores(
                faces, victims, n_boot, seed)
    return AttackFigures(head, ssim, target, every, scores, looks)


def privacy_block(judges: dict[str, Judge], per_attack: dict[str, AttackFigures], key: str | None) -> PrivacyEstimates:
    """A row's privacy figures (the worst attack, each judge's worst and the worst judge follow from them)."""
    return PrivacyEstimates(judges["judge"].encoder.name, per_attack, key)


def baseline_faces(aux_faces: np.ndarray, n: int, seed: int) -> dict[str, np.ndarray]:
    """The empirical floors' "reconstructions": a random auxiliary face per victim, and the mean face."""
    rng = np.random.default_rng(seed + 99)
    rand = aux_faces[rng.choice(len(aux_faces), size=n, replace=True)]
    mean = np.repeat(aux_faces.mean(axis=0).round().astype(np.uint8)[None], n, axis=0)
    return {"random_face": rand, "mean_face": mean}


def judge_baselines(judges: dict[str, Judge], faces: dict[str, np.ndarray], victims: np.ndarray, n_boot: int,
                    seed: int) -> dict:
    """:func:`baseline_faces` through the headline judge and the target."""
    return {name: {j: judges[j].judge(f, victims, n_boot, seed).to_dict() for j in ("judge", "target")}
            for name, f in faces.items()}
