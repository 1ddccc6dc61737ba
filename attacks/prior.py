"""The attacker's face prior: what faces look like, learned once from photos and reused by every attack.

A prior depends on photos only (the attacker's own public set, or the auxiliary split), never on the
target model, so one prior serves every target, row and later run (``facepii prior train``, then
``facepii evaluate --prior FILE``; by default ``evaluate`` trains one on its auxiliary split and
caches it). Two kinds:

- ``eigenfaces`` (evaluate's default): the mean face and the first principal components of the aligned faces (a linear
  face space). Attacks that stay in it keep faces face-like, but a held-out face projected on it
  keeps a tenth of a photo's fine detail: reconstructions look like blurred composites.
- ``detail`` (the default of ``facepii prior train``; ``evaluate --prior detail``): the same face
  space for the coarse face, which the attacks move, plus
  example-based detail (face hallucination, Baker & Kanade, "Hallucinating faces", 2000; Freeman et
  al., "Example-based super-resolution", 2002). The training faces are split into a low band (a
  Gaussian blur) and a high band (the rest); at each position of an overlapping grid of patches of
  the aligned face, the reconstruction's low band picks the training face whose low band there is
  nearest, and that face's high band at that position is blended in (Hann-windowed). Faces are
  aligned, so a patch is compared only with the same patch of other faces: the detail follows the
  reconstruction's own structure (its eyes, brows, hairline) rather than pasting one stranger's face.
  The attacks refine the coarse face with the detail held fixed, so the target model sees the face
  as it is shown.

It is not evaluate's default: on README's job it gave 4x the sharpness (0.43 of a photo's, against
0.10) with matchers' figures within a victim or two of the eigenface prior's, higher on some rows and
lower on others (dlib's rank-1 at noise sigma 0.05: 0.64 against 0.68), and a default that lowers a
leakage figure on any row would underestimate leakage there (docs/results.md).

Tried and measured before choosing (docs/results.md): a convolutional detail network trained on CPU
with pixel, Laplacian and adversarial losses reached 0.11 of a photo's sharpness in 300 steps
(6 minutes); the whole high band of the single nearest face (0.44) pasted its owner's identity
(dlib's rank-1 of projected faces 0.62 -> 0.44); the per-patch high band gave 0.35 with dlib's
rank-1 unchanged.

A prior file is safetensors (tensors and strings only: nothing in it can execute code) with a
manifest: the content hashes of its photos (so a prior trained on a victim's photo is refused),
the number of identities, its settings, facepii's version. It holds aligned faces of its training
photos (the donors of detail): personal data, like the embedding cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from attacks.facespace import FaceSpace, canonical_header
from facepii import __version__

PRIOR_FORMAT = "facepii-prior/v1"
KINDS = ("detail", "eigenfaces")
SIDE = 112
#: SFace cosine between two identities' mean embeddings above which they are taken for one person. Measured on
#: the shared CelebA subset (each identity's photos split in two halves): different people's means reached 0.575
#: at the 99.99th percentile (0.75 at most, for one identity listed twice in CelebA), one person's two halves
#: were above 0.52 for 95% of the identities
SAME_PERSON = 0.6


@dataclass(frozen=True)
class PriorSettings:
    """How a prior is built: face-space size, detail donors, the patch grid and the band split."""

    kind: str = "detail"
    components: int = 400     # face-space dimensions
    donors: int = 3000        # training faces kept as donors of detail (a seeded sample beyond)
    patch: int = 12           # patch side (px)
    stride: int = 6           # grid step (px)
    sigma: float = 1.5        # Gaussian blur that splits the low band from the high band (px)
    amount: float = 1.0       # how much of the matched high band is added


#: by attack budget (--budget): the face space's size as before; detail donors as the budget allows
PRIOR_BUDGETS = {"quick": PriorSettings(components=300, donors=1500),
                 "standard": PriorSettings(components=400, donors=3000),
                 "thorough": PriorSettings(components=600, donors=6000)}


def identity_centroids(E: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each identity's mean unit embedding, back on the unit sphere (identities in sorted order)."""
    U = np.asarray(E, np.float64)
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    C = np.stack([U[labels == i].mean(axis=0) for i in np.unique(labels)])
    return (C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _bands(x: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(low band, high band) of N x H x W x 3 images in [0, 255] (float32)."""
    import cv2

    x = np.asarray(x, np.float32)
    lo = np.stack([cv2.GaussianBlur(np.ascontiguousarray(f), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
                   for f in x]) if len(x) else x.copy()
    return lo, x - lo


class FacePrior:
    """A face space and, for the ``detail`` kind, the donors of detail (see the module docstring)."""

    def __init__(self, space: FaceSpace, settings: PriorSettings, donors: np.ndarray | None, manifest: dict,
                 centroids: np.ndarray | None = None):
        self.space = space
        self.settings = settings
        self.donors = donors            # N x 112 x 112 x 3 uint8 (detail kind) or None
        self.manifest = manifest
        #: its identities' mean unit SFace embeddings (a prior file only): a victim among them is refused
        self.centroids = centroids
        self._index = None
        self._digest = None

    @property
    def kind(self) -> str:
        return self.settings.kind

    # ---------------------------------------------------------------- training

    @classmethod
    def train(cls, faces: np.ndarray, keys: list[str], labels: np.ndarray, settings: PriorSettings, seed: int = 0,
              source: str = "") -> FacePrior:
        """The prior of aligned ``faces`` (uint8, with their photos' content hashes ``keys`` and identity
        labels): the face space of the faces and their mirror images; with ``detail``, a seeded sample of
        ``settings.donors`` of them (mirrors included) as donors."""
        faces = np.asarray(faces, np.uint8)
        both = np.concatenate([faces, np.ascontiguousarray(faces[:, :, ::-1])])
        space = FaceSpace.fit(both, settings.components, seed)
        donors = None
        if settings.kind == "detail":
            rng = np.random.default_rng(seed + 31)
            pick = np.sort(rng.choice(len(both), size=min(settings.donors, len(both)), replace=False))
            donors = np.ascontiguousarray(both[pick])
        manifest = {"format": PRIOR_FORMAT, "source": source, "photos": len(faces),
                    "identities": int(len(np.unique(labels))), "photo_keys": sorted(set(map(str, keys))),
                    "settings": asdict(settings), "seed": seed}
        manifest["facepii"] = __version__
        return cls(space, settings, donors, manifest)

    # ---------------------------------------------------------------- detail

    def _positions(self) -> list[tuple[int, int]]:
        p, s = self.settings.patch, self.settings.stride
        starts = list(range(0, SIDE - p + 1, s))
        if starts[-1] != SIDE - p:
            starts.append(SIDE - p)
        return [(i, j) for i in starts for j in starts]

    def _features(self, lo: np.ndarray, i: int, j: int) -> np.ndarray:
        """A patch's low band, pooled to 4 x 4 x 3 (float64 sums: the same on every CPU)."""
        p = self.settings.patch
        q = lo[:, i:i + p, j:j + p].astype(np.float64)
        return q.reshape(len(q), 4, p // 4, 4, p // 4, 3).mean(axis=(2, 4)).reshape(len(q), -1)

    def _build_index(self):
        """Per grid position the donors' pooled low bands (float32 to hold, float64 to compare) and their high
        bands (float16: detail to a 16th of a grey level; about 0.4 GB for 3000 donors in all)."""
        lo, hi = _bands(self.donors, self.settings.sigma)
        feats = [self._features(lo, i, j).astype(np.float32) for i, j in self._positions()]
        self._index = (feats, hi.astype(np.float16))

    def detail(self, faces01: np.ndarray) -> np.ndarray:
        """The high band to add to faces (N x 3 x H x W in [0, 1], the attacks' layout), in [0, 1] units:
        zero for ``eigenfaces``; for ``detail`` the donors' matched high bands, blended over the grid."""
        x = np.asarray(faces01, np.float32)
        if self.kind != "detail" or self.donors is None or not len(x):
            return np.zeros_like(x)
        if self._index is None:
            self._build_index()
        feats, hi = self._index
        img = np.clip(x.transpose(0, 2, 3, 1) * 255.0, 0, 255)
        lo, _ = _bands(img, self.settings.sigma)
        p = self.settings.patch
        w1 = np.hanning(p + 2)[1:-1]
        win = (w1[:, None] * w1[None, :])[..., None].astype(np.float32)
        acc = np.zeros_like(lo)
        wsum = np.zeros(lo.shape[:3] + (1,), np.float32)
        for (i, j), F32 in zip(self._positions(), feats):
            q = self._features(lo, i, j)
            F = F32.astype(np.float64)
            dist = (F * F).sum(1)[None, :] - 2.0 * (q @ F.T)  # + |q|^2, the same for every donor
            best = np.argmin(dist, axis=1)
            acc[:, i:i + p, j:j + p] += hi[best, i:i + p, j:j + p].astype(np.float32) * win
            wsum[:, i:i + p, j:j + p] += win
        band = self.settings.amount * acc / np.maximum(wsum, 1e-6) / 255.0
        return np.ascontiguousarray(band.transpose(0, 3, 1, 2), np.float32)

    # ---------------------------------------------------------------- files

    def digest(self) -> str:
        """SHA-256 of what the prior's faces depend on (its face space, donors, settings and photos; not the
        identities' embeddings kept for the victims check)."""
        if self._digest is None:
            self._digest = hashlib.sha256(self.to_bytes(with_identities=False)).hexdigest()
        return self._digest

    def to_bytes(self, with_identities: bool = True) -> bytes:
        from safetensors.numpy import save

        arrays = {"space.mean": self.space.mean, "space.components": self.space.components,
                  "space.scale": self.space.scale}
        if self.donors is not None:
            arrays["donors"] = self.donors
        if self.centroids is not None and with_identities:
            arrays["identities.sface"] = np.ascontiguousarray(self.centroids, np.float32)
        meta = {"format": PRIOR_FORMAT, "manifest": json.dumps(self.manifest, sort_keys=True)}
        return canonical_header(save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta))

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "prior") -> FacePrior:
        """A prior from :meth:`to_bytes`' data; anything malformed raises ValueError with the reason."""
        import struct

        from safetensors.numpy import load

        try:
            n = struct.unpack("<Q", data[:8])[0]
            if not 0 < n <= 64 << 20:
                raise ValueError("header size")
            meta = json.loads(data[8:8 + n]).get("__metadata__") or {}
            arrays = load(data)
        except Exception as exc:  # the library's own errors for a corrupt or foreign file
            raise ValueError(f"{where}: not a safetensors file ({type(exc).__name__})") from None
        if meta.get("format") != PRIOR_FORMAT:
            raise ValueError(f"{where}: not a facepii prior ({PRIOR_FORMAT}); make one with `facepii prior train`")
        D = SIDE * SIDE * 3
        mean, comp, scale = (arrays.get(f"space.{k}") for k in ("mean", "components", "scale"))
        if (mean is None or comp is None or scale is None or mean.shape != (D,) or comp.ndim != 2
                or comp.shape[1] != D or scale.shape != (comp.shape[0],) or not 1 <= comp.shape[0] <= 4096):
            raise ValueError(f"{where}: face space of the wrong shape")
        if not all(np.isfinite(a).all() for a in (mean, comp, scale)):
            raise ValueError(f"{where}: non-finite values")
        prior = cls.from_parts(FaceSpace(mean, comp, scale), meta.get("manifest"), arrays.get("donors"), where)
        c = arrays.get("identities.sface")
        if c is not None:
            if c.ndim != 2 or c.shape[1] != 128 or not 1 <= len(c) <= 1_000_000 or not np.isfinite(c).all():
                raise ValueError(f"{where}: its identities' embeddings are of the wrong shape")
            prior.centroids = c.astype(np.float32)
        return prior

    @classmethod
    def from_parts(cls, space: FaceSpace, manifest_text, donors, where: str = "prior") -> FacePrior:
        """A prior from a checked face space, its manifest (JSON text) and its donors; ValueError if malformed."""
        try:
            manifest = json.loads(manifest_text or "")
            s = manifest["settings"]
            settings = PriorSettings(kind=str(s["kind"]), components=int(s["components"]), donors=int(s["donors"]),
                                     patch=int(s["patch"]), stride=int(s["stride"]), sigma=float(s["sigma"]),
                                     amount=float(s["amount"]))
            keys = manifest["photo_keys"]
            if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
                raise TypeError("photo_keys")
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{where}: its manifest is malformed ({type(exc).__name__}: {exc})") from None
        if settings.kind not in KINDS or not (4 <= settings.patch <= 56 and settings.patch % 4 == 0
                                              and 1 <= settings.stride <= settings.patch
                                              and 0.3 <= settings.sigma <= 10 and 0 <= settings.amount <= 2):
            raise ValueError(f"{where}: settings out of range ({settings})")
        if settings.kind == "detail":
            if donors is None or donors.dtype != np.uint8 or donors.ndim != 4 or donors.shape[1:] != (SIDE, SIDE, 3) \
                    or not 1 <= len(donors) <= 100_000:
                raise ValueError(f"{where}: its donors of detail are missing or of the wrong shape")
        elif donors is not None:
            raise ValueError(f"{where}: an eigenfaces prior with donors")
        return cls(space, settings, donors, manifest)

    def same_people(self, victim_centroids: np.ndarray, threshold: float = SAME_PERSON) -> np.ndarray:
        """For each victim (its mean unit SFace embedding), whether one of the prior's identities is that
        person: a cosine of ``threshold`` or more between the two means (none without stored identities)."""
        if self.centroids is None or not len(victim_centroids):
            return np.zeros(len(victim_centroids), bool)
        S = np.asarray(victim_centroids, np.float64) @ np.asarray(self.centroids, np.float64).T
        return S.max(axis=1) >= threshold

    def overlap(self, keys: list[str]) -> int:
        """How many of these photos (content hashes) the prior was trained on."""
        mine = set(self.manifest.get("photo_keys") or [])
        return sum(k in mine for k in keys)

    def describe(self) -> dict:
        """The report's description of the prior (no photo keys)."""
        m = self.manifest
        return {"kind": self.kind, "source": m.get("source"), "photos": m.get("photos"),
                "identities": m.get("identities"), "settings": m.get("settings"), "facepii": m.get("facepii")}
