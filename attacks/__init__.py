"""Reconstruction attacks (protected template -> face), one module each, registered by name.

``nearest``, ``decoder``, ``inverse``, ``optimize``; third-party attacks register
through the entry-point group ``facepii.attacks`` (a class with the
:class:`attacks.base.Attack` contract). Oracle attacks (``--oracle score|decision``,
:class:`attacks.oracle.OracleAttack`) register the same way in ``facepii.oracles``.
"""

import facepii  # noqa: F401,I001  (first: it pins the kernels before numpy and torch load)

from attacks.base import Attack, RowCache, ThreatModel
from attacks.decoder import Decoder
from attacks.inverse import Inverse
from attacks.nearest import Nearest
from attacks.optimize import Optimize
from attacks.oracle import DecisionOracle, OracleAttack, OracleInputs, ScoreOracle
from facepii.registry import attacks as registry
from facepii.registry import oracles as oracle_registry

for _cls in (Nearest, Decoder, Inverse, Optimize):
    registry.register(_cls.registry_name, _cls)
for _cls in (ScoreOracle, DecisionOracle):
    oracle_registry.register(_cls.registry_name, _cls)

DEFAULT_ATTACKS = ["nearest", "inverse", "decoder", "optimize"]


def create(name: str, **params) -> Attack:
    return _named(registry.create(name, **params), name)


def create_oracle(name: str, **params) -> OracleAttack:
    """The oracle attack registered as ``name`` (``--oracle NAME``)."""
    return _named(oracle_registry.create(name, **params), name)


def _named(a, name: str):
    if not getattr(a, "registry_name", None) and "name" not in vars(type(a)):
        a._registry_name = name  # a plug-in is named by its entry point, as a defense is
    return a


__all__ = ["Attack", "DEFAULT_ATTACKS", "OracleAttack", "OracleInputs", "RowCache", "ThreatModel", "create",
           "create_oracle", "oracle_registry", "registry"]
