"""Evaluate from Python and read the Report.

    python examples/python_api.py [DATASET]     (default: the shared CelebA subset)

A small, quick run: 60 identities (30 victims), noise at two levels, two attacks. The tests run it
(tests/test_examples.py).
"""

import sys

from facepii.config import EvaluateConfig
from facepii.outputs import write_json
from facepii.pipeline import run
from facepii.report import render

dataset = sys.argv[1] if len(sys.argv) > 1 else "celeba:../shared/datasets/celeba-subset"
# the same option names as the CLI's (and the gate's [evaluate] table)
cfg = EvaluateConfig.from_options(dataset=dataset, encoder="sface", defenses=["noise"], params={"sigma": [0.05, 0.2]},
                                  attacks=["nearest", "decoder"], budget="quick", max_identities=60, seed=0)
evaluation = run(cfg)
report = evaluation.report

print(render.text(report))  # what `facepii evaluate` prints
for row in report.rows:  # typed estimates: facepii.estimates.RowEstimates
    tar = row.utility.tar_1e3
    worst = row.privacy.headline  # the worst attack's figures through the headline judge
    print(f"{row.label:16}: TAR@1e-3 {tar.value:.3f}, rank-1 re-identification {worst.rank1.value:.2f} "
          f"(x{worst.leakage_ratio.value:.1f} random, interval {worst.leakage_ratio.ci95}), "
          f"worst attack {row.privacy.attack}")
write_json(report, "python-api-report.json")
print("threat model:", report.extra["threat_model"][:120], "...")
