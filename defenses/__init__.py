"""Embedding protections, one module per family, registered by name.

``create("noise", sigma=0.05)`` builds one; ``create("projection+quantize")``
chains several into a :class:`~defenses.base.Pipeline`. Third-party defenses
register through the entry-point group ``facepii.defenses``.
"""

from __future__ import annotations

from typing import Any

from defenses.base import Defense, Pipeline
from defenses.biohash import BioHash
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

for _name, _cls in [("none", NoDefense), ("noise", Noise), ("quantize", Quantize),
                    ("projection", Projection), ("biohash", BioHash), ("iom", IoM),
                    ("polyprotect", PolyProtect), ("pca", PCA), ("he", HE)]:
    registry.register(_name, _cls)


def create(spec: str, **params: Any) -> Defense:
    """A defense from its spec (``name`` or ``a+b``) with parameters (``step.param`` in chains)."""
    names = [s.strip() for s in spec.split("+") if s.strip()]
    if not names:
        raise ParameterError(f"empty defense spec {spec!r}.")
    for n in names:
        registry.get(n)  # clear error for an unknown name
    if len(names) == 1:
        d = registry.create(names[0])
        _tag(d, names[0])
        return d.set_params(**params)
    if len(set(names)) != len(names):
        raise ParameterError(f"defense chain {spec!r} repeats a step; each step appears once.")
    steps = []
    for n in names:
        d = registry.create(n)
        _tag(d, n)
        steps.append((n, d))
    return Pipeline(steps).set_params(**params)


def _tag(d: Defense, name: str) -> None:
    try:
        d._registry_name = name
    except AttributeError:
        pass


__all__ = ["Defense", "Pipeline", "create", "registry"]
