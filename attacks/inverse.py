"""``inverse``: map the protected template back to a raw embedding, then decode it.

The protected -> raw map is a ridge regression learned on the auxiliary set
(templates the attacker computed -> the raw embeddings it also computed):
for noise and quantization it is a denoiser; for keyed defenses with a
disclosed key it learns the inverse of that key's transform (per victim when
keys are per user). The estimate is decoded by the shared raw decoder.
"""

from __future__ import annotations

import numpy as np

from attacks.base import Attack, estimate_raw


class Inverse(Attack):
    """Ridge-map protected templates back to raw embeddings, then decode with the raw decoder."""

    name = "inverse"

    def __init__(self):
        pass

    def fit(self, templates, images, *, context):
        self.ctx_ = context
        self.templates_ = np.asarray(templates)
        estimate_raw(context, self.templates_, self.templates_[:1], None)  # fit the shared mapping now
        return self

    def reconstruct(self, templates, users=None):
        E = estimate_raw(self.ctx_, self.templates_, np.asarray(templates), users)
        return self.ctx_.face_model.reconstruct(E)
