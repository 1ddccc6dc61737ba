"""Two photo folders from a CelebA-layout dataset, for trying ``--attacker-data``: a vendor's own people
(``OUT/ours``: N identities) and an attacker's public set (``OUT/public``: every other identity).

    python benchmarks/vendor_split.py ../shared/datasets/celeba-subset OUT [--ours 50] [--seed 7]
    facepii evaluate --dataset folder:OUT/ours --defense noise --param sigma=0.05 --judge dlib --budget quick
    facepii evaluate --dataset folder:OUT/ours --attacker-data folder:OUT/public --defense noise \\
        --param sigma=0.05 --judge dlib --budget quick

The photos are copied (LFW's layout: one sub-folder per identity); OUT must not exist yet. They are
personal data: keep OUT outside any repository.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("celeba", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--ours", type=int, default=50, help="identities of the vendor's own (default 50)")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    if a.out.exists():
        sys.exit(f"{a.out} exists; give a new folder")
    ids: dict[str, list[str]] = defaultdict(list)
    for line in (a.celeba / "identity_CelebA.txt").read_text().splitlines():
        name, who = line.split()
        if (a.celeba / "img_celeba" / name).is_file():
            ids[who].append(name)
    order = sorted(ids, key=int)
    random.Random(a.seed).shuffle(order)
    if not 2 <= a.ours <= len(order) - 2:
        sys.exit(f"--ours must be in 2..{len(order) - 2}")
    for group, people in (("ours", order[:a.ours]), ("public", order[a.ours:])):
        for who in people:
            (a.out / group / who).mkdir(parents=True)
            for name in ids[who]:
                shutil.copy(a.celeba / "img_celeba" / name, a.out / group / who / name)
        print(f"{a.out / group}: {len(people)} identities, {sum(len(ids[w]) for w in people)} photos")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
