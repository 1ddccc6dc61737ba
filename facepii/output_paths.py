"""Output paths, checked BEFORE the long work starts (docs/security.md): the ``--out`` folder, ``--json`` and
``--junit`` files, the cache folder, a lineup study folder. A file where a folder belongs, a folder where a
file belongs, a special file, an unwritable place, a planted symbolic link, an output inside a dataset end
the run at once with one line. And what facepii may replace there: only files it recognises as its own
(:func:`own_score_files`, :func:`own_lineup_files`). :mod:`facepii.outputs` writes.
"""

from __future__ import annotations

import hashlib
import json
import stat
import tempfile
from pathlib import Path

from facepii import lineup
from facepii.datasets import dataset_root
from facepii.errors import FacepiiError

#: every file facepii may write under --out (each checked before the work: a plain file or nothing)
REPORT_FILES = ("report.json", "report.md", "report.html", "tradeoff.png", "det.png", "reconstructions.png",
                "linkability.png", "irreversibility.png", "templates.png",
                "transfer.md", "transfer.json", "transfer.png")
LINEUP = "lineup"
SCORES = "scores"
SCORE_INDEX = "index.json"
OWNED = ".facepii-owned"  # the marker in a folder facepii builds beside its destination (debris it may remove)


class OutputError(FacepiiError):
    """An output path that cannot be written safely."""


# ---------------------------------------------------------------- checks before the work


def check_output_file(path: str | Path, option: str, out: str | Path | None = None) -> Path:
    """A file facepii may create or replace: its folder exists (or can be made) and is writable, and
    the path is not a folder, a link or a special file, nor one of the files the same run writes under
    ``out`` (``--json OUT/scores/index.json --out OUT`` would have one overwrite the other)."""
    p = Path(path)
    if out is not None:
        q, o = p.expanduser().resolve(), Path(out).expanduser().resolve()
        if o in q.parents:
            rel = q.relative_to(o)
            if rel.parts[0] in (SCORES, LINEUP) or (len(rel.parts) == 1 and rel.name in REPORT_FILES
                                                     and rel.name != "report.json"):
                raise OutputError(f"{option} {p}: the same run writes that file under --out {out}; choose "
                                  "another name.")
    if p.is_symlink():
        raise OutputError(f"{option} {p}: is a symbolic link; give a plain file path.")
    if p.exists() and p.is_dir():
        raise OutputError(f"{option} {p}: is a folder; give a file path.")
    if p.exists() and not stat.S_ISREG(p.stat().st_mode):
        raise OutputError(f"{option} {p}: is not a regular file (a device or pipe); give a plain file path.")
    _check_writable_dir(p.parent if str(p.parent) else Path("."), option)
    return p


def _check_writable_dir(d: Path, option: str) -> None:
    existing = d
    while not existing.exists():
        if existing.is_symlink():
            raise OutputError(f"{option}: {existing} is a broken symbolic link.")
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option}: {existing} is a file, not a folder.")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".facepii-check-"):
            pass
    except OSError as exc:
        raise OutputError(f"{option}: cannot write in {existing} ({exc.strerror or exc}).") from None


def check_cache_dir(d: str | Path, option: str = "--cache-dir") -> Path:
    """The cache folder: a folder (or creatable) where facepii can write."""
    p = Path(d).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputError(f"{option} {p}: is a file; give a folder.")
    _check_writable_dir(p, option)
    return p


def check_out_dir(out: str | Path, option: str = "--out", dataset: str | list[str | None] | None = None) -> Path:
    """The report folder: a real folder (or creatable; not a link), writable, not inside the dataset it
    evaluates (nor the attacker's: ``dataset`` may list both specs); the files facepii will replace are
    plain files; an existing ``lineup/`` holds only what facepii wrote there."""
    p = Path(out)
    if p.is_symlink():
        raise OutputError(f"{option} {p}: is a symbolic link; give the folder itself (facepii never writes "
                          "through a link).")
    if p.exists() and not p.is_dir():
        raise OutputError(f"{option} {p}: is a file; give a folder.")
    for root in (dataset_root(d) for d in (dataset if isinstance(dataset, list) else [dataset])):
        if root is None:
            continue
        q = p.expanduser().resolve()
        if q == root or root in q.parents:
            raise OutputError(f"{option} {p}: is inside the dataset folder {root}; its next read would take "
                              "facepii's own pictures for photos of people: choose a folder outside it.")
    _check_writable_dir(p, option)
    for name in REPORT_FILES:
        f = p / name
        if f.is_symlink() or (f.exists() and not f.is_file()):
            raise OutputError(f"{option} {p}: {name} is there but is a link, a folder or a special file; "
                              "remove it or choose another --out (nothing was written).")
    own_lineup_files(p / LINEUP, option)
    own_score_files(p / SCORES, option)
    return p


SCORE_SCHEMA = "facepii.scores/1"
MAX_INDEX_BYTES = 1 << 22


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of a file's content (None when it cannot be read)."""
    try:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def _score_index(idx: Path, option: str) -> list[dict]:
    """The entries of facepii's own scores/index.json, parsed as strictly as report.json: an index that is
    not one facepii writes (a list, ``{"files": 5}``, too deep, too large) ends the run before the work."""
    def refuse(why: str) -> OutputError:
        return OutputError(f"{option}: {idx} is not a score index facepii wrote ({why}); move it or choose "
                           "another --out (nothing was written).")
    if idx.stat().st_size > MAX_INDEX_BYTES:
        raise refuse(f"larger than {MAX_INDEX_BYTES >> 20} MB")
    try:
        d = json.loads(idx.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise refuse("not JSON") from None
    except RecursionError:
        raise refuse("nested too deeply") from None
    if not isinstance(d, dict) or d.get("schema") != SCORE_SCHEMA or not isinstance(d.get("files"), list):
        raise refuse(f'no "schema": "{SCORE_SCHEMA}" with a list of "files"')
    entries = []
    for f in d["files"]:
        if not (isinstance(f, dict) and isinstance(f.get("file"), str) and _plain_name(f["file"])
                and (f.get("sha256") is None or isinstance(f.get("sha256"), str))):
            raise refuse(f"an entry that is not a plain file name: {str(f)[:80]!r}")
        entries.append(f)
    return entries


def _written_by_facepii(path: Path, digest: str | None) -> bool:
    """Content facepii can recognise as its own: the SHA-256 its index recorded, or (an index of an earlier
    version, without digests) the comment line it writes first in every score file."""
    if digest is not None:
        return file_sha256(path) == digest
    try:
        with path.open("rb") as f:
            return f.read(10) == b"# facepii "
    except OSError:
        return False


def own_score_files(root: Path, option: str = "--out") -> list[Path]:
    """The files of an existing scores folder that facepii wrote: listed in its index.json AND recognised by
    content (:func:`_written_by_facepii`), never a name a file on disk merely asks it to remove. Anything in
    scores/ that is not a plain file (a link, a folder where a score file goes), or an index facepii did not
    write, ends the run before the work."""
    if not root.exists() and not root.is_symlink():
        return []
    if root.is_symlink() or not root.is_dir():
        raise OutputError(f"{option}: {root} is there but is not a plain folder (a link or a file); "
                          "move it or choose another --out (nothing was written).")
    for f in root.iterdir():
        if f.is_symlink() or not f.is_file():
            raise OutputError(f"{option}: {f} is a link, a folder or a special file in facepii's scores folder; "
                              "remove it or choose another --out (nothing was written).")
    idx = root / SCORE_INDEX
    if not idx.exists():
        return []
    entries = _score_index(idx, option)
    own = [root / f["file"] for f in entries if (root / f["file"]).is_file()
           and _written_by_facepii(root / f["file"], f.get("sha256"))]
    return [idx, *own]


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".") and name == Path(name).name


def own_lineup_files(root: Path, option: str = "--out") -> list[Path]:
    """The files of an existing lineup folder, when every one is facepii's (listed in its manifest);
    else an error that names what is in the way."""
    if not root.exists() and not root.is_symlink():
        return []
    if root.is_symlink() or not root.is_dir():
        raise OutputError(f"{option}: {root} is there but is not a plain folder (a link or a file); "
                          "move it or choose another --out (nothing was written).")
    try:
        m = lineup.read_manifest(root)
    except FacepiiError:
        raise OutputError(f"{option}: {root} holds no facepii lineup material; facepii will not replace a folder it "
                          "did not write: move it or choose another --out.") from None
    listed = {root / f for g in m["gallery"] for f in g} | {root / f for r in m["rows"] for f in r["files"]}
    listed |= {root / "manifest.json", root / OWNED}
    found = {x for x in root.rglob("*") if not x.is_dir() or x.is_symlink()}
    foreign = sorted(found - listed)
    if foreign:
        raise OutputError(f"{option}: {root} holds files facepii did not write ({foreign[0].name}"
                          f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); move them or "
                          "choose another --out.")
    return sorted(listed & found)


def check_study_dir(study_dir: str | Path) -> Path:
    """A new study folder: absent or empty (a study is never written over anything)."""
    d = Path(study_dir)
    if d.is_symlink() or (d.exists() and (not d.is_dir() or any(d.iterdir()))):
        raise OutputError(f"--out {d}: a study or other files are already there; choose another --out "
                          "(nothing was overwritten).")
    _check_writable_dir(d, "--out")
    return d
