"""Stand-in victims for choosing an attack's settings without looking at the real ones (used by the tune_* scripts)."""

from __future__ import annotations

import numpy as np

from facepii.stages import Split, split_identities


def held_aside_split(labels: np.ndarray, n_held: int, seed: int = 2024) -> tuple[Split, int]:
    """README's job's split (seed 0) with ``n_held`` of its auxiliary identities (seeded) held aside as
    stand-in victims: one source photo each (the stolen template), their other photos the gallery; the
    attacker trains on the remaining auxiliary identities. Returns the split and the number of README's
    victims (never used)."""
    real = split_identities(labels, None, 0, 1000)
    aux_ids = np.unique(labels[real.aux_pos])
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice([i for i in aux_ids if (labels[real.aux_pos] == i).sum() >= 2], n_held,
                              replace=False))
    source, gallery = [], []
    for v in held:
        pos = np.flatnonzero(labels == v)
        s = int(rng.choice(pos))
        source.append(s)
        gallery += [int(p) for p in pos if p != s]
    train_pos = real.aux_pos[~np.isin(labels[real.aux_pos], held)]
    return Split(held, train_pos, np.array(source), np.array(sorted(gallery)), 0), len(real.victim_ids)
