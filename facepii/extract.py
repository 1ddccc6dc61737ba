"""FaceSet -> usable faces and their embeddings, through the cache.

For every photo: hash its bytes, look up landmarks and embeddings in the
cache; for what is missing, decode, detect, align and embed in batches
(decoding and detection run in a background thread while the encoder works on
the previous batch), committing each batch to the cache. Photos that cannot be
used are returned in ``skipped`` with their reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass, field

import numpy as np

from facepii import progress
from facepii.cache import Cache, content_hash
from facepii.datasets import FaceSet
from facepii.encoder_base import embedding_problem
from facepii.encoders import Encoder, encoder_id
from facepii.errors import EncoderError, ImageError, ParameterError
from facepii.executor import embed_batch
from facepii.faces import FaceAligner, align, default_aligner, read_image


@dataclass
class Extraction:
    """Usable items of a FaceSet with their embeddings (one matrix per encoder)."""

    faceset: FaceSet                     # only the usable items
    index: np.ndarray                    # their positions in the input FaceSet
    embeddings: dict[str, np.ndarray]    # encoder id -> (n, d) float32
    landmarks: np.ndarray | None         # (n, 5, 2), None for an embeddings dataset
    skipped: list[dict] = field(default_factory=list)   # {"path", "reason"}
    stats: dict = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)        # content hash of each usable item

    def for_encoder(self, enc: Encoder) -> np.ndarray:
        return self.embeddings[encoder_id(enc)]

    def aligned(self, positions: np.ndarray | list[int] | None = None) -> np.ndarray:
        """Aligned 112 x 112 RGB faces of the given usable items (re-decoded from the photos)."""
        return aligned_faces(self.faceset, self.landmarks, positions)


def aligned_faces(fs: FaceSet, landmarks: np.ndarray | None, positions=None) -> np.ndarray:
    """Aligned 112 x 112 RGB faces of items of ``fs`` at their landmarks (decoded from the photos)."""
    if landmarks is None:
        raise ImageError("this dataset holds embeddings only; there are no face images")
    pos = np.arange(len(fs)) if positions is None else np.asarray(positions, int)
    out = np.empty((len(pos), 112, 112, 3), np.uint8)
    for j, i in enumerate(pos):
        out[j] = align(_rgb(fs, int(i)), landmarks[i])
    return out


def _rgb(fs: FaceSet, i: int) -> np.ndarray:
    if fs.images is not None:
        img = np.asarray(fs.images[i])
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)
    return read_image(fs.paths[i])


def _hash_item(fs: FaceSet, i: int) -> str:
    if fs.images is not None:
        a = np.ascontiguousarray(fs.images[i])
        return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()
    with open(fs.paths[i], "rb") as f:
        return content_hash(f.read())


def _uncentred(enc: Encoder, faces: np.ndarray) -> np.ndarray:
    """The model's own output (what the cache stores), before the centring a centred encoder may already hold."""
    raw = getattr(enc, "raw", None)
    return raw(faces) if callable(raw) else enc.embed(faces)


def extract(fs: FaceSet, encoders: list[Encoder], cache: Cache | None = None,
            aligner: FaceAligner | None = None, batch_size: int = 32, executor=None) -> Extraction:
    """Embed every usable face of ``fs`` with every encoder; see the module docstring. With a
    :class:`facepii.executor.DaskExecutor` the batches run on its workers."""
    cache = cache or Cache(None)
    if fs.embeddings is not None:
        return _from_embeddings(fs, encoders)
    aligner = aligner or default_aligner()
    n = len(fs)
    skipped: dict[int, str] = {}
    hashes: list[str | None] = [None] * n
    with progress.bar("hashing photos", n) as b:
        for i in range(n):
            try:
                hashes[i] = _hash_item(fs, i)
            except OSError as exc:
                skipped[i] = f"cannot read file ({exc.strerror or exc})"
            b.update()
    _duplicates(fs, hashes, skipped)
    av = aligner.version
    lm_keys = {i: f"{av}|{h}" for i, h in enumerate(hashes) if h is not None and i not in skipped}
    cached_lm = cache.get_landmarks(list(set(lm_keys.values())))
    landmarks: dict[int, np.ndarray] = {}
    for i, k in lm_keys.items():
        v = cached_lm.get(k)
        if isinstance(v, np.ndarray):
            landmarks[i] = v
        elif isinstance(v, str):
            skipped[i] = v
    emb: dict[str, dict[int, np.ndarray]] = {}
    emb_keys: dict[str, dict[int, str]] = {}
    for enc in encoders:
        eid = encoder_id(enc)
        keys = {i: f"{eid}|{av}|{hashes[i]}" for i in lm_keys if i not in skipped}
        got = cache.get_embeddings(list(set(keys.values())), getattr(enc, "dim", None))
        emb[eid] = {i: got[k] for i, k in keys.items() if k in got}
        emb_keys[eid] = keys
    todo = [i for i in lm_keys if i not in skipped
            and (i not in landmarks or any(i not in emb[encoder_id(e)] for e in encoders))]
    stats = {"items": n, "cached": n - len(todo) - len(skipped), "computed": 0,
             "detected": 0, "encoders": {encoder_id(e): 0 for e in encoders},
             "cache_rejected": cache.rejected}
    if todo:
        run = _compute if executor is None else _compute_dask
        run(fs, todo, encoders, cache, aligner, batch_size, landmarks, skipped, emb, emb_keys, lm_keys, stats,
            **({} if executor is None else {"executor": executor}))
    ok = np.array([i for i in range(n) if i not in skipped and i in landmarks], dtype=int)
    sub = fs.subset(ok)
    for enc in encoders:
        if len(ok):
            check_output(enc, np.stack([emb[encoder_id(enc)][i] for i in ok]))
    return Extraction(
        faceset=sub, index=ok,
        embeddings={eid: (np.stack([d[i] for i in ok]) if len(ok) else np.zeros((0, 0), np.float32))
                     for eid, d in emb.items()},
        landmarks=np.stack([landmarks[i] for i in ok]) if len(ok) else np.zeros((0, 5, 2)),
        skipped=[{"path": fs.item_name(i), "reason": r} for i, r in sorted(skipped.items())],
        stats=stats, keys=[hashes[i] for i in ok],
    )


def _duplicates(fs: FaceSet, hashes: list[str | None], skipped: dict[int, str],
                what: str = "the same photo (identical bytes)", twin: str = "identical bytes to") -> None:
    """The same photo (identical bytes) twice: under two identities it is used for none (it would be a
    genuine pair of different people); within one identity it is used once (it would be a perfect,
    false genuine score)."""
    seen: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        if h is not None and i not in skipped:
            seen.setdefault(h, []).append(i)
    for idx in (v for v in seen.values() if len(v) > 1):
        labels = {str(fs.labels[i]) for i in idx}
        first = fs.item_name(idx[0])
        if len(labels) > 1:
            for i in idx:
                skipped[i] = f"{what} is listed under {len(labels)} identities"
        else:
            for i in idx[1:]:
                skipped[i] = f"duplicate: {twin} {first}"


def _compute(fs, todo, encoders, cache, aligner, batch_size, landmarks, skipped, emb, emb_keys,
             lm_keys, stats):
    """Decode/detect/align in a thread, embed in this one, commit per batch."""
    q: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()

    def produce():
        try:
            for s in range(0, len(todo), batch_size):
                if stop.is_set():
                    return
                idx, faces, new_lm = [], [], {}
                for i in todo[s:s + batch_size]:
                    try:
                        rgb = _rgb(fs, i)
                        if i not in landmarks:
                            lm = aligner.landmarks(rgb)
                            new_lm[i] = lm
                        else:
                            lm = landmarks[i]
                        faces.append(align(rgb, lm))
                        idx.append(i)
                    except ImageError as exc:
                        new_lm[i] = str(exc)
                q.put((idx, np.stack(faces) if faces else None, new_lm))
        except BaseException as exc:  # hand any crash to the consumer
            q.put(exc)
            return
        q.put(None)

    t = threading.Thread(target=produce, daemon=True, name="facepii-detect")
    t.start()
    try:
        with progress.bar("detecting + embedding", len(todo)) as b:
            while True:
                item = q.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                idx, faces, new_lm = item
                vecs: dict[str, tuple[list[int], np.ndarray]] = {}
                if faces is not None:
                    for enc in encoders:
                        eid = encoder_id(enc)
                        need = [j for j, i in enumerate(idx) if i not in emb[eid]]
                        if need:
                            vecs[eid] = ([idx[j] for j in need], _uncentred(enc, faces[need]))
                _commit(cache, encoders, idx if faces is not None else [], new_lm, vecs, landmarks, skipped, emb,
                        emb_keys, lm_keys, stats)
                b.update(len(idx) + sum(isinstance(v, str) for v in new_lm.values()))
    finally:
        stop.set()
        while t.is_alive():  # unblock the producer if it waits on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            t.join(timeout=0.05)


def _commit(cache, encoders, idx, new_lm, vecs, landmarks, skipped, emb, emb_keys, lm_keys, stats) -> None:
    """One batch's results into the cache and the in-memory tables (locally or from a Dask worker);
    ``idx``: the batch's aligned faces."""
    lm_cache = {}
    for i, v in new_lm.items():
        lm_cache[lm_keys[i]] = v
        if isinstance(v, str):
            skipped[i] = v
        else:
            landmarks[i] = v
    stats["detected"] += len(new_lm)
    cache.put_landmarks(lm_cache)
    by_id = {encoder_id(e): e for e in encoders}
    for eid, (ids, v) in vecs.items():
        v = np.asarray(v, np.float32)
        _check_width(by_id[eid], v)
        put = {}
        for i, row in zip(ids, v):
            emb[eid][i] = row
            put[emb_keys[eid][i]] = row
        cache.put_embeddings(put)
        stats["encoders"][eid] += len(ids)
    stats["computed"] += len(idx)


def _compute_dask(fs, todo, encoders, cache, aligner, batch_size, landmarks, skipped, emb, emb_keys, lm_keys,
                  stats, executor):
    """The same batches on Dask workers; each completed batch is committed as it arrives."""

    specs = {}
    for enc in encoders:
        spec = getattr(enc, "spec", None)
        if spec is None:
            raise ParameterError(f"encoder {enc.name} cannot be loaded on Dask workers (it was not made from a "
                                 "spec such as sface, dlib or onnx:PATH); use --executor local.")
        specs[encoder_id(enc)] = spec
    if aligner.version != _default_aligner_version():
        raise ParameterError("a custom face aligner cannot run on Dask workers; use --executor local.")
    tasks = []
    for s in range(0, len(todo), batch_size):
        part = todo[s:s + batch_size]
        items = [(i, str(fs.paths[i]) if fs.images is None else np.asarray(fs.images[i]), landmarks.get(i))
                 for i in part]
        tasks.append({"items": items, "encoders": {eid: (spec, {i for i in part if i not in emb[eid]})
                                                   for eid, spec in specs.items()}})
    with progress.bar(f"detecting + embedding on {executor.workers} Dask workers", len(todo)) as b:
        for r in executor.map_unordered(embed_batch, tasks):
            _commit(cache, encoders, r["idx"], r["new_lm"], r["emb"], landmarks, skipped, emb, emb_keys, lm_keys,
                    stats)
            b.update(r["n"])


def _default_aligner_version() -> str:
    return default_aligner().version


def _check_width(enc: Encoder, vecs: np.ndarray) -> None:
    if vecs.ndim != 2 or (getattr(enc, "dim", None) and vecs.shape[1] != enc.dim):
        raise EncoderError(f"encoder {enc.name} returned shape {vecs.shape}, expected (n, {enc.dim}).")
    if not np.isfinite(vecs).all():
        raise EncoderError(f"encoder {enc.name} returned NaN/inf embeddings.")


def check_output(enc: Encoder, E: np.ndarray) -> None:
    """A model's embeddings of the evaluation's photos, checked as an embeddings file is: a model that
    outputs zeros or a constant recognises nobody, and its figures would mean nothing."""
    why = embedding_problem(E)
    if why:
        raise EncoderError(f"encoder {enc.name}: {why}; check the model file and its options (output, mean/std, "
                           "layout).")


def _from_embeddings(fs: FaceSet, encoders: list[Encoder]) -> Extraction:
    for enc in encoders:
        if getattr(enc, "dim", fs.embeddings.shape[1]) != fs.embeddings.shape[1]:
            raise EncoderError(
                f"{fs.source}: embeddings are {fs.embeddings.shape[1]}-d but encoder {enc.name} is "
                f"{enc.dim}-d; pass the encoder that made them (or --encoder precomputed).")
    # the same vector twice: under two identities used for neither, within one identity used once (as photos)
    hashes = [hashlib.sha256(np.ascontiguousarray(row, np.float32).tobytes()).hexdigest() for row in fs.embeddings]
    skipped: dict[int, str] = {}
    _duplicates(fs, hashes, skipped, what="the same vector", twin="the same vector as")
    ok = np.array([i for i in range(len(fs)) if i not in skipped], dtype=int)
    sub = fs.subset(ok)
    embs = {encoder_id(e): sub.embeddings for e in encoders}
    return Extraction(faceset=sub, index=ok, embeddings=embs, landmarks=None,
                      skipped=[{"path": fs.item_name(i), "reason": r} for i, r in sorted(skipped.items())],
                      stats={"items": len(fs), "cached": len(ok), "computed": 0, "detected": 0,
                             "encoders": {}}, keys=[f"{fs.source}#{i}" for i in ok])
