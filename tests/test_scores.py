"""Score files and DET curves: what an auditor re-checks with bob.measure, pyeer or scikit-learn.

The round trip: the files under --out DIR/scores/ are read back with plain csv parsing, and the
report's TAR@FMR 1e-3, EER, rank-1 and SAR are recomputed from them with this file's own code and
with scikit-learn; they must equal the report's figures (every pair written: --scores all)."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from facepii import metrics
from facepii import scores as S
from facepii.errors import ReportError
from facepii.estimates import RowEstimates
from facepii.metrics._verification import det_curve
from facepii.readback import det_from

from helpers import embeddings_npz, run_cli


def _rows(text: str) -> list[dict]:
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


def _four_column(text: str) -> list[tuple[str, str, str, float]]:
    """bob.measure.load.four_column's reading: skip empty and # lines, split on whitespace."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        a, b, c, d = s.split()
        out.append((a, b, c, float(d)))
    return out


# ------------------------------------------------------------- own recomputation (no facepii code)


def _above(sorted_scores: np.ndarray, t: np.ndarray, strict: bool) -> np.ndarray:
    return len(sorted_scores) - np.searchsorted(sorted_scores, t, side="right" if strict else "left")


def own_tar_at_fmr(gen: np.ndarray, imp: np.ndarray, fmr: float) -> float:
    """Highest TAR over thresholds t (every impostor score, and minus infinity) with
    #{imp > t} / n_imp <= fmr, accepting when score > t."""
    i, g = np.sort(imp), np.sort(gen)
    ts = np.r_[-np.inf, np.unique(i)]
    ok = _above(i, ts, strict=True) / len(i) <= fmr
    return float((_above(g, ts[ok], strict=True) / len(g)).max())


def own_eer(gen: np.ndarray, imp: np.ndarray) -> float:
    """(FAR + FRR) / 2 where |FAR - FRR| is smallest, over thresholds at every score and just above
    every impostor score (accept when score >= t)."""
    i, g = np.sort(imp), np.sort(gen)
    ts = np.unique(np.concatenate([gen, imp, np.nextafter(imp, np.inf)]))
    far = _above(i, ts, strict=False) / len(i)
    frr = 1 - _above(g, ts, strict=False) / len(g)
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2)


def sklearn_tar_at_fmr(gen: np.ndarray, imp: np.ndarray, fmr: float) -> float:
    y = np.r_[np.ones(len(gen)), np.zeros(len(imp))]
    fpr, tpr, _ = roc_curve(y, np.r_[gen, imp].astype(np.float64), drop_intermediate=False)
    return float(tpr[fpr <= fmr].max())


def sklearn_eer(gen: np.ndarray, imp: np.ndarray) -> float:
    y = np.r_[np.ones(len(gen)), np.zeros(len(imp))]
    fpr, tpr, _ = roc_curve(y, np.r_[gen, imp].astype(np.float64), drop_intermediate=False)
    k = int(np.argmin(np.abs(fpr - (1 - tpr))))
    return float((fpr[k] + 1 - tpr[k]) / 2)


def _templates(n_ids=12, per=5, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, d))
    E = np.repeat(centres, per, axis=0) + 0.9 * rng.normal(size=(n_ids * per, d))
    labels = np.repeat([f"id {i}" for i in range(n_ids)], per)  # a space: the four-column file escapes it
    return E.astype(np.float32), labels


def test_utility_files_give_back_the_figures_with_own_code_and_sklearn():
    E, labels = _templates()
    v = metrics.verification(E, labels, metrics.cosine_similarity, n_boot=100)
    ps = S.utility_pairs(E, labels, metrics.cosine_similarity, S.ALL, 0, how="cosine")
    items = S.Items([f"photo {i}.png" for i in range(len(labels))], labels)
    rows = _rows(S.utility_csv(ps, items, "test"))
    assert len(rows) == v["n_genuine"] + v["n_impostor"]
    assert all((r["probe_identity"] == r["reference_identity"]) == (r["genuine"] == "1") for r in rows)
    sc = np.array([np.float32(r["score"]) for r in rows])
    g = np.array([r["genuine"] == "1" for r in rows])
    gen, imp = sc[g], sc[~g]
    assert own_tar_at_fmr(gen, imp, 1e-2) == sklearn_tar_at_fmr(gen, imp, 1e-2) == v["tar@far=1e-2"].value
    assert own_eer(gen, imp) == pytest.approx(v["eer"].value, abs=1e-12)
    # scikit-learn's ROC accepts at >= t: its EER point can sit one impostor step away (1 / n_imp)
    assert sklearn_eer(gen, imp) == pytest.approx(v["eer"].value, abs=1.0 / len(imp) + 1e-12)
    four = _four_column(S.four_column(ps, items, "test"))
    assert [x[3] for x in four] == [float(r["score"]) for r in rows]
    assert all((a == b) == (r["genuine"] == "1") for (a, b, _, _), r in zip(four, rows))
    assert four[0][0].startswith("id%200") and four[0][2] == "photo%200.png"


def test_names_with_a_hash_or_a_carriage_return_keep_every_pair():
    """A photo or identity named with # (pandas' comment='#' cuts a line there; bob.measure skips a line that
    starts with it) or a carriage return (a line break to most readers) is percent-encoded: the readers the
    headers recommend get every pair back, whole."""
    import io

    E, _ = _templates(n_ids=4, per=3)
    labels = np.repeat(["#lead", "mid#dle", "cr\rname", "100%"], 3)
    ps = S.utility_pairs(E, labels, metrics.cosine_similarity, S.ALL, 0)
    items = S.Items([f"#{i}\r.png" for i in range(len(labels))], labels)
    n = len(ps.score)
    text = S.utility_csv(ps, items, "t")
    # pandas' read_csv(comment='#') reading, without pandas: a line ends at \r or \n, and at its first #
    lines = [ln.split("#", 1)[0] for ln in re.split(r"\r\n|\r|\n", text)]
    df = list(csv.DictReader(io.StringIO("\n".join(ln for ln in lines if ln.strip()))))
    assert len(df) == n and all(r["score"] and r["genuine"] in ("0", "1") for r in df)
    assert {r["probe_identity"] for r in df} == {"%23lead", "mid%23dle", "cr%0Dname", "100%25"}
    assert len(_rows(text)) == n
    four = _four_column(S.four_column(ps, items, "t"))
    assert len(four) == n and all(not a.startswith("#") for a, _, _, _ in four)


def test_a_sampled_file_says_so_and_is_seeded():
    E, labels = _templates(n_ids=30, per=4)
    a = S.utility_pairs(E, labels, metrics.cosine_similarity, 500, 3)
    b = S.utility_pairs(E, labels, metrics.cosine_similarity, 500, 3)
    assert a.sampled and a.sample_seed == 3 and int((~a.genuine).sum()) == 500
    assert np.array_equal(a.reference, b.reference) and np.array_equal(a.score, b.score)
    text = S.utility_csv(a, S.Items([str(i) for i in range(len(labels))], labels), "t")
    assert "a seeded uniform sample (seed 3)" in text and "--scores all" in text
    full = S.utility_pairs(E, labels, metrics.cosine_similarity, 10 ** 9, 3)
    assert not full.sampled and int((~full.genuine).sum()) == full.impostor_total
    assert "figures recomputed from this file equal the report's" in full.header()[1]


def test_det_points_lie_on_sklearns_roc_and_mark_the_operating_points():
    E, labels = _templates(n_ids=40, per=5)
    gen, imp = metrics.pair_scores(E, labels, metrics.cosine_similarity)
    d = det_curve(np.sort(gen), np.sort(imp))
    y = np.r_[np.ones(len(gen)), np.zeros(len(imp))]
    fpr, tpr, _ = roc_curve(y, np.r_[gen, imp].astype(np.float64), drop_intermediate=False)
    roc = set(zip(np.round(fpr, 12), np.round(1 - tpr, 12)))
    pts = list(zip(np.round(d["fmr"], 12), np.round(d["fnmr"], 12)))
    assert 50 < len(pts) <= S_DET_MAX and all(p in roc for p in pts)
    assert all(np.diff(d["fmr"]) <= 0) and all(np.diff(d["fnmr"]) >= 0)  # thresholds ascend
    for op in d["operating_points"].values():
        tar = metrics.tar_at_far(gen, imp, op["far"])
        assert op["fnmr"] == pytest.approx(1 - tar, abs=1e-15) and op["fmr_reached"] <= op["far"]
        assert op["impostor_pairs"] == len(imp) and op["supported"] == (op["far"] * len(imp) >= 3)


S_DET_MAX = 200


def test_det_is_read_back_checked():
    ok = {"fmr": [0.5, 0.1], "fnmr": [0.01, 0.2], "operating_points": {
        "tar@far=1e-2": {"far": 0.01, "fmr_reached": 0.009, "fnmr": 0.2, "impostor_pairs": 1000}}}
    assert det_from(ok, "r") == ok
    for bad, needle in [({"fmr": [0.5], "fnmr": [0.1, 0.2]}, "equal length"),
                        ({"fmr": [1.5], "fnmr": [0.1]}, "rate in"),
                        ({"fmr": ["x"], "fnmr": [0.1]}, "rate in"),
                        ({"fmr": [], "fnmr": [], "operating_points": {"a": {"far": 2}}}, "not a rate"),
                        ([1, 2], "not a DET curve")]:
        with pytest.raises(ReportError, match=needle):
            det_from(bad, "r")
    op = ok["operating_points"]["tar@far=1e-2"]
    for key, value, needle in (("threshold", "abc", "not a number"), ("supported", "no", "not true or false"),
                               ("impostor_pairs", True, "not a count")):
        with pytest.raises(ReportError, match=needle):
            det_from({**ok, "operating_points": {"tar@far=1e-2": {**op, key: value}}}, "r")
    # a null threshold (as a writer may leave an unsupported point) reads back and renders as n/a
    from facepii.report import Report
    from facepii.report.system_tables import det_table

    null = {**ok, "operating_points": {"tar@far=1e-2": {**op, "threshold": None, "supported": False}}}
    assert det_from(null, "r") == null
    rep = Report(dataset={}, encoder={}, seed=0, rows=[RowEstimates.from_dict(
        {"defense": "none", "params": {}, "utility": {}, "det": null}, "rows[0]")])
    (row,) = det_table(rep)[1]
    assert row[3] == "n/a" and row[5] == "n/a" and row[7].startswith("no")
    row = RowEstimates.from_dict({"defense": "none", "params": {}, "utility": {}, "det": ok}, "rows[0]")
    assert row.det == ok and row.to_dict()["det"] == ok


# ------------------------------------------------------------- the whole run, real faces


@pytest.fixture(scope="module")
def scored_run(celeba, session_cache, tmp_path_factory):
    from typer.testing import CliRunner

    from facepii.cli import app

    out = tmp_path_factory.mktemp("scored") / "out"
    args = ["evaluate", "-q", "--dataset", f"celeba:{celeba}", "--max-identities", "20", "--encoder", "sface",
            "--defense", "noise", "--param", "sigma=0.05", "--attack", "nearest", "--budget", "quick",
            "--victims", "8", "--judge", "dlib", "--scores", "all", "--bootstrap", "200",
            "--templates-per-victim", "1,2", "--cache-dir", str(session_cache), "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.integration
def test_the_reports_figures_come_back_from_its_score_files(scored_run):
    out, rep = scored_run
    index = json.loads((out / "scores" / "index.json").read_text())
    assert (out / "det.png").stat().st_size > 10_000
    assert len(rep["rows"]) == 2
    for n, row in enumerate(rep["rows"]):
        stem = S.file_stem(n, S_label(row))
        entry = next(f for f in index["files"] if f["file"] == f"{stem}.csv")
        assert not entry["impostor_sampled"] and entry["impostor_pairs"] == row["pairs"]["impostor"]
        rows = _rows((out / "scores" / f"{stem}.csv").read_text())
        sc = np.array([np.float32(r["score"]) for r in rows])
        g = np.array([r["genuine"] == "1" for r in rows])
        gen, imp = sc[g], sc[~g]
        assert len(gen) == row["pairs"]["genuine"] and len(imp) == row["pairs"]["impostor"]
        u = row["utility"]
        assert sklearn_tar_at_fmr(gen, imp, 1e-3) == u["tar@far=1e-3"]["value"]
        assert metrics.tar_at_far(gen, imp, 1e-3) == u["tar@far=1e-3"]["value"]
        assert own_eer(gen, imp) == pytest.approx(u["eer"]["value"], abs=1e-12)
        four = _four_column((out / "scores" / f"{stem}.4col").read_text())
        assert len(four) == len(rows) and sum(a == b for a, b, _, _ in four) == len(gen)
        op = row["det"]["operating_points"]["tar@far=1e-3"]
        assert op["fnmr"] == pytest.approx(1 - u["tar@far=1e-3"]["value"], abs=1e-12)

        # the judges' scores: rank-1 and SAR of every attack and judge, as the report has them
        jrows = _rows((out / "scores" / f"{stem}.judges.csv").read_text())
        assert _judged_again(jrows, row["privacy"]["per_attack"], rep["encoder"]["name"]) >= 2
        # with 2 stolen templates per victim (--templates-per-victim 1,2): the same, from their own lines
        assert _judged_again(jrows, row["privacy_templates_per_victim"]["2"]["per_attack"], rep["encoder"]["name"],
                             " (2 templates per victim)") >= 2


def _judged_again(jrows: list[dict], figs: dict, target: str, scenario: str = "") -> int:
    """Every attack's rank-1 and SAR for dlib and the target as judge, recomputed from the judges.csv lines,
    equal to the report's; returns how many were checked."""
    checked = 0
    for attack, f in figs.items():
        for judge, want in (("dlib", f), (target, f["target_judge"])):
            mine = [r for r in jrows if r["attack"] == attack + scenario and r["judge"] == judge]
            assert mine, (attack, judge)
            thr = np.float32(mine[0]["threshold"])
            rank1, sar = [], []
            for probe in dict.fromkeys(r["probe"] for r in mine):
                pr = [r for r in mine if r["probe"] == probe]
                gs = np.array([np.float32(r["score"]) for r in pr if r["genuine"] == "1"])
                others = np.array([np.float32(r["score"]) for r in pr if r["genuine"] == "0"])
                rank1.append(float(gs.max() > others.max()))
                sar.append(float(np.mean(gs >= thr)))
            assert np.mean(rank1) == pytest.approx(want["rank1"]["value"], abs=1e-12)
            assert np.mean(sar) == pytest.approx(want["sar@fmr=1e-3"]["value"], abs=1e-12)
            checked += 1
    return checked


@pytest.mark.integration
def test_several_stolen_templates_per_victim_in_the_report(scored_run):
    from facepii.report import Report

    out, rep = scored_run
    assert rep["settings"]["templates_per_victim"] == [1, 2]
    assert rep["split"]["templates_per_victim_max"] == 2 and rep["split"]["source_images"] == 16
    for row in rep["rows"]:
        two = row["privacy_templates_per_victim"]["2"]
        assert set(two["per_attack"]) == set(row["privacy"]["per_attack"])
        assert two["rank1"]["ci95"][0] <= two["rank1"]["value"] <= two["rank1"]["ci95"][1]
    assert (out / "templates.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "## Several stolen templates per victim" in md and "K=2: rank-1" in md
    back = Report.from_json(out / "report.json")
    assert back.templates_ks == [1, 2] and back.to_dict()["rows"] == rep["rows"]


def S_label(row: dict) -> str:
    from facepii.labels import row_label

    return row_label(row["defense"], row["params"])


@pytest.mark.integration
def test_a_report_read_back_redraws_det_and_leaves_the_score_files(scored_run, tmp_path):
    import shutil

    from facepii.outputs import write_outputs
    from facepii.report import Evaluation, Report

    out, _ = scored_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p.name: p.read_bytes() for p in (copy / "scores").iterdir()}
    (copy / "det.png").unlink()
    write_outputs(Evaluation(Report.from_json(copy / "report.json")), copy)
    assert (copy / "det.png").is_file()
    assert {p.name: p.read_bytes() for p in (copy / "scores").iterdir()} == before
    assert "DET curves and operating points" in (copy / "report.md").read_text()


def test_score_folder_safety(tmp_path):
    """Only files facepii can recognise as its own are ever listed for removal: named in an index it wrote AND
    with the content that index recorded (or, an index of an earlier version, its header line); an index it
    did not write, or anything but plain files in scores/, ends the run before the work."""
    import hashlib

    from facepii.outputs import OutputError, check_out_dir, own_score_files

    out = tmp_path / "out"
    scores = out / "scores"
    scores.mkdir(parents=True)
    (scores / "mine.txt").write_text("not facepii's")
    (scores / "00-none.csv").write_text("# facepii none: protected-vs-protected verification\n")
    (scores / "01-noise.csv").write_text("the user's own notes")
    digest = hashlib.sha256((scores / "00-none.csv").read_bytes()).hexdigest()
    index = {"schema": "facepii.scores/1", "files": [{"file": "00-none.csv", "sha256": digest},
                                                     {"file": "mine.txt", "sha256": "0" * 64},
                                                     {"file": "01-noise.csv"}]}
    (scores / "index.json").write_text(json.dumps(index))
    listed = own_score_files(scores)
    # mine.txt is listed but its content is not what facepii recorded; 01-noise.csv lacks facepii's header
    assert sorted(p.name for p in listed) == ["00-none.csv", "index.json"]
    check_out_dir(out)
    (scores / "00-none.csv").write_text("changed by the user")
    assert sorted(p.name for p in own_score_files(scores)) == ["index.json"]
    for bad in ({"files": 5}, {"files": None}, {"files": [{"file": "../../etc/passwd"}]}, [1, 2],
                {"schema": "facepii.scores/1", "files": [{"file": "a/b.csv"}]}):
        (scores / "index.json").write_text(json.dumps(bad))
        with pytest.raises(OutputError, match="not a score index facepii wrote"):
            check_out_dir(out)
    (scores / "index.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(OutputError, match="nested too deeply"):
        check_out_dir(out)
    (scores / "index.json").unlink()
    (scores / "00-none.csv").unlink()
    (scores / "00-none.csv").mkdir()  # a folder where a score file goes: refused before the work
    with pytest.raises(OutputError, match="a folder"):
        check_out_dir(out)
    (scores / "00-none.csv").rmdir()
    (scores / "00-none.csv").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="link"):
        check_out_dir(out)
    link = tmp_path / "o2"
    link.mkdir()
    (link / "scores").symlink_to(tmp_path)
    with pytest.raises(OutputError, match="not a plain folder"):
        check_out_dir(link)


def _npz(tmp_path):
    return embeddings_npz(tmp_path / "emb.npz", n_ids=20, dim=32)


def test_no_stale_score_files_and_no_users_file_removed(tmp_path, capsys):
    """A second run into the same --out with fewer rows, then with --scores none, leaves no score file of an
    earlier run beside the new report; a file of the user's in scores/ is never removed, and the run says it
    is not this report's."""
    npz, out = _npz(tmp_path), tmp_path / "out"
    base = ["evaluate", "-q", "-d", f"embeddings:{npz}", "--bootstrap", "100", "--out", str(out)]
    code, _, err = run_cli([*base, "--defense", "none,noise"], capsys)
    assert code == 0, err
    first = sorted(p.name for p in (out / "scores").iterdir())
    assert any(n.startswith("01-noise") for n in first)
    (out / "scores" / "mine.txt").write_text("the user's")
    code, _, err = run_cli([*base, "--defense", "none"], capsys)
    assert code == 0, err
    left = sorted(p.name for p in (out / "scores").iterdir())
    assert not any(n.startswith("01-") for n in left) and "mine.txt" in left and "00-none.csv" in left
    assert "mine.txt" in err and "not of this report" in err
    index = json.loads((out / "scores" / "index.json").read_text())
    assert {f["file"] for f in index["files"]} == {n for n in left if n not in ("index.json", "mine.txt")}
    code, _, err = run_cli([*base, "--defense", "none", "--scores", "none"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "scores").iterdir()) == ["mine.txt"]
    assert (out / "scores" / "mine.txt").read_text() == "the user's"


def test_output_names_one_run_writes_twice_are_refused(tmp_path, capsys):
    npz, out = _npz(tmp_path), tmp_path / "out"
    for j in (out / "scores" / "index.json", out / "report.md", out / "lineup" / "key.json"):
        code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz}", "--out", str(out), "--json", str(j)],
                               capsys)
        assert code == 2 and "--json" in err and "same run writes" in err
    assert not out.exists()  # refused before anything was written


def test_scores_option(tmp_path, capsys):
    from facepii.errors import ParameterError
    from facepii.option_text import parse_scores

    assert parse_scores("all") == S.ALL and parse_scores("none") == 0 and parse_scores("1e5") == 100_000
    assert parse_scores("250,000") == 250_000
    assert parse_scores("2.5e3") == 2_500
    for bad in ("-3", "lots", "0.5", "1.9", "1e400", "1e", "nan", "inf", "9" * 40):
        with pytest.raises(ParameterError, match="--scores"):
            parse_scores(bad)
    code, _, err = run_cli(["evaluate", "--scores", "lots", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--scores" in err
    code, _, err = run_cli(["evaluate", "--scores", "1e400"], capsys)  # checked without --out too
    assert code == 2 and "--scores" in err
