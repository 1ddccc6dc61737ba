"""Shared fixtures. Integration tests read ../shared/datasets/celeba-subset in place and
skip, with the reason, where it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facepii import progress

ROOT = Path(__file__).resolve().parents[1]
CELEBA = Path(os.environ.get("FACEPII_TEST_CELEBA", ROOT.parent / "shared" / "datasets" / "celeba-subset"))

progress.set_enabled(False)


def celeba_or_skip() -> Path:
    if not (CELEBA / "identity_CelebA.txt").is_file():
        pytest.skip(f"test data absent: {CELEBA} (see ../shared/datasets/README.md)")
    return CELEBA


@pytest.fixture(scope="session")
def celeba() -> Path:
    return celeba_or_skip()


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One embedding cache for the whole test session (tests share computed embeddings)."""
    return tmp_path_factory.mktemp("facepii-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, tmp_path):
    """No test touches the user's real cache folder."""
    monkeypatch.setenv("FACEPII_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.delenv("FACEPII_DATASET", raising=False)


def face_photo(celeba: Path, k: int = 0) -> Path:
    """The k-th photo listed in the subset."""
    name = (celeba / "identity_CelebA.txt").read_text().split("\n")[k].split()[0]
    return celeba / "img_celeba" / name


class FixedAligner:
    """A stand-in for YuNet on synthetic images: every image has its 'face' at the template spot,
    except images whose top-left pixel is pure red (no face)."""

    version = "test-aligner/v1"

    def __init__(self):
        from facepii.faces import TEMPLATE_112

        self.lm = TEMPLATE_112.copy()
        self.calls = 0

    def landmarks(self, rgb):
        from facepii.errors import ImageError

        self.calls += 1
        if tuple(rgb[0, 0]) == (255, 0, 0):
            raise ImageError("no face found (test)")
        return self.lm * (rgb.shape[1] / 112)


class CountingEncoder:
    """Mean colour + a fixed random projection of the pixels: fast, deterministic, counts calls."""

    name = "counting"
    version = "1"
    dim = 16
    comparator = "cosine"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.embedded = 0
        self.fail_after = fail_after
        self._proj = np.random.default_rng(0).normal(size=(112 * 112 * 3 // 64, 16)).astype(np.float32)

    def embed(self, faces):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.embedded += len(faces)
        x = faces[:, ::8, ::8, :].reshape(len(faces), -1).astype(np.float32) / 255
        return (x @ self._proj[: x.shape[1]]).astype(np.float32)


def write_folder_dataset(root: Path, n_ids: int = 4, per_id: int = 3, size: int = 140, seed: int = 0) -> Path:
    """Synthetic one-folder-per-identity dataset of random-texture PNGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n_ids):
        d = root / f"person_{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, size=(size, size, 3))
        for j in range(per_id):
            img = np.clip(base + rng.normal(scale=20, size=base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"img_{j}.png")
    return root
