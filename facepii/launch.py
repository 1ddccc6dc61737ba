"""The ``facepii`` command's entry point: settles the kernels' level before anything numeric loads.

``import facepii`` has pinned the level (:mod:`facepii.kernels`); ``--fast-kernels`` anywhere on the
command line undoes the pin here, while numpy and torch are still unloaded, then the CLI starts.
"""

from __future__ import annotations

import sys

from facepii import kernels

FAST_FLAG = "--fast-kernels"


def main() -> None:
    if FAST_FLAG in sys.argv[1:]:
        kernels.unpin()
    from facepii.cli import main as cli_main

    cli_main()


if __name__ == "__main__":  # pragma: no cover
    main()
