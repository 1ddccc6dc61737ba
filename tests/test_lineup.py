"""Lineup study kit: construction, scoring against hand-made answers, and the page in a real browser."""

import json

import pytest

from facepii import lineup as L
from facepii.browser import find_chromium
from facepii.errors import FacepiiError, ParameterError
from facepii.outputs import add_human_figures, build_study

from helpers import fake_evaluation

N_VICTIMS = 8


@pytest.fixture
def report_dir(tmp_path):
    d = tmp_path / "report"
    from facepii.outputs import write_material

    write_material(fake_evaluation(), d)
    (d / "report.json").write_text(fake_evaluation().report.to_json())
    return d


def test_material_holds_no_source_photo(report_dir):
    m = json.loads((report_dir / "lineup/manifest.json").read_text())
    files = {p.relative_to(report_dir / "lineup").as_posix() for p in (report_dir / "lineup").rglob("*.png")}
    assert files == {f for g in m["gallery"] for f in g} | {f for r in m["rows"] for f in r["files"]}
    assert [r["label"] for r in m["rows"]] == ["none", "noise sigma=0.1"]


def test_lineups_are_built_right_and_seeded(report_dir):
    m = json.loads((report_dir / "lineup/manifest.json").read_text())
    owner = {f: v for v, g in zip(m["victims"], m["gallery"]) for f in g}
    trials = L.make_trials(m, size=4, trials_per_row=6, seed=3)
    assert sum(t.attention for t in trials) == 2 and len(trials) == 14
    for t in trials:
        assert len(t.options) == 4 and len(set(t.options)) == 4
        owners = [owner[o] for o in t.options]
        assert owners.count(t.victim) == 1 and owners[t.answer] == t.victim  # genuine present once
        assert len(set(owners)) == 4  # impostors are other victims
        if t.attention:
            assert t.probe in owner and owner[t.probe] == t.victim
        else:
            assert t.probe.startswith("recon/") and t.probe not in owner  # a reconstruction, never a photo
    again = L.make_trials(m, size=4, trials_per_row=6, seed=3)
    assert [t.__dict__ for t in again] == [t.__dict__ for t in trials]
    other = L.make_trials(m, size=4, trials_per_row=6, seed=4)
    assert [t.__dict__ for t in other] != [t.__dict__ for t in trials]
    rows = [t.row for t in trials if not t.attention]
    assert rows != sorted(rows)  # interleaved, not row after row


def test_build_study_files_and_errors(report_dir, tmp_path):
    s = build_study(report_dir, tmp_path / "study", size=4, trials_per_row=5, seed=1)
    study = tmp_path / "study"
    page = (study / "index.html").read_text()
    key = json.loads((study / "key.json").read_text())
    assert s["trials"] == len(key["trials"]) == 12
    assert "http" not in page.split("<script>")[1]  # no network
    assert "none" not in json.dumps(json.loads(page.split("const STUDY = ")[1].split(";\n")[0]))  # no row names
    assert all(p.name.startswith("img_") for p in (study / "assets").iterdir())
    import zipfile

    names = zipfile.ZipFile(study / "share.zip").namelist()
    assert "study/index.html" in names and not any("key" in n for n in names)
    with pytest.raises(FacepiiError, match="already there"):
        build_study(report_dir, study)
    with pytest.raises(ParameterError, match="only 8 victims"):
        build_study(report_dir, tmp_path / "s2", size=9)
    with pytest.raises(FacepiiError, match="no lineup material"):
        build_study(tmp_path, tmp_path / "s3")


def answers_file(path, study, rater, choices):
    path.write_text(json.dumps({"schema": L.ANSWERS_SCHEMA, "study": study, "rater": rater,
                                "answers": [{"trial": t, "choice": c, "ms": 900} for t, c in choices.items()]}))
    return path


def test_scoring_hand_made_answers(report_dir, tmp_path):
    build_study(report_dir, tmp_path / "study", size=4, trials_per_row=6, seed=2)
    key = json.loads((tmp_path / "study/key.json").read_text())
    trials = key["trials"]
    none_t = [t for t in trials if t["row"] == "none"]
    noise_t = [t for t in trials if t["row"] == "noise sigma=0.1"]
    att = [t for t in trials if t["attention"]]
    good = {t["id"]: t["answer"] for t in att}
    good.update({t["id"]: t["answer"] for t in none_t[:3]})                     # 3 right
    good.update({t["id"]: (t["answer"] + 1) % 4 for t in none_t[3:5]})          # 2 wrong
    good.update({none_t[5]["id"]: "cant_tell"})                                  # 1 can't tell
    good.update({t["id"]: "cant_tell" for t in noise_t})
    careless = {t["id"]: (t["answer"] + 1) % 4 for t in trials}                  # fails attention checks
    a = answers_file(tmp_path / "a.json", key["study"], "r1", good)
    b = answers_file(tmp_path / "b.json", key["study"], "r2", careless)
    res = L.score_study(tmp_path / "study", [a, b], n_boot=300)
    assert res["raters"] == 2 and res["raters_kept"] == 1 and res["raters_excluded"][0]["rater"] == "r2"
    rows = {r["row"]: r for r in res["rows"]}
    none = rows["none"]
    assert none["responses"] == 6 and none["chance"] == 0.25
    assert none["accuracy"]["value"] == pytest.approx((3 + 0.25) / 6)
    assert none["cant_tell_rate"] == pytest.approx(1 / 6)
    assert none["accuracy_when_answered"] == pytest.approx(3 / 5)
    lo, hi = none["accuracy"]["ci95"]
    assert lo <= none["accuracy"]["value"] <= hi and hi - lo > 0
    assert rows["noise sigma=0.1"]["accuracy"]["value"] == pytest.approx(0.25)  # all "can't tell" = chance
    assert rows["attention check"]["accuracy"]["value"] == 1.0
    # both raters counted when attention is not required
    assert L.score_study(tmp_path / "study", [a, b], min_attention=0.0, n_boot=100)["raters_kept"] == 2


def test_scoring_errors_and_report_update(report_dir, tmp_path):
    build_study(report_dir, tmp_path / "study", size=3, trials_per_row=4, seed=0)
    key = json.loads((tmp_path / "study/key.json").read_text())
    bad = answers_file(tmp_path / "x.json", "another-study", "r", {})
    with pytest.raises(FacepiiError, match="not this study"):
        L.score_study(tmp_path / "study", [bad])
    ok = answers_file(tmp_path / "ok.json", key["study"], "r", {t["id"]: t["answer"] for t in key["trials"]})
    res = L.score_study(tmp_path / "study", [ok], n_boot=100)
    add_human_figures(res, report_dir)
    rep = json.loads((report_dir / "report.json").read_text())
    assert rep["rows"][0]["privacy"]["human"]["accuracy"]["value"] == 1.0
    assert "human top-1" in (report_dir / "report.md").read_text()


@pytest.mark.skipif(find_chromium() is None or not __import__("shutil").which("chromedriver"),
                    reason="Chromium/ChromeDriver absent (Debian packages chromium, chromium-driver); "
                           ".ci/run installs them")
def test_study_page_in_headless_chromium(report_dir, tmp_path):
    pytest.importorskip("selenium", reason="selenium not installed (pip install 'facepii[test]')")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from facepii.browser import FLAGS

    study = tmp_path / "study"
    build_study(report_dir, study, size=4, trials_per_row=4, seed=5)
    key = json.loads((study / "key.json").read_text())
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = find_chromium()
    for f in FLAGS + ["--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}"]:
        opts.add_argument(f)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(__import__("shutil").which("chromedriver")), options=opts)
    try:
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.get((study / "index.html").as_uri())
        assert "real people" in driver.page_source
        assert driver.find_element(By.ID, "start").get_attribute("disabled")
        driver.find_element(By.ID, "rater").send_keys("tester-1")
        driver.find_element(By.ID, "consent").click()
        driver.find_element(By.ID, "start").click()
        for i, t in enumerate(key["trials"]):
            assert f"Question {i + 1} of {len(key['trials'])}" in driver.find_element(By.ID, "progress").text
            if i == 0:
                driver.save_screenshot(str(tmp_path / "trial.png"))
            if t["attention"] or i % 2 == 0:
                driver.find_elements(By.CSS_SELECTOR, ".opt")[t["answer"]].click()
            else:
                driver.find_element(By.ID, "cant").click()
        # the page hands its answers to the browser as a Blob: keep that Blob (no waiting on the download folder)
        driver.execute_script("const make = URL.createObjectURL; window.__blobs = [];"
                              "URL.createObjectURL = (b) => { window.__blobs.push(b); return make(b); };")
        driver.find_element(By.ID, "download").click()
        saved = driver.find_element(By.ID, "saved").text
        text = driver.execute_async_script("const done = arguments[arguments.length - 1];"
                                           "window.__blobs[0].text().then(done);")
        driver.save_screenshot(str(tmp_path / "done.png"))
    finally:
        driver.quit()
    assert saved.startswith("Saved as answers-tester-1-") and saved.endswith(".json")
    files = [downloads / saved.removeprefix("Saved as ")]
    files[0].write_text(text)  # what the rater's browser saves under that name
    data = json.loads(files[0].read_text())
    assert data["rater"] == "tester-1" and len(data["answers"]) == len(key["trials"])
    res = L.score_study(study, files, n_boot=100)
    assert res["raters_kept"] == 1
    n = {r["row"]: r for r in res["rows"]}
    assert n["attention check"]["accuracy"]["value"] == 1.0
    assert (tmp_path / "trial.png").stat().st_size > 10_000
