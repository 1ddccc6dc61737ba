"""Run the facepii CLI in-process, as a shell would (exit code, stdout, stderr)."""

from __future__ import annotations

import sys


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from facepii.cli import main

    old = sys.argv
    sys.argv = ["facepii", *[str(a) for a in args]]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
