"""Worker process for the dlib encoder: reads batches of aligned faces on stdin, writes descriptors.

Started by :class:`facepii.encoders.DlibEncoder` with ``python -m facepii._dlib_worker`` (a plain
subprocess, not multiprocessing: nothing of the parent's ``__main__`` is re-run). Protocol per
batch: int32 n, then n x 112 x 112 x 3 uint8; answer: n x 128 float32. n = -1 ends the worker.
"""

from __future__ import annotations

import struct
import sys

import numpy as np

from facepii.dlib_encoder import _dlib_embed


def main() -> None:

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    face = 112 * 112 * 3
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        (n,) = struct.unpack("<i", head)
        if n < 0:
            return
        data = inp.read(n * face)
        faces = np.frombuffer(data, np.uint8).reshape(n, 112, 112, 3)
        out.write(_dlib_embed(faces).astype("<f4").tobytes())
        out.flush()


if __name__ == "__main__":
    main()
