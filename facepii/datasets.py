"""Identity-labelled face sets.

A dataset spec names where faces come from:

- ``celeba:PATH``  CelebA's layout: ``identity_CelebA.txt`` + ``img_celeba/`` or
  ``img_align_celeba/``;
- ``folder:PATH``  one sub-folder per identity (LFW's layout);
- ``lfw`` / ``lfw:DATA_HOME``  LFW (funneled) through scikit-learn's
  ``fetch_lfw_people`` cache, downloaded once where the network allows;
- ``embeddings:FILE.npz``  precomputed embeddings (``embeddings`` N x d,
  ``labels`` N, optional ``paths``) for vendors who cannot share photos.

Every loader returns a :class:`FaceSet`; :func:`select` then takes the seeded
subset of identities with enough images. Whatever is left out (an identity
with too few images, a file that is not an image) is recorded in
``FaceSet.excluded``, never dropped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from facepii.encoder_base import embedding_problem
from facepii.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DEFAULT_SPEC = "lfw"
ENV_VAR = "FACEPII_DATASET"


@dataclass
class FaceSet:
    """Face images (paths or arrays) or precomputed embeddings, with identity labels.

    Exactly one of ``paths``, ``images`` and ``embeddings`` is set. ``images``
    are RGB uint8 arrays (N x H x W x 3, unaligned photos); ``embeddings`` are
    float32 (N x d) from an encoder named in ``meta``.
    """

    labels: np.ndarray
    source: str
    paths: list[str] | None = None
    images: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    excluded: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels).astype(str)
        n_sources = sum(x is not None for x in (self.paths, self.images, self.embeddings))
        if n_sources != 1:
            raise ValueError("a FaceSet holds exactly one of paths, images, embeddings")
        if len(self) != len(self.labels):
            raise DatasetError(
                f"{self.source}: {len(self)} items but {len(self.labels)} labels; "
                "give one identity label per item."
            )

    def __len__(self) -> int:
        for x in (self.paths, self.images, self.embeddings):
            if x is not None:
                return len(x)
        return 0

    @property
    def kind(self) -> str:
        return "paths" if self.paths is not None else (
            "images" if self.images is not None else "embeddings")

    @property
    def n_identities(self) -> int:
        return int(len(np.unique(self.labels)))

    def item_name(self, i: int) -> str:
        """A human-readable name of item ``i`` for reports (its path, or its index)."""
        if self.paths is not None:
            return self.paths[i]
        names = self.meta.get("paths")
        if names is not None:
            return str(names[i])
        return f"{self.source}#{i}"

    def subset(self, idx: np.ndarray | list[int]) -> FaceSet:
        idx = np.asarray(idx, dtype=int)
        meta = dict(self.meta)
        if meta.get("paths") is not None:
            meta["paths"] = [meta["paths"][i] for i in idx]
        return replace(
            self,
            labels=self.labels[idx],
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            images=self.images[idx] if self.images is not None else None,
            embeddings=self.embeddings[idx] if self.embeddings is not None else None,
            excluded=list(self.excluded),
            meta=meta,
        )


# ---------------------------------------------------------------- loaders


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8.") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror or exc}).") from None


def _inside(root: Path, p: Path) -> str | None:
    """None when ``p`` is a plain file inside ``root`` (links resolved), else the reason it is not."""
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError):
        return "symbolic link loop or broken link" if p.is_symlink() else "cannot be resolved"
    if root not in real.parents:
        return "outside the dataset folder (a symbolic link or path leading out of it)"
    if not real.is_file():
        return "not a regular file (a folder, pipe or device)"
    return None


def load_celeba(path: str | os.PathLike) -> FaceSet:
    """CelebA's own layout: ``identity_CelebA.txt`` and ``img_celeba/`` (or ``img_align_celeba/``).

    Only files inside the image folder are read: a listed name with a path part, a link out of the
    folder, a photo listed twice or under two identities is excluded with its reason, and so is every
    file of the image folder that the list does not name."""
    root = _existing_dir(path, "celeba")
    ident = root / "identity_CelebA.txt"
    if not ident.is_file():
        raise DatasetError(
            f"celeba:{root}: no identity_CelebA.txt there; point celeba: at the folder that "
            "holds identity_CelebA.txt and img_celeba/ (or use folder:PATH for one folder per person)."
        )
    img_dir = next((root / d for d in ("img_celeba", "img_align_celeba") if (root / d).is_dir()), None)
    if img_dir is None:
        raise DatasetError(f"celeba:{root}: neither img_celeba/ nor img_align_celeba/ is there.")
    real_dir = img_dir.resolve()
    listed: dict[str, list[str]] = {}
    excluded = []
    for lineno, line in enumerate(_read_text(ident, "identity list").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DatasetError(f"{ident}:{lineno}: expected '<file> <identity>', got {line!r}.")
        name, label = parts
        if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
            excluded.append({"path": name, "reason": f"{ident.name}:{lineno} names a path, not a file of "
                                                     f"{img_dir.name}/ (only files inside it are read)"})
            continue
        listed.setdefault(name, []).append(label)
    paths, labels = [], []
    for name, labs in listed.items():
        p = img_dir / name
        if len(set(labs)) > 1:
            excluded.append({"path": str(p), "reason": f"listed under {len(set(labs))} identities "
                                                       f"({', '.join(sorted(set(labs)))}); used for none"})
            continue
        if len(labs) > 1:
            excluded.append({"path": str(p), "reason": f"listed {len(labs)} times; used once"})
        if not p.exists() and not p.is_symlink():
            excluded.append({"path": str(p), "reason": "listed in identity_CelebA.txt but missing"})
            continue
        why = _inside(real_dir, p)
        if why:
            excluded.append({"path": str(p), "reason": why})
            continue
        paths.append(str(p))
        labels.append(labs[0])
    for f in sorted(img_dir.iterdir()):
        if f.name not in listed:
            excluded.append({"path": str(f), "reason": "in the image folder but not in identity_CelebA.txt"})
    if not paths:
        raise DatasetError(f"celeba:{root}: no image listed in identity_CelebA.txt exists in {img_dir}.")
    return FaceSet(labels=np.array(labels), paths=paths, source=f"celeba:{root}", excluded=excluded)


def load_folder(path: str | os.PathLike, spec_prefix: str = "folder") -> FaceSet:
    """One sub-folder per identity, images inside (LFW's layout).

    Every entry under the root is used or excluded with its reason: photos loose in the root or in
    nested folders, hidden files, files that are not images, links leading out of the folder or in
    loops, pipes and devices."""
    root = _existing_dir(path, spec_prefix)
    real_root = root.resolve()
    paths, labels, excluded = [], [], []

    def skip(p: Path, reason: str) -> None:
        excluded.append({"path": str(p), "reason": reason})

    def walk_extra(d: Path, reason: str) -> None:
        """Everything below a folder that is not read, listed with one reason."""
        try:
            entries = sorted(d.iterdir())
        except OSError as exc:
            skip(d, f"folder cannot be listed ({exc.strerror or exc})")
            return
        for e in entries:
            if e.is_dir() and not e.is_symlink():
                walk_extra(e, reason)
            else:
                skip(e, reason)

    for d in sorted(root.iterdir()):
        if d.name.startswith("."):
            skip(d, "hidden entry in the dataset root")
            continue
        if d.is_dir() and not d.is_symlink() and is_facepii_output(d):
            walk_extra(d, "facepii's own output (a report folder), never a person's photos")
            continue
        if d.is_symlink() or not d.is_dir():
            why = _inside(real_root, d) if d.is_symlink() else None
            if d.is_symlink() and why is None and d.resolve().is_dir():
                why = "a linked folder (identity folders must be real folders)"
            if why:
                skip(d, why)
            elif d.is_file() and d.suffix.lower() in IMAGE_SUFFIXES:
                skip(d, "photo directly in the dataset root: put it in a sub-folder named after the person")
            else:
                skip(d, "not a person's sub-folder")
            continue
        for f in sorted(d.iterdir()):
            if f.name.startswith("."):
                skip(f, "hidden file")
            elif f.is_dir() and not f.is_symlink():
                walk_extra(f, "in a nested folder (only one level of person folders is read)")
            elif f.suffix.lower() not in IMAGE_SUFFIXES:
                skip(f, f"not an image file ({f.suffix or 'no suffix'})")
            elif why := _inside(real_root, f):
                skip(f, why)
            else:
                paths.append(str(f))
                labels.append(d.name)
    if not paths:
        loose = [f for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        hint = (" It holds images directly: put each person's images in a sub-folder named after them."
                if loose else "")
        raise DatasetError(f"{spec_prefix}:{root}: no images in per-identity sub-folders.{hint}")
    return FaceSet(labels=np.array(labels), paths=paths, source=f"{spec_prefix}:{root}", excluded=excluded)


def is_facepii_output(d: Path) -> bool:
    """A folder facepii wrote (--out): its report.json or lineup manifest says so."""
    for marker in ("report.json", "lineup/manifest.json"):
        f = d / marker
        try:
            if f.is_file() and not f.is_symlink() and f.stat().st_size < (64 << 20):
                head = f.read_bytes()[:4096].decode("utf-8", "replace")
                if '"facepii.report/' in head or '"facepii.lineup-material/' in head:
                    return True
        except OSError:
            continue
    return False


def dataset_root(spec: str | None) -> Path | None:
    """The photo folder a dataset spec reads from, or None (lfw, or an embeddings file: a run reads that
    one file, so an output folder beside it is never taken for data)."""
    kind, _, arg = (spec or "").partition(":")
    if kind not in ("folder", "celeba") or not arg:
        return None
    return Path(arg).expanduser().resolve()


EMBEDDING_MEMBERS = ("embeddings", "labels", "paths", "encoder", "comparator")


def load_embeddings(path: str | os.PathLike) -> FaceSet:
    """Precomputed embeddings: an ``.npz`` with ``embeddings`` (N x d), ``labels`` (N), optional ``paths``.

    Only those members are read (a large unrelated member is never decompressed); values must be real,
    finite in float32, and informative (no all-zero row; not every row the same)."""
    import zipfile

    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"embeddings:{p}: no such file.")
    if not zipfile.is_zipfile(p):
        raise DatasetError(f"embeddings:{p}: not a readable .npz file (not a zip archive written by numpy.savez).")
    data = {}
    try:
        with np.load(p, allow_pickle=False) as z:
            for k in EMBEDDING_MEMBERS:
                if k in z.files:
                    data[k] = z[k]
    except Exception as exc:
        msg = "holds Python objects (pickled), which facepii never reads" if "pickle" in str(exc) else str(exc)
        raise DatasetError(f"embeddings:{p}: not a readable .npz file ({msg}).") from None
    for key in ("embeddings", "labels"):
        if key not in data:
            raise DatasetError(
                f"embeddings:{p}: the array '{key}' is missing; it needs 'embeddings' (N x d) and "
                f"'labels' (N).")
    emb, labels = data["embeddings"], data["labels"]
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise DatasetError(f"embeddings:{p}: 'embeddings' must be N x d, got shape {emb.shape}.")
    if np.iscomplexobj(emb) or not (np.issubdtype(emb.dtype, np.floating) or np.issubdtype(emb.dtype, np.integer)):
        raise DatasetError(f"embeddings:{p}: 'embeddings' must be real numbers, got {emb.dtype}.")
    if labels.ndim != 1 or len(labels) != len(emb) or labels.dtype.kind not in "iuU":
        raise DatasetError(
            f"embeddings:{p}: 'labels' must have one entry per row of 'embeddings' ({len(emb)}), each an "
            f"integer or text, got {labels.dtype} of shape {labels.shape}.")
    with np.errstate(over="ignore", invalid="ignore"):
        emb = emb.astype(np.float32)
    why = embedding_problem(emb)
    if why:
        raise DatasetError(f"embeddings:{p}: {why}; remove or recompute them.")
    meta: dict = {"encoder": str(data["encoder"]) if "encoder" in data else None,
                  "comparator": str(data["comparator"]) if "comparator" in data else None}
    if "paths" in data:
        if data["paths"].ndim != 1 or len(data["paths"]) != len(emb):
            raise DatasetError(f"embeddings:{p}: 'paths' has {len(data['paths'])} entries, expected {len(emb)}.")
        meta["paths"] = [str(x) for x in data["paths"]]
    return FaceSet(labels=labels.astype(str), embeddings=emb, source=f"embeddings:{p}", meta=meta)


def load_lfw(data_home: str | os.PathLike | None = None, download: bool = True) -> FaceSet:
    """LFW (funneled) via scikit-learn's cache; downloads once where the network allows."""
    from sklearn.datasets import get_data_home

    try:
        home = Path(get_data_home(data_home)).expanduser()
    except OSError as exc:
        raise DatasetError(f"lfw:{data_home}: cannot use that data folder ({exc.strerror or exc}); "
                           "pass a writable folder or a local copy with folder:PATH.") from None
    folder = home / "lfw_home" / "lfw_funneled"
    if not folder.is_dir():
        if not download:
            raise DatasetError(f"lfw: not cached under {home}; pass a local copy with --dataset folder:PATH.")
        try:
            from sklearn.datasets import fetch_lfw_people

            fetch_lfw_people(data_home=str(home), min_faces_per_person=2, resize=0.1,
                             download_if_missing=True, n_retries=1, delay=0.5)
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DatasetError(
                f"lfw: not cached under {home} and the download failed ({msg}); offline, pass a local "
                f"copy: --dataset folder:PATH (one folder per person) or lfw:DATA_HOME, or set {ENV_VAR}."
            ) from None
        if not folder.is_dir():
            raise DatasetError(f"lfw: scikit-learn did not leave {folder}; pass --dataset folder:PATH.")
    fs = load_folder(folder, spec_prefix="lfw")
    fs.source = f"lfw:{home}"
    return fs


LOADERS = {
    "celeba": ("CelebA layout: identity_CelebA.txt + img_celeba/ (celeba:PATH)", load_celeba),
    "folder": ("one sub-folder of images per identity, LFW's layout (folder:PATH)", load_folder),
    "lfw": ("LFW funneled via scikit-learn's cache, fetched once (lfw or lfw:DATA_HOME)", load_lfw),
    "embeddings": ("precomputed embeddings .npz: embeddings, labels[, paths] (embeddings:FILE)",
                   load_embeddings),
}


def default_spec() -> str:
    """The dataset used when none is given: ``$FACEPII_DATASET`` or ``lfw``."""
    return os.environ.get(ENV_VAR) or DEFAULT_SPEC


def load_dataset(spec: str | None = None) -> FaceSet:
    """Load a dataset from its spec (``kind:ARG``); see the module docstring."""
    spec = spec or default_spec()
    kind, _, arg = spec.partition(":")
    if kind not in LOADERS:
        if Path(spec).expanduser().is_dir():
            hint = f" For a folder, write folder:{spec} or celeba:{spec}."
        elif spec.endswith(".npz"):
            hint = f" For embeddings, write embeddings:{spec}."
        else:
            hint = ""
        raise DatasetError(
            f"unknown dataset spec '{spec}': use one of {', '.join(k + ':...' for k in LOADERS)}.{hint}")
    loader = LOADERS[kind][1]
    if kind == "lfw":
        return loader(arg or None)
    if not arg:
        raise DatasetError(f"dataset spec '{spec}' needs a path: {kind}:PATH.")
    return loader(arg)


def select(fs: FaceSet, min_images: int = 2, max_identities: int | None = None,
           seed: int = 0) -> FaceSet:
    """Keep identities with at least ``min_images`` items, then a seeded sample of them.

    Identities left out for having too few images are recorded in ``excluded``.
    """
    if min_images < 1:
        raise DatasetError(f"--min-images must be >= 1, got {min_images}.")
    if max_identities is not None and max_identities < 1:
        raise DatasetError(f"--max-identities must be >= 1, got {max_identities}.")
    ids, counts = np.unique(fs.labels, return_counts=True)
    keep = ids[counts >= min_images]
    excluded = list(fs.excluded)
    for ident, c in zip(ids, counts):
        if c < min_images:
            for i in np.flatnonzero(fs.labels == ident):
                excluded.append({"path": fs.item_name(i),
                                 "reason": f"identity {ident} has {c} image(s), fewer than --min-images {min_images}"})
    if len(keep) == 0:
        raise DatasetError(
            f"{fs.source}: no identity has {min_images} or more images ({len(ids)} identities, "
            f"most images per identity: {counts.max() if len(counts) else 0}); lower --min-images.")
    if max_identities is not None and max_identities < len(keep):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(keep, size=max_identities, replace=False))
    mask = np.isin(fs.labels, keep)
    out = fs.subset(np.flatnonzero(mask))
    out.excluded = excluded
    out.meta = dict(out.meta, n_identities_available=int(len(ids)))
    return out


def _existing_dir(path: str | os.PathLike, prefix: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"{prefix}:{p}: no such folder.")
    if not p.is_dir():
        raise DatasetError(f"{prefix}:{p}: not a folder.")
    return p
