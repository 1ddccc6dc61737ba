"""Complete a lineup study in headless Chromium with a face model as a stand-in rater.

    python examples/lineup_machine_rater.py STUDY_DIR [--judge dlib] [--rater machine-dlib] [--out DIR]

Opens STUDY_DIR/index.html from disk in Debian's Chromium (Selenium + chromedriver),
accepts the consent screen, and answers every trial the way a face-recognition model
would: it picks the lineup photo whose embedding is closest to the face shown, or
"can't tell" when no photo is clearly closest. Then it downloads the answers file
through the page's own button, exactly as a person would, and leaves it (and two
screenshots) in --out.

This is a smoke test of the study kit and a machine reference point. Its answers are
NOT evidence about people: score them (`facepii lineup score`) but do not add them to a
report as human figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from facepii.browser import FLAGS, find_chromium
    from facepii.encoders import get_encoder
    from facepii.metrics import comparator

    ap = argparse.ArgumentParser()
    ap.add_argument("study", type=Path)
    ap.add_argument("--judge", default="dlib")
    ap.add_argument("--rater", default=None)
    ap.add_argument("--margin", type=float, default=0.02, help="best minus second-best score below which: can't tell")
    ap.add_argument("--out", type=Path, default=Path("machine-rater"))
    args = ap.parse_args()
    enc = get_encoder(args.judge)
    score = comparator(enc.comparator)
    page = json.loads((args.study / "index.html").read_text().split("const STUDY = ")[1].split(";\n")[0])

    def load(src):
        return np.asarray(Image.open(args.study / src).convert("RGB"))

    args.out.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = find_chromium()
    for f in FLAGS + ["--window-size=1280,1000", f"--user-data-dir={args.out / 'profile'}"]:
        opts.add_argument(f)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior",
                               {"behavior": "allow", "downloadPath": str(args.out.resolve())})
        driver.get((args.study / "index.html").resolve().as_uri())
        driver.find_element(By.ID, "rater").send_keys(args.rater or f"machine-{args.judge}")
        driver.find_element(By.ID, "consent").click()
        driver.find_element(By.ID, "start").click()
        for i, t in enumerate(page["trials"]):
            emb = enc.embed(np.stack([load(t["probe"])] + [load(o) for o in t["options"]]))
            s = score(emb[:1], emb[1:])[0]
            best = np.argsort(-s)
            if i == 0:
                driver.save_screenshot(str(args.out / "trial.png"))
            if s[best[0]] - s[best[1]] < args.margin:
                driver.find_element(By.ID, "cant").click()
            else:
                driver.find_elements(By.CSS_SELECTOR, ".opt")[int(best[0])].click()
        driver.find_element(By.ID, "download").click()
        deadline = time.time() + 30
        while time.time() < deadline and not list(args.out.glob("answers-*.json")):
            time.sleep(0.2)
        driver.save_screenshot(str(args.out / "done.png"))
    finally:
        driver.quit()
        shutil.rmtree(args.out / "profile", ignore_errors=True)
    files = list(args.out.glob("answers-*.json"))
    print(f"answers: {files[0] if files else 'NOT downloaded'}")


if __name__ == "__main__":
    main()
