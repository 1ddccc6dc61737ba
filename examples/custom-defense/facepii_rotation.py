"""A keyed random rotation of unit embeddings (a vendor's own defense, as a facepii plug-in).

Install it next to facepii (``pip install -e examples/custom-defense``) and it shows up in
``facepii defenses``; ``facepii evaluate --defense rotation`` then attacks it like any other.
A rotation keeps every cosine similarity (no utility cost) — and, once the key is known, it
keeps every bit of identity too: the disclosed-key rows show it.
"""

import numpy as np

from defenses.base import Defense, l2_normalize, per_key


class Rotation(Defense):
    """Keyed random rotation of unit embeddings; cosine comparator; free to undo with the key."""

    comparator = "cosine"              # capabilities, declared (facepii's contract test checks them)
    keyed = True
    key_modes = ("system", "user")

    def __init__(self, key_mode: str = "system", seed: int = 0):
        self.key_mode = key_mode
        self.seed = seed

    def transform(self, E, users=None):
        def rotate(X, key):
            q, r = np.linalg.qr(np.random.default_rng(key).normal(size=(X.shape[1], X.shape[1])))
            return X @ (q * np.sign(np.diag(r))).astype(np.float32)

        return per_key(self, l2_normalize(E), users, rotate)
