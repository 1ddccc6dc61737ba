"""Reconstruction attacks (protected template -> face), one module each, registered by name.

``nearest``, ``decoder``, ``inverse``, ``optimize``; third-party attacks register
through the entry-point group ``facepii.attacks`` (a class with the
:class:`attacks.base.Attack` contract).
"""

import facepii  # noqa: F401,I001  (first: it pins the kernels before numpy and torch load)

from attacks.base import Attack, RowCache, ThreatModel
from attacks.decoder import Decoder
from attacks.inverse import Inverse
from attacks.nearest import Nearest
from attacks.optimize import Optimize
from facepii.registry import attacks as registry

for _cls in (Nearest, Decoder, Inverse, Optimize):
    registry.register(_cls.registry_name, _cls)

DEFAULT_ATTACKS = ["nearest", "inverse", "decoder", "optimize"]


def create(name: str, **params) -> Attack:
    a = registry.create(name, **params)
    if not getattr(a, "registry_name", None) and "name" not in vars(type(a)):
        a._registry_name = name  # a plug-in is named by its entry point, as a defense is
    return a


__all__ = ["Attack", "DEFAULT_ATTACKS", "RowCache", "ThreatModel", "create", "registry"]
