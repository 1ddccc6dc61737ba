"""Hostile classes 2, 5, 6: every user error is one line and exit 2 (checked before any long work);
gate exit codes are 0 pass, 1 a rule failed, 2 input error, 3 internal error; Ctrl-C says so."""

import json
import sqlite3

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import run_cli


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "e.npz"
    np.savez(p, embeddings=rng.normal(size=(40, 16)), labels=np.repeat(np.arange(10), 4))
    return p


def one_line_error(code, err, needle=None):
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    if needle:
        assert needle in err, err


@pytest.mark.parametrize("args, needle", [
    (["--param", "sigma=abc", "--defense", "noise"], "must be a number"),
    (["--param", "sigma=inf", "--defense", "noise"], "finite"),
    (["--param", "sigma=nan", "--defense", "noise"], "finite"),
    (["--param", "seed=1.5", "--defense", "noise"], "must be an integer"),
    (["--param", "sigma", "--defense", "noise"], "write KEY=V1,V2"),
    (["--epsilon", "inf"], "finite number > 0"),
    (["--epsilon", "nan"], "finite number > 0"),
    (["--epsilon", "abc"], "expected a number"),
    (["--seed", "-1"], "--seed"),
    (["--bootstrap", "5"], "--bootstrap"),
    (["--no-privacy", "--budget", "huge"], "--budget must be one of"),
    (["--no-privacy", "--knowledge", "grey"], "--knowledge must be white or black"),
    (["--no-privacy", "--key", "maybe"], "--key must be"),
    (["--no-privacy", "--device", "tpu"], "--device must be cpu or cuda"),
    (["--victims", "1"], "--victims"),
    (["--victims", "abc"], "--victims"),
    (["--attack", "nearest,nearest"], "twice"),
    (["--max-identities", "0"], "--max-identities"),
    (["--json", "/dev/full"], "not a regular file"),
    (["--json", "/proc/facepii.json"], "cannot write"),
    (["--out", "/proc/facepii-out"], "cannot write"),
    (["--cache-dir", "/dev/full"], "is a file"),
    (["--no-privacy", "--oracle", "maybe"], "--oracle must be none, decision or score"),
    (["--no-privacy", "--executor", "spark"], "--executor must be local, dask or dask:ADDRESS"),
    (["--no-privacy", "--max-memory", "lots"], "--max-memory"),
    (["--no-privacy", "--max-memory", "1KB"], "--max-memory must be between"),
    (["--no-privacy", "--oracle", "score", "--oracle-queries", "5"], "--oracle-queries"),
    (["--no-privacy", "--max-aux", "1"], "--max-aux must be an integer >= 2"),
    (["--no-privacy", "--max-aux", "many"], "--max-aux"),
])
def test_bad_options_are_one_line(npz, capsys, args, needle):
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz}", *args], capsys)
    one_line_error(code, err, needle)


def test_output_paths_checked_before_the_work(npz, tmp_path, capsys, monkeypatch):
    import facepii.cli

    monkeypatch.setattr(facepii.cli, "run", lambda cfg: pytest.fail("the work started"))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for args, needle in [(["--out", a_file], "is a file"), (["--json", tmp_path], "is a folder"),
                         (["--cache-dir", a_file], "is a file")]:
        code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz}", *args], capsys)
        one_line_error(code, err, needle)
    (tmp_path / "out" / "lineup").mkdir(parents=True)
    (tmp_path / "out" / "lineup" / "mine.txt").write_text("x")
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz}", "--out", tmp_path / "out"], capsys)
    one_line_error(code, err, "no facepii lineup material")
    assert (tmp_path / "out" / "lineup" / "mine.txt").exists()


@pytest.mark.parametrize("how", ["garbage", "foreign"])
def test_broken_or_foreign_cache_is_one_line(npz, tmp_path, capsys, how):
    d = tmp_path / "cache"
    d.mkdir()
    db = d / "facepii-cache.sqlite3"
    if how == "garbage":
        db.write_bytes(b"not a database" * 100)
    else:
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE embeddings (id INTEGER, payload TEXT)")
        con.commit()
        con.close()
    from facepii.cache import Cache, CacheError

    with pytest.raises(CacheError, match="cannot be used"):
        Cache(d)


def test_latin1_identity_list_is_one_line(tmp_path, capsys):
    root = tmp_path / "c"
    (root / "img_celeba").mkdir(parents=True)
    (root / "identity_CelebA.txt").write_bytes("caf\xe9.jpg 1\n".encode("latin-1"))
    code, _, err = run_cli(["evaluate", "-q", "-d", f"celeba:{root}", "--no-privacy"], capsys)
    one_line_error(code, err, "not UTF-8")


# ---------------------------------------------------------------- the gate

GATE = "[gate]\nmax_leakage_ratio = 5.0\n"


def report(rows):
    return {"schema": "facepii.report/1", "dataset": {}, "encoder": {}, "seed": 0, "rows": rows}


def est(v, lo=None, hi=None):
    return {"value": v, "ci95": [lo, hi]}


def gate(tmp_path, capsys, rep, config=GATE, extra=()):
    (tmp_path / "facepii.toml").write_text(config)
    (tmp_path / "r.json").write_text(json.dumps(rep))
    return run_cli(["gate", "-c", tmp_path / "facepii.toml", "--report", tmp_path / "r.json", *extra], capsys)


def priv(**figures):
    """A privacy block of report.json: one attack's figures through the judge dlib."""
    return {"judge": "dlib", "per_attack": {"optimize": figures}}


@pytest.mark.parametrize("rows, code_want, needle", [
    ([{"defense": "none", "params": {}, "privacy": priv(leakage_ratio=est(3.0, 2.0, 4.0))}], 0, "PASS"),
    ([{"defense": "none", "params": {}, "privacy": priv(leakage_ratio=est(3.0, 2.0, 6.0))}], 1, "FAIL"),
    ([{"defense": "none", "params": {}, "privacy": priv(leakage_ratio=est(3.0))}], 1, "no 95% interval"),
    ([{"defense": "none", "params": {}, "privacy": priv(leakage_ratio={"value": None, "ci95": None})}], 1, "FAIL"),
    ([{"defense": "none", "params": {}, "privacy": priv(leakage_ratio=est("3", 1, 2))}], 2, "not a number"),
    ([{"defense": "none", "params": {}, "privacy": priv(leakage_ratio=est(3.0, 4.0, 2.0))}], 2, "not an interval"),
    ([{"defense": "none", "params": {}, "privacy": priv(leakage_ratio=[3.0])}], 2, "not a figure"),
    ([{"defense": "none", "params": {}, "privacy": priv(rank1=est(1.3, 1.2, 1.4))}], 2, "outside [0, 1]"),
    ([{"defense": "none", "params": {}, "privacy": priv(leakage_ratio=est(-3.0, -4.0, 2.0))}], 2, "outside [0, inf]"),
    ([{"defense": "none", "params": {}, "privacy": {"judge": "dlib"}}], 2, "no attack's figures"),
    ([{"defense": "none", "params": {}, "privacy": "lots"}], 2, "privacy: not a table"),
    (["row"], 2, "not a report row"),
    ([{"params": {}}], 2, "not a report row"),
    ([], 2, "has no rows"),
])
def test_gate_exit_codes_on_reports(tmp_path, capsys, rows, code_want, needle):
    code, out, err = gate(tmp_path, capsys, report(rows))
    assert code == code_want, (out, err)
    assert needle in out + err and "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("rule, oracle, code_want, needle", [
    ("min_oracle_queries_to_match = 50", {"kind": "score", "budget_per_victim": 200,
                                         "queries_to_match": {"per_victim": [60, 70, 80, 90] * 5}}, 0, "PASS"),
    ("min_oracle_queries_to_match = 50", {"kind": "score", "budget_per_victim": 200,
                                         "queries_to_match": {"per_victim": [10, 70, 80, 20] * 5}}, 1, "lower bound"),
    # no victim matched within a budget below the rule's value: that shows nothing, it fails
    ("min_oracle_queries_to_match = 500", {"kind": "decision", "budget_per_victim": 200,
                                          "queries_to_match": {"per_victim": [-1] * 8}}, 1, "budget is below"),
    ("min_oracle_queries_to_match = 100", {"kind": "decision", "budget_per_victim": 200,
                                          "queries_to_match": {"per_victim": [-1] * 8}}, 0, "PASS"),
    ("min_oracle_queries_to_match = 100", {"kind": "score"}, 1, "run evaluate with --oracle"),
    ("max_oracle_rank1 = 0.3", None, 1, "and --oracle"),  # no oracle attack in the report
])
def test_oracle_rules(tmp_path, capsys, rule, oracle, code_want, needle):
    row = {"defense": "he", "params": {}}
    if oracle is not None:
        row["privacy_oracle"] = {**priv(rank1=est(0.2, 0.1, 0.3)), "oracle": oracle}
    code, out, err = gate(tmp_path, capsys, report([row]), f"[gate]\n{rule}\n")
    assert code == code_want, (out, err)
    assert needle in out


def test_irreversibility_rules_judge_the_upper_bound(tmp_path, capsys):
    ir = {"per_method": {"learned": {"isr@fmr=1e-3": est(0.3, 0.2, 0.45)}},
          "faces": {"type1": {"sar@fmr=1e-3": est(0.01, 0.0, 0.02)}, "type2": {"sar@fmr=1e-3": est(0.05, 0.01, 0.12)}}}
    row = {"defense": "biohash", "params": {}, "iso30136": {"irreversibility": ir}}
    code, out, _ = gate(tmp_path, capsys, report([row]),
                        "[gate]\nmax_isr = 0.4\nmax_sar_type1 = 0.05\nmax_sar_type2 = 0.1\n")
    assert code == 1
    lines = {ln.split()[2]: ln.split()[0] for ln in out.splitlines() if ln.startswith(("PASS", "FAIL"))}
    assert lines == {"max_isr": "FAIL", "max_sar_type1": "PASS", "max_sar_type2": "FAIL"}


@pytest.mark.parametrize("config, needle", [
    ("[evaluate]\nbootstrap = 0\n" + GATE, "--bootstrap must be an integer >= 100"),
    ("[evaluate]\nbudget = 'huge'\nattacks = []\n" + GATE, "--budget must be one of"),
    ("[evaluate]\nseed = -1\n" + GATE, "--seed"),
    ("gate = 3\n", "[gate] must be a table"),
])
def test_gate_config_errors_exit_2(tmp_path, capsys, config, needle):
    code, _, err = gate(tmp_path, capsys, report([{"defense": "none", "params": {}}]), config)
    one_line_error(code, err, needle)


def test_gate_crash_is_exit_3_not_1(tmp_path, capsys, monkeypatch):
    import facepii.gate

    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(facepii.gate, "run_gate", boom)
    rep = report([{"defense": "none", "params": {}, "privacy": priv(leakage_ratio=est(3.0, 2.0, 4.0))}])
    code, _, err = gate(tmp_path, capsys, rep)
    assert code == 3 and "internal error" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError):
        gate(tmp_path, capsys, rep, extra=["--debug"])


jsonish = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                       max_leaves=12)
figure = st.one_of(jsonish, st.fixed_dictionaries({"value": jsonish, "ci95": jsonish}))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(jsonish, st.fixed_dictionaries(
    {"defense": st.sampled_from(["none", "noise"]), "params": st.one_of(st.just({}), jsonish),
     "privacy": st.one_of(jsonish, st.fixed_dictionaries({"leakage_ratio": figure, "rank1": figure})),
     "utility": st.one_of(jsonish, st.fixed_dictionaries({"tar@far=1e-3": figure}))})), max_size=3))
def test_gate_on_any_report_gives_verdicts_or_a_report_error(rows):
    """Whatever a report file holds, the gate ends in verdicts or one ReportError: never a crash."""
    from facepii.errors import FacepiiError
    from facepii.gate import run_gate
    from facepii.labels import label_of

    rules = {"max_leakage_ratio": 5.0, "max_rank1": 0.5, "max_utility_drop": 0.1,
             "min_tar_at_far": {"far": 1e-3, "value": 0.5}}
    try:
        verdicts = run_gate({"rows": rows}, rules)
    except FacepiiError:
        return
    for v in verdicts:
        assert v.line().startswith("PASS" if v.passed else "FAIL")
        same = [r for r in rows if isinstance(r, dict) and label_of(r) == v.row]
        if v.rule == "max_leakage_ratio" and len(same) == 1:  # passes exactly when the interval's upper end is low
            row = same[0]
            fig = (row.get("privacy") or {}).get("leakage_ratio") or {}
            ci = fig.get("ci95") if isinstance(fig, dict) else None
            well_formed = isinstance(ci, list) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)
            assert v.passed == (well_formed and ci[1] <= 5.0 + 1e-9), (v.line(), fig)


# ---------------------------------------------------------------- lineup files


def test_lineup_answers_of_the_wrong_shape(tmp_path, capsys):
    from facepii.lineup import ANSWERS_SCHEMA
    from facepii.outputs import build_study, write_outputs

    from helpers import fake_evaluation

    write_outputs(fake_evaluation(), tmp_path / "r")
    s = build_study(tmp_path / "r", tmp_path / "s", size=4, trials_per_row=3)
    key = json.loads((tmp_path / "s" / "key.json").read_text())
    t0 = key["trials"][0]["id"]
    cases = [({"answers": "all"}, "must be a list"),
             ({"answers": [{"trial": t0, "choice": 7}]}, "not a lineup position"),
             ({"answers": [{"trial": t0, "choice": -1}]}, "not a lineup position"),
             ({"answers": [{"trial": t0, "choice": True}]}, "not a lineup position"),
             ({"answers": [{"trial": t0, "choice": 1}, {"trial": t0, "choice": 2}]}, "answered twice"),
             ({"answers": ["t001"]}, "unknown trial")]
    for body, needle in cases:
        f = tmp_path / "a.json"
        f.write_text(json.dumps({"schema": ANSWERS_SCHEMA, "study": s["study"], "rater": "r", **body}))
        code, _, err = run_cli(["lineup", "score", tmp_path / "s", f], capsys)
        one_line_error(code, err, needle)
    (tmp_path / "s" / "key.json").write_text(json.dumps({**key, "size": "five"}))
    code, _, err = run_cli(["lineup", "score", tmp_path / "s", f], capsys)
    one_line_error(code, err, "not a facepii lineup key")


# ---------------------------------------------------------------- class 6


def test_ctrl_c_says_interrupted_and_exits_130(npz, capsys, monkeypatch):
    import facepii.cli

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(facepii.cli, "run", interrupted)
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz}", "--no-privacy"], capsys)
    assert code == 130 and "interrupted" in err


def test_version_names_where_the_packages_come_from(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.startswith("facepii ") and "defenses from" in out and "attacks from" in out


# ---------------------------------------------------------------- second round: ranges before the work


@pytest.mark.parametrize("args, needle", [
    (["--defense", "noise", "--param", "sigma=-1"], "sigma must be >= 0"),
    (["--defense", "quantize", "--param", "bits=40"], "bits must be an integer in 1..16"),
    (["--defense", "biohash", "--param", "bits=64"], "bits must be <= the embedding width 16"),
    (["--defense", "projection", "--param", "dim=32", "--param", "kind=orthogonal"], "orthogonal needs dim <= 16"),
    (["--defense", "polyprotect", "--param", "degree=1"], "degree must be an integer >= 2"),
    (["--defense", "he+quantize"], "must be the last step"),
    (["--no-privacy", "--oracle", "score"], "--oracle has no effect without attacks"),
    (["--no-privacy", "--judge", "dlib"], "--judge has no effect without attacks"),
    (["--no-privacy", "--attack", "nearst"], "--attack has no effect with --no-privacy"),
    (["--oracle-queries", "50"], "--oracle-queries without --oracle"),
    (["--knowledge", "white", "--surrogate", "sface"], "tools of a black-box attacker"),
])
def test_every_value_is_checked_before_the_first_photo(npz, capsys, monkeypatch, args, needle):
    import facepii.pipeline

    def no_work(*a, **k):
        raise AssertionError("the work started")

    monkeypatch.setattr(facepii.pipeline, "embed", no_work)
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz}", *args], capsys)
    one_line_error(code, err, needle)


@pytest.mark.parametrize("table, needle", [
    ("max_leakage_ratio = nan", "finite number >= 0"),
    ("max_leakage_ratio = inf", "finite number >= 0"),
    ("max_sar = -0.1", "finite number >= 0"),
    ("min_tar_at_far = { far = 1e-3, value = 1.5 }", "a rate in [0, 1]"),
])
def test_gate_rule_thresholds_must_be_sane(tmp_path, capsys, table, needle):
    code, _, err = gate(tmp_path, capsys, report([{"defense": "none", "params": {}}]), f"[gate]\n{table}\n")
    one_line_error(code, err, needle)


def test_gate_config_takes_max_memory_as_the_cli_does():
    from facepii.gate import check_evaluate

    assert check_evaluate({"max_memory": "4GB", "attacks": []}).validate().data.max_memory == 4 << 30


# ---------------------------------------------------------------- second round: user errors are exit 2


def test_a_report_nested_deep_a_folder_or_of_another_schema_is_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    for target, needle in [(deep, "nested too deeply"), (tmp_path, "is a folder"),
                           (None, "does not read")]:
        if target is None:
            target = tmp_path / "v2.json"
            target.write_text(json.dumps({**report([{"defense": "none", "params": {}}]), "schema": "facepii.report/2"}))
        (tmp_path / "facepii.toml").write_text(GATE)
        code, _, err = run_cli(["gate", "-c", tmp_path / "facepii.toml", "--report", target], capsys)
        one_line_error(code, err, needle)


@pytest.mark.parametrize("privacy, needle", [
    ({**priv(rank1=est(0.5, 0.4, 0.6)), "judges": ["dlib"]}, None),  # derived: recomputed, a list is ignored
    (priv(rank1=est(0.5, 0.4, 0.6), judges=["dlib"]), "judges: not a table"),
    ({"judge": "dlib", "per_attack": {"a": {"rank1": est(0.5, 0.4, 0.6), "judges": {"dlib": {}}},
                                      "b": {"rank1": est(0.2, 0.1, 0.3)}}}, "judged by different judges"),
])
def test_gate_reports_with_wrong_types_in_the_newer_sections(tmp_path, capsys, privacy, needle):
    rows = [{"defense": "none", "params": {}, "privacy": privacy}]
    code, out, err = gate(tmp_path, capsys, report(rows), "[gate]\nmax_rank1 = 0.9\nmax_worst_judge_rank1 = 0.9\n")
    if needle is None:
        assert code == 0, (out, err)
    else:
        one_line_error(code, err, needle)


def test_oracle_queries_of_the_wrong_type_fail_the_rule_not_the_gate(tmp_path, capsys):
    row = {"defense": "he", "params": {},
           "privacy_oracle": {**priv(rank1=est(0.2, 0.1, 0.3)), "oracle": {"queries_to_match": "many"}}}
    code, out, _ = gate(tmp_path, capsys, report([row]), "[gate]\nmin_oracle_queries_to_match = 10\n")
    assert code == 1 and "no oracle queries per victim" in out


def test_the_gate_recomputes_the_worst_judge_and_the_worst_attack(tmp_path, capsys):
    """A report's derived fields are never believed: they follow from the per-attack, per-judge figures."""
    fig = lambda r: {"rank1": est(r, r - 0.1, r + 0.1), "sar@fmr=1e-3": est(0.1, 0.05, 0.2)}  # noqa: E731
    per = {"optimize": {**fig(0.3), "judges": {"dlib": fig(0.3), "onnx:x": fig(0.8)}}}
    privacy = {"judge": "dlib", "attack": "optimize", **fig(0.3), "per_attack": per,
               "judges": {"dlib": {"attack": "optimize", **fig(0.3)}}, "worst_judge": "dlib"}  # a lie: onnx:x is worse
    code, out, _ = gate(tmp_path, capsys, report([{"defense": "none", "params": {}, "privacy": privacy}]),
                        "[gate]\nmax_worst_judge_rank1 = 0.5\n")
    assert code == 1 and "judge onnx:x" in out


def test_a_big_report_is_gated_in_bounded_memory():
    """100,000 victims' queries: the gate's bootstrap of their median runs in blocks (numpy's allocations,
    traced: well under the 800 MB one block of 1,000 x 100,000 draws would take)."""
    import tracemalloc

    from facepii.gate import run_gate

    row = {"defense": "he", "params": {}, "privacy_oracle": {
        **priv(rank1=est(0.2, 0.1, 0.3)),
        "oracle": {"kind": "score", "budget_per_victim": 200_000,
                   "queries_to_match": {"per_victim": list(range(1, 100_001))}}}}
    tracemalloc.start()
    (v,) = run_gate(report([row]), {"min_oracle_queries_to_match": 10})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert v.passed and peak < 300 << 20, peak
