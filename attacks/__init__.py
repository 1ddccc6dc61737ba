"""Reconstruction attacks (embedding template -> face image), registered by name.

Third-party attacks register through the entry-point group ``facepii.attacks``.
"""

from facepii.registry import attacks as registry

__all__ = ["registry"]
