"""``--attacker-data SPEC``: the attacker's own photos instead of the evaluated dataset's auxiliary split.

By default the attacker trains on the identities of ``--dataset`` that are not victims. A vendor with a
few dozen people of its own tests against a stronger attacker by naming a public set of photos (a full
CelebA or an LFW folder): the attacks train on those, and every identity of ``--dataset`` with enough
photos may be a victim. The attacker's photos never enter utility, the split or the judges' galleries.

No victim may be in the attacker's photos (the protocol attacks people the attacker has never seen): a
photo whose content hash is a victim's, and every photo of an attacker identity whose mean unit SFace
embedding lies at a cosine of ``SAME_PERSON`` or more from a victim's, are set aside and counted in the
report (a public set often holds the vendor's people: CelebA's folder holds the shared subset's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attacks.prior import SAME_PERSON, identity_centroids
from facepii import progress
from facepii.cache import Cache
from facepii.config import EvaluateConfig
from facepii.datasets import load_dataset
from facepii.encoders import Encoder, get_encoder
from facepii.errors import ParameterError
from facepii.stages import EmbeddedSet, Split, embed

#: the seed offset of the --max-aux sample of the attacker's identities (the same as the auxiliary split's)
AUX_SAMPLE = 4242


@dataclass
class AttackerPhotos:
    """The attacker's photos, embedded by the target: ``photos`` and the positions in it the attacks use."""

    photos: EmbeddedSet
    pos: np.ndarray
    block: dict      # the report's description: spec, counts, what was set aside

    @property
    def n_identities(self) -> int:
        return int(len(np.unique(self.photos.labels[self.pos])))


def _sface(target: Encoder) -> Encoder:
    """SFace for the identity check: the target itself when it is SFace uncentred, else SFace."""
    if target.name == "sface" and not getattr(target, "center", False):
        return target
    return get_encoder("sface")


def victim_centroids(embedded: EmbeddedSet, split: Split, target: Encoder) -> np.ndarray:
    """Each victim's mean unit SFace embedding (the attacker's identities and a prior's are compared with
    these)."""
    pos = split.victim_pos
    sface = _sface(target)
    E = embedded.embeddings["target"][pos] if sface is target else sface.embed(embedded.aligned(pos))
    return identity_centroids(E, embedded.labels[pos])


def load_attacker_photos(cfg: EvaluateConfig, target: Encoder, embedded: EmbeddedSet, split: Split, cache: Cache,
                         executor=None, centroids: np.ndarray | None = None) -> AttackerPhotos:
    """Read, align and embed (with the target, and SFace for the identity check) the photos of
    ``--attacker-data``; set aside the victims' photos and people; sample ``--max-aux`` identities."""
    spec = cfg.privacy.attacker_data
    fs = load_dataset(spec)
    if fs.kind == "embeddings":
        raise ParameterError(f"--attacker-data {spec}: the attacks learn from photos (their faces and the target's "
                             "embeddings of them); an embeddings file holds no photos.")
    listed = len(fs)
    sub = EvaluateConfig.from_options(where="--attacker-data", dataset=spec, min_images=1, seed=cfg.seed)
    sface = _sface(target)
    encoders = {"target": target}
    if sface is not target:
        encoders["sface"] = sface
    with progress.stage(f"the attacker's photos ({spec})"):
        photos = embed(sub, fs, encoders, cache, executor, fixed_centre=True)
    n_used = len(photos.labels)
    victim_keys = {embedded.keys[int(i)] for i in split.victim_pos}
    same_photo = np.array([k in victim_keys for k in photos.keys], bool)
    if centroids is None:
        centroids = victim_centroids(embedded, split, target)
    labels = photos.labels
    ids = np.unique(labels)
    mine = identity_centroids(photos.embeddings["sface" if "sface" in encoders else "target"], labels)
    S = np.asarray(mine, np.float64) @ np.asarray(centroids, np.float64).T
    same_people = ids[S.max(axis=1) >= SAME_PERSON] if S.size else ids[:0]
    aside = same_photo | np.isin(labels, same_people)
    keep = np.flatnonzero(~aside)
    keep_ids = np.unique(labels[keep])
    available = len(keep_ids)
    m = cfg.privacy.max_aux
    if available > m:
        chosen = np.random.default_rng(cfg.seed + AUX_SAMPLE).choice(keep_ids, size=m, replace=False)
        keep = keep[np.isin(labels[keep], chosen)]
    n_ids = int(len(np.unique(labels[keep])))
    if n_ids < 2:
        raise ParameterError(f"--attacker-data {spec}: {n_ids} identit{'y' if n_ids == 1 else 'ies'} left once the "
                             f"victims' photos ({int(same_photo.sum())}) and people ({len(same_people)}) are set "
                             "aside; the attacks need photos of at least 2 other people.")
    block = {"spec": spec, "source": fs.source, "kind": fs.kind, "photos_listed": listed, "photos_usable": n_used,
             "identities_usable": int(len(ids)), "victim_photos_set_aside": int(same_photo.sum()),
             "victim_identities_set_aside": int(len(same_people)),
             "photos_set_aside": int(aside.sum()), "identities_available": int(available),
             "identities": n_ids, "photos": int(len(keep)), "skipped": len(photos.dataset.get("skipped") or [])}
    if aside.any():
        progress.note(f"--attacker-data: {int(aside.sum())} photos set aside ({int(same_photo.sum())} are victims' "
                      f"photos, {len(same_people)} identities look like victims)")
    return AttackerPhotos(photos, keep, block)
