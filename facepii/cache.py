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

import contextlib
import hashlib
import os
import re
import sqlite3
import tempfile
from pathlib import Path

import numpy as np

from facepii.errors import FacepiiError


class CacheError(FacepiiError):
    """The cache folder or its database cannot be used."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS landmarks (key TEXT PRIMARY KEY, lm BLOB, reason TEXT, sum TEXT);
CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vec BLOB, sum TEXT);
CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, sha256 TEXT, size INTEGER);
"""
COLUMNS = {"landmarks": ["key", "lm", "reason", "sum"], "embeddings": ["key", "vec", "sum"],
           "models": ["name", "sha256", "size"]}
MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def checksum(key: str, payload: bytes | str | None) -> str:
    """Integrity of one entry: a truncated, swapped or edited value no longer matches its key."""
    data = payload.encode() if isinstance(payload, str) else (payload or b"")
    return hashlib.sha256(key.encode() + b"\0" + data).hexdigest()[:16]


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
        self.rejected = 0  # entries read back that failed their checks (recomputed, counted in the report)
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
        """A foreign database that happens to have tables of these names is not a facepii cache; a cache
        of facepii 0.1 (no checksums) gets the column, and its entries are recomputed as they are met."""
        for table, cols in COLUMNS.items():
            got = [r[1] for r in self._db.execute(f"PRAGMA table_info({table})").fetchall()]
            if table != "models" and got == cols[:-1]:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN sum TEXT")
            elif got != cols:
                raise sqlite3.DatabaseError(f"table {table} has columns {got}, expected {cols}")

    @property
    def enabled(self) -> bool:
        return self._db is not None

    # landmarks -----------------------------------------------------------
    def get_landmarks(self, keys: list[str]) -> dict[str, np.ndarray | str]:
        """Cached results by key: a 5 x 2 array, or the reason no face was found. Entries that fail
        their checks are left out (recomputed by the caller) and counted in ``rejected``."""
        out: dict[str, np.ndarray | str] = {}
        for k, lm, reason, sm in self._select("landmarks", "lm, reason, sum", keys):
            ok = sm == checksum(k, lm if lm is not None else reason)
            if lm is not None:
                ok = ok and isinstance(lm, bytes) and len(lm) == 80
                arr = np.frombuffer(lm, np.float64).reshape(5, 2) if ok else None
                if ok and np.isfinite(arr).all():
                    out[k] = arr
                    continue
            elif ok and isinstance(reason, str):
                out[k] = reason
                continue
            self.rejected += 1
        return out

    def put_landmarks(self, items: dict[str, np.ndarray | str]) -> None:
        if self._db is None or not items:
            return
        rows = []
        for k, v in items.items():
            if isinstance(v, np.ndarray):
                b = v.astype(np.float64).tobytes()
                rows.append((k, b, None, checksum(k, b)))
            else:
                rows.append((k, None, v, checksum(k, v)))
        with self._damage():
            self._db.executemany("INSERT OR REPLACE INTO landmarks VALUES (?, ?, ?, ?)", rows)
            self._db.commit()

    # embeddings ----------------------------------------------------------
    def get_embeddings(self, keys: list[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """Cached vectors by key: float32 of width ``dim``, finite, matching their checksum; others are
        left out (recomputed by the caller) and counted in ``rejected``."""
        out = {}
        for k, v, sm in self._select("embeddings", "vec, sum", keys):
            ok = isinstance(v, bytes) and len(v) % 4 == 0 and len(v) > 0 and sm == checksum(k, v)
            ok = ok and (dim is None or len(v) == 4 * dim)
            vec = np.frombuffer(v, np.float32).copy() if ok else None
            if ok and np.isfinite(vec).all():
                out[k] = vec
            else:
                self.rejected += 1
        return out

    def put_embeddings(self, items: dict[str, np.ndarray]) -> None:
        if self._db is None or not items:
            return
        rows = []
        for k, v in items.items():
            b = np.asarray(v, np.float32).tobytes()
            rows.append((k, b, checksum(k, b)))
        with self._damage():
            self._db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
            self._db.commit()

    # models ----------------------------------------------------------------
    def _model_path(self, name: str) -> Path:
        if not MODEL_NAME.match(name):
            raise ValueError(f"not a cache model name: {name!r}")
        return self.folder / "models" / f"{name}.safetensors"

    def get_model(self, name: str) -> tuple[bytes | None, str | None]:
        """(the model's bytes, None), or (None, why not): absent, a link, or bytes that do not match the
        digest recorded when facepii wrote them (a file edited, truncated or planted in the cache)."""
        if self._db is None:
            return None, None
        path = self._model_path(name)
        if not path.is_file() or path.is_symlink():
            return None, None
        with self._damage():
            row = self._db.execute("SELECT sha256, size FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None, "no digest recorded for it (an older facepii's entry, or a file facepii did not write)"
        data = path.read_bytes()
        if row[1] != len(data) or row[0] != hashlib.sha256(data).hexdigest():
            self.rejected += 1
            return None, "content does not match the digest facepii recorded"
        return data, None

    def put_model(self, name: str, data: bytes) -> None:
        """Write a model's bytes beside their final name and rename (atomic), then record their digest."""
        if self._db is None:
            return
        path = self._model_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            # the rename and the digest under one write lock of the database: another process writing the
            # same model at the same time (two runs on one --cache-dir) goes wholly before or after, so the
            # file and its recorded digest always belong together
            with self._damage():
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    os.replace(tmp, path)
                    self._db.execute("INSERT OR REPLACE INTO models VALUES (?, ?, ?)",
                                     (name, hashlib.sha256(data).hexdigest(), len(data)))
                    self._db.commit()
                except BaseException:
                    self._db.rollback()
                    raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def verify(self) -> dict:
        """Every entry checked (checksums, shapes, model digests): ``{"landmarks": n, "embeddings": n,
        "models": n, "bad": [keys or names that fail]}``."""
        out: dict = {"landmarks": 0, "embeddings": 0, "models": 0, "bad": []}
        if self._db is None:
            return out
        with self._damage():
            keys = {t: [r[0] for r in self._db.execute(f"SELECT key FROM {t}")] for t in ("landmarks", "embeddings")}
            models = [r[0] for r in self._db.execute("SELECT name FROM models")]
        before = self.rejected
        for t, get in (("landmarks", self.get_landmarks), ("embeddings", self.get_embeddings)):
            got = get(keys[t])
            out[t] = len(got)
            out["bad"] += [k for k in keys[t] if k not in got]
        for name in models:
            data, why = self.get_model(name) if MODEL_NAME.match(name) else (None, "bad name")
            if data is None:
                out["bad"].append(name)
            else:
                out["models"] += 1
        self.rejected = before
        return out

    def count(self, table: str = "embeddings") -> int:
        if self._db is None:
            return 0
        with self._damage():
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def _select(self, table: str, cols: str, keys: list[str]):
        if self._db is None or not keys:
            return []
        rows = []
        with self._damage():
            for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
                chunk = keys[i:i + 900]
                q = f"SELECT key, {cols} FROM {table} WHERE key IN ({','.join('?' * len(chunk))})"
                rows.extend(self._db.execute(q, chunk).fetchall())
        return rows

    @contextlib.contextmanager
    def _damage(self):
        """A database that opened but fails when read or written (pages corrupt, header intact): one line."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise CacheError(f"cache {self.folder}: the database is damaged ({exc}); move it away, or pass another "
                             "--cache-dir or --no-cache (finished results elsewhere are not lost).") from None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
