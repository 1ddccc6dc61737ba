"""Embedding protections, one module per family, registered by name.

``create("noise", sigma=0.05)`` builds one; ``create("projection+quantize")``
chains several into a :class:`~defenses.chain.Chain`. Third-party defenses
register through the entry-point group ``facepii.defenses``.
"""

from __future__ import annotations

from typing import Any

import facepii  # noqa: F401,I001  (first: it pins the kernels before numpy and torch load)
from defenses.base import Defense
from defenses.biohash import BioHash
from defenses.chain import Chain
from defenses.he import HE
from defenses.iom import IoM
from defenses.noise import Noise
from defenses.none import NoDefense
from defenses.pca import PCA
from defenses.polyprotect import PolyProtect
from defenses.projection import Projection
from defenses.quantize import Quantize
from facepii.errors import ParameterError
from facepii.registry import defenses as registry

for _cls in (NoDefense, Noise, Quantize, Projection, BioHash, IoM, PolyProtect, PCA, HE):
    registry.register(_cls.registry_name, _cls)


def create(spec: str, **params: Any) -> Defense:
    """A defense from its spec (``name`` or ``a+b``) with parameters (``step.param`` in chains)."""
    names = [s.strip() for s in spec.split("+") if s.strip()]
    if not names:
        raise ParameterError(f"empty defense spec {spec!r}.")
    for n in names:
        registry.get(n)  # clear error for an unknown name
    if len(set(names)) != len(names):
        raise ParameterError(f"defense chain {spec!r} repeats a step; each step appears once.")
    if len(names) > 1 and "none" in names:
        raise ParameterError(f"defense chain {spec!r}: 'none' is no step (the unprotected row is always reported).")
    steps = [(n, _named(registry.create(n), n)) for n in names]
    d = steps[0][1] if len(steps) == 1 else Chain(steps)
    return d.set_params(**params)


def _named(d: Defense, name: str) -> Defense:
    """Record the registry name on a plug-in's instance (built-ins declare theirs)."""
    if getattr(d, "name", None) != name:
        try:
            d._registry_name = name
        except AttributeError:
            pass
    return d


__all__ = ["Chain", "Defense", "create", "registry"]
