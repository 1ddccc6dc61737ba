"""On-disk cache of face landmarks and embeddings (SQLite).

Keys are content hashes of the photo bytes, so renaming or moving a dataset
keeps its cache, and a changed photo is recomputed:

- landmarks: ``align_version | sha256(photo)`` -> 5 x 2 landmarks, or the reason
  the photo gave no face (so a warm run does not re-detect failures either);
- embeddings: ``encoder name@version | align_version | sha256(photo)`` -> vector.

Each batch is committed as soon as it is computed (SQLite WAL journal), so a
run stopped by Ctrl-C or kill keeps what it finished and the next run resumes
from there. The cache holds biometric templates: it lives in the user's cache
folder (``platformdirs``), ``--cache-dir`` moves it, ``--no-cache`` disables it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import numpy as np

from facepii.errors import FacepiiError


class CacheError(FacepiiError):
    """The cache folder or its database cannot be used."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS landmarks (key TEXT PRIMARY KEY, lm BLOB, reason TEXT);
CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vec BLOB);
"""


def default_cache_dir() -> Path:
    env = os.environ.get("FACEPII_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("facepii"))


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Cache:
    """Landmark and embedding store; ``Cache(None)`` is a no-op cache (``--no-cache``)."""

    def __init__(self, folder: str | os.PathLike | None):
        self.folder = Path(folder).expanduser() if folder is not None else None
        self._db: sqlite3.Connection | None = None
        if self.folder is not None:
            db = self.folder / "facepii-cache.sqlite3"
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(db, timeout=60)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(SCHEMA)
                self._check_schema()
                self._db.commit()
            except (sqlite3.Error, OSError) as exc:
                self.close()
                raise CacheError(f"cache {db}: cannot be used ({exc}); move it away, or pass another "
                                 "--cache-dir or --no-cache.") from None

    def _check_schema(self) -> None:
        """A foreign database that happens to have tables of these names is not a facepii cache."""
        want = {"landmarks": ["key", "lm", "reason"], "embeddings": ["key", "vec"]}
        for table, cols in want.items():
            got = [r[1] for r in self._db.execute(f"PRAGMA table_info({table})").fetchall()]
            if got != cols:
                raise sqlite3.DatabaseError(f"table {table} has columns {got}, expected {cols}")

    @property
    def enabled(self) -> bool:
        return self._db is not None

    # landmarks -----------------------------------------------------------
    def get_landmarks(self, keys: list[str]) -> dict[str, np.ndarray | str]:
        """Cached results by key: a 5 x 2 array, or the reason no face was found."""
        out: dict[str, np.ndarray | str] = {}
        for k, lm, reason in self._select("landmarks", "lm, reason", keys):
            out[k] = np.frombuffer(lm, np.float64).reshape(5, 2) if lm is not None else reason
        return out

    def put_landmarks(self, items: dict[str, np.ndarray | str]) -> None:
        if self._db is None or not items:
            return
        rows = [(k, v.astype(np.float64).tobytes(), None) if isinstance(v, np.ndarray) else (k, None, v)
                for k, v in items.items()]
        self._db.executemany("INSERT OR REPLACE INTO landmarks VALUES (?, ?, ?)", rows)
        self._db.commit()

    # embeddings ----------------------------------------------------------
    def get_embeddings(self, keys: list[str]) -> dict[str, np.ndarray]:
        return {k: np.frombuffer(v, np.float32).copy()
                for k, v in self._select("embeddings", "vec", keys)}

    def put_embeddings(self, items: dict[str, np.ndarray]) -> None:
        if self._db is None or not items:
            return
        rows = [(k, np.asarray(v, np.float32).tobytes()) for k, v in items.items()]
        self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?)", rows)
        self._db.commit()

    def count(self, table: str = "embeddings") -> int:
        if self._db is None:
            return 0
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def _select(self, table: str, cols: str, keys: list[str]):
        if self._db is None or not keys:
            return []
        rows = []
        for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            chunk = keys[i:i + 900]
            q = f"SELECT key, {cols} FROM {table} WHERE key IN ({','.join('?' * len(chunk))})"
            rows.extend(self._db.execute(q, chunk).fetchall())
        return rows

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
