"""``nearest``: the auxiliary face whose protected template scores highest against the stolen one.

Cheap, needs no training, and a floor that any learned attack must beat. It
already leaks: the best-matching stranger shares age, sex, ethnicity, hair
and pose with the victim. With disclosed per-user keys, the auxiliary faces
are protected with each victim's own key before matching.
"""

from __future__ import annotations

import numpy as np

from attacks.base import Attack


class Nearest(Attack):
    """Return the auxiliary face whose protected template matches the stolen template best."""

    name = "nearest"

    def __init__(self):
        pass

    def fit(self, templates, images, *, threat, cache=None):
        self.threat_ = threat
        self.templates_ = np.asarray(templates)
        self.images_ = np.asarray(images)
        return self

    def best(self, templates, users=None) -> np.ndarray:
        """Index of the chosen auxiliary face for each stolen template."""
        tm, d = self.threat_, self.threat_.defense
        if tm.key_disclosed_per_user and users is not None:
            out = np.empty(len(templates), int)
            for i, u in enumerate(users):
                T_aux = tm.protect(tm.aux_embeddings, np.full(len(tm.aux_embeddings), u))
                out[i] = int(np.argmax(d.score(templates[i:i + 1], T_aux)[0]))
            return out
        return np.argmax(d.score(templates, self.templates_), axis=1)

    def reconstruct(self, templates, users=None):
        return self.images_[self.best(np.asarray(templates), users)].copy()
