"""The auditor's HTML report: self-contained, and it renders in a real headless Chromium."""

import json
import re

import numpy as np
import pytest

from facepii.browser import find_chromium, screenshot
from facepii.outputs import write_outputs
from facepii.report import Evaluation, Report
from facepii.report.render import page as render

from helpers import make_report


def full_report():
    rep = make_report()
    for r in rep["rows"]:
        r["privacy"]["per_attack"] = {"optimize": {k: r["privacy"][k] for k in ("rank1", "sar@fmr=1e-3")}}
        r["all_params"] = {"mechanism": "gaussian"} if r["defense"] == "noise" else {}
    rep["rows"][1]["epsilon"], rep["rows"][1]["delta"] = 992.0, 1e-5
    rep["rows"][0]["pareto"] = rep["rows"][1]["pareto"] = True
    rep.update({"dataset": {"source": "celeba:x", "n_listed": 10, "n_used": 9, "n_skipped": 1,
                            "skipped": [{"path": "img/<evil>.jpg", "reason": "no face found"}]},
                "encoder": {"name": "sface", "version": "v"}, "seed": 0,
                "threat_model": "The attacker has stolen the protected templates.",
                "split": {"seed": 0, "victims": 5, "auxiliary_identities": 5, "auxiliary_images": 50,
                          "gallery_images": 20},
                "privacy_baselines": {"random_guess_rank1": 0.2},
                "personal_data": "Reconstructions are personal data."})
    return Report.from_dict(rep)


def test_html_is_self_contained_and_complete(tmp_path):
    rep = full_report()
    rng = np.random.default_rng(0)
    recon = {0: rng.integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)}
    faces = rng.integers(0, 255, (3, 112, 112, 3), dtype=np.uint8)
    verdicts = [{"row": "noise sigma=0.05", "rule": "max_sar", "passed": False, "message": "upper bound 0.04 > 0.01"}]
    rep.extra["gate"] = verdicts
    paths = write_outputs(Evaluation(rep, recon, faces, faces, np.array(["a", "b", "c"])), tmp_path)
    names = {p.name for p in paths}
    assert {"report.json", "report.md", "report.html", "tradeoff.png", "reconstructions.png"} <= names
    page = (tmp_path / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2
    for needle in ("Threat model", "The attacker has stolen", "Privacy-utility trade-off", "FAIL",
                   "max_sar", "992", "Skipped photos (1)", "img/&lt;evil&gt;.jpg", "Settings and versions",
                   "personal data"):
        assert needle in page, needle
    assert json.loads((tmp_path / "report.json").read_text())["gate"][0]["rule"] == "max_sar"
    md = (tmp_path / "report.md").read_text()  # a name from the dataset is text in Markdown too, never markup
    assert "img/\\<evil\\>.jpg" in md and "<evil>" not in md


def test_render_utility_only_report():
    rep = full_report()
    for r in rep.rows:
        r.privacy = None
    page = render(rep)
    assert "<h2>Utility</h2>" in page and "Trade-off" not in page


@pytest.mark.skipif(find_chromium() is None, reason="Chromium absent (Debian package chromium); .ci/run installs it")
def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image

    rep = full_report()
    write_outputs(Evaluation(rep), tmp_path)
    png = screenshot(tmp_path / "report.html", tmp_path / "shot.png", height=1400)
    img = np.asarray(Image.open(png).convert("L"))
    assert img.shape[1] == 1280
    # a rendered page: mostly white background with dark text somewhere
    assert (img > 240).mean() > 0.5 and (img < 80).sum() > 500
