"""``none``: no protection; the stored template is the embedding itself (the PII-level baseline)."""

from __future__ import annotations

from defenses.base import Defense


class NoDefense(Defense):
    """No protection: templates are the raw embeddings, compared with the encoder's comparator."""

    registry_name = "none"
    emits = "embedding"

    def __init__(self):
        pass
