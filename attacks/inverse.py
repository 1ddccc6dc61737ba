"""``inverse``: map the protected template back to a raw embedding, then decode it.

The protected -> raw map is a ridge regression learned on the auxiliary set
(templates the attacker computed -> the raw embeddings it also computed):
for noise and quantization it is a denoiser; for keyed defenses with a
disclosed key it learns the inverse of that key's transform (per victim when
keys are per user). The estimate is decoded by the shared raw decoder.
"""

from __future__ import annotations

import numpy as np

from attacks.base import Attack, RowCache, estimate_work, solver_is_better


class Inverse(Attack):
    """Ridge-map protected templates back to raw embeddings, then decode with the raw decoder."""

    registry_name = "inverse"

    def __init__(self):
        pass

    def fit(self, templates, images, *, threat, cache=None):
        self.threat_, self.cache_ = threat, (RowCache() if cache is None else cache)
        self.templates_ = np.asarray(templates)
        if not threat.templates_in_work_space:  # fit what the row shares now: the map and the choice
            if not threat.key_disclosed_per_user:
                self.cache_.mapper(threat, self.templates_)
            if threat.key == "disclosed":
                solver_is_better(threat, self.cache_, self.templates_)
        return self

    def reconstruct(self, templates, users=None):
        E = estimate_work(self.threat_, self.cache_, self.templates_, np.asarray(templates), users)
        return self.threat_.face_model.reconstruct(E)
