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

    registry_name = "nearest"
    uses_face_model = False  # it returns an auxiliary photo

    def __init__(self):
        pass

    def fit(self, templates, images, *, threat, cache=None):
        self.threat_ = threat
        self.templates_ = np.asarray(templates)
        self.images_ = np.asarray(images)
        return self

    def best(self, templates, users=None) -> np.ndarray:
        """Index of the chosen auxiliary face for each victim: the best score against its stolen template,
        or with K templates per victim (N x K x d) the best mean of its K scores."""
        tm, d = self.threat_, self.threat_.defense
        templates = np.asarray(templates)
        k = templates.shape[1] if templates.ndim == 3 else 1
        if tm.key_disclosed_per_user and users is not None:
            out = np.empty(len(templates), int)
            for i, u in enumerate(users):
                T_aux = tm.protect(tm.aux_embeddings, np.full(len(tm.aux_embeddings), u))
                mine = templates[i] if k > 1 else templates[i:i + 1]
                out[i] = int(np.argmax(d.score(mine, T_aux).mean(axis=0)))
            return out
        flat = templates.reshape(len(templates) * k, *templates.shape[2:]) if k > 1 else templates
        S = np.asarray(d.score(flat, self.templates_))
        return np.argmax(S.reshape(len(templates), k, -1).mean(axis=1), axis=1)

    def reconstruct(self, templates, users=None):
        return self.images_[self.best(np.asarray(templates), users)].copy()
