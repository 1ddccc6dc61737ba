import json
from xml.etree import ElementTree as ET

import pytest

from facepii import gate as g
from facepii.errors import ConfigError

from helpers import make_report, run_cli


def est(v, lo, hi):
    return {"value": v, "ci95": [lo, hi]}


def verdict(rule, threshold, **kw):
    vs = g.run_gate(make_report(**kw), {rule: threshold})
    assert len(vs) == 1 and vs[0].row == "noise sigma=0.05"
    return vs[0]


@pytest.mark.parametrize("rule, ok, bad", [
    ("max_leakage_ratio", 8.0, 7.99),      # judged on the upper bound 8.0, not the value 5.0
    ("max_sar", 0.04, 0.0399),
    ("max_rank1", 0.16, 0.159),
    ("max_worst_judge_rank1", 0.16, 0.159),  # one judge: its own rank-1
    ("max_utility_drop", 0.15, 0.149),     # 0.80 - lower bound 0.65
])
def test_upper_rules_pass_and_fail_at_the_boundary(rule, ok, bad):
    assert verdict(rule, ok).passed
    v = verdict(rule, bad)
    assert not v.passed and "FAIL" in v.line()


def test_worst_judge_rule_gates_the_highest_judge():
    rep = make_report()
    priv = rep["rows"][1]["privacy"]
    priv["judges"] = {"dlib": {"attack": "optimize", "rank1": priv["rank1"]},
                      "onnx:x": {"attack": "inverse", "rank1": est(0.3, 0.2, 0.45)}}
    priv["worst_judge"] = "onnx:x"
    (v,) = g.run_gate(rep, {"max_worst_judge_rank1": 0.4})
    assert not v.passed and v.judged == 0.45 and "onnx:x" in v.message   # max_rank1 0.4 would pass (0.16)
    assert g.run_gate(rep, {"max_rank1": 0.4})[0].passed
    priv["worst_judge"] = "nobody"
    with pytest.raises(g.ReportError):
        g.run_gate(rep, {"max_worst_judge_rank1": 0.4})


def test_min_tar_uses_the_lower_bound():
    assert verdict("min_tar_at_far", {"far": 1e-3, "value": 0.65}).passed
    v = verdict("min_tar_at_far", {"far": 1e-3, "value": 0.651})
    assert not v.passed and v.judged == 0.65  # the point value 0.70 would have passed


def test_interval_end_not_point_value():
    v = verdict("max_leakage_ratio", 6.0, leak=(5.0, 3.0, 8.0))
    assert v.value == 5.0 < 6.0 and not v.passed and v.judged == 8.0


def test_missing_privacy_fails_never_passes_silently():
    v = verdict("max_sar", 1.0, privacy=False)
    assert not v.passed and "run evaluate with attacks" in v.message


def test_scoped_rules_replace_general_and_unknown_row_is_config_error():
    rep = make_report()
    vs = g.run_gate(rep, {"max_leakage_ratio": 1.0, "rows": {"noise sigma=0.05": {"max_leakage_ratio": 9.0}}})
    assert [v.passed for v in vs] == [True]
    with pytest.raises(ConfigError, match='no such row in the report; rows: none, noise sigma=0.05'):
        g.run_gate(rep, {"rows": {"noise sigma=0.5": {"max_sar": 0.1}}})


def test_unprotected_only_report_gates_the_unprotected_row():
    rep = make_report()
    rep["rows"] = rep["rows"][:1]
    vs = g.run_gate(rep, {"max_leakage_ratio": 40.0})
    assert [v.row for v in vs] == ["none"] and vs[0].passed


def test_baseline_flags_a_worse_release_and_passes_an_equal_one():
    old = make_report()
    assert all(v.passed for v in g.compare_baseline(make_report(), old))
    worse = make_report(leak=(12.0, 9.0, 15.0))  # lower bound 9 > old upper bound 8
    vs = {v.rule: v for v in g.compare_baseline(worse, old) if v.row == "noise sigma=0.05"}
    assert not vs["baseline_leakage"].passed and vs["baseline_tar@1e-3"].passed
    fell = make_report(tar=(0.55, 0.50, 0.60))  # upper 0.60 < old lower 0.65
    vs = {v.rule: v for v in g.compare_baseline(fell, old) if v.row == "noise sigma=0.05"}
    assert not vs["baseline_tar@1e-3"].passed
    slight = make_report(leak=(7.0, 4.0, 10.0))  # overlapping intervals: not a regression
    assert all(v.passed for v in g.compare_baseline(slight, old))


def test_junit_one_case_per_rule(tmp_path):
    vs = g.run_gate(make_report(), {"max_leakage_ratio": 1.0, "max_sar": 1.0,
                                    "min_tar_at_far": {"far": 1e-3, "value": 0.1}})
    from facepii.outputs import write_junit

    p = write_junit(vs, tmp_path / "j.xml")
    assert p.read_text().startswith("<?xml")
    suite = ET.parse(p).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 3 and suite.get("failures") == "1"
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["max_leakage_ratio"]
    assert failed[0].get("classname") == "noise sigma=0.05"


@pytest.mark.parametrize("text, needle", [
    ('[gate]\nmax_leakage = 3\n', "[gate] has no rule 'max_leakage'"),
    ('[gate]\nmax_sar = "low"\n', "[gate] max_sar must be a number, got str"),
    ('[gate]\nmin_tar_at_far = 0.7\n', "min_tar_at_far must be {far = 1e-3, value = 0.7}"),
    ('[evaluate]\ndefense = "noise"\n[gate]\nmax_sar = 0.1\n', "[evaluate] has no key 'defense'"),
    ('[evaluate]\nseed = "1"\n[gate]\nmax_sar = 0.1\n', "[evaluate] seed must be an integer, got str"),
    ('[gate.rows."noise sigma=0.05"]\nmax_sarr = 1\n', 'has no rule \'max_sarr\''),
    ('[gates]\nmax_sar = 1\n', "unknown table(s) ['gates']"),
    ('[gate\n', "not valid TOML"),
    ('[gate.templates_per_victim."\u00b2"]\nmax_rank1 = 0.5\n', "is not a number of templates"),
    ('[gate.templates_per_victim."1"]\nmax_rank1 = 0.5\n[gate.templates_per_victim."01"]\nmax_rank1 = 0.9\n',
     "without leading zeros"),
    ('[evaluate]\nscores = "lots"\n[gate]\nmax_sar = 0.1\n', "[evaluate] scores"),
])
def test_config_errors_name_the_key(tmp_path, text, needle):
    p = tmp_path / "facepii.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        g.load_config(p)
    assert needle in str(e.value)


def test_evaluate_table_takes_the_clis_forms(tmp_path):
    """`[evaluate] scores = "all"` / "none" / "1e5", as --scores takes them (and max_memory = "4GB")."""
    for text, want in (('"all"', -1), ('"none"', 0), ('"1e5"', 100_000), ("2000", 2000)):
        p = tmp_path / "facepii.toml"
        p.write_text(f'[evaluate]\nscores = {text}\nmax_memory = "4GB"\n[gate]\nmax_sar = 0.1\n')
        assert g.evaluate_config(g.load_config(p)["evaluate"]).data.scores == want


def test_evaluate_table_takes_the_clis_list_forms(tmp_path):
    p = tmp_path / "facepii.toml"
    p.write_text('[evaluate]\ndefenses = "none, noise"\nparams = "sigma=0.02,0.05"\nattacks = "nearest,decoder"\n'
                 'epsilons = 1.0\nvictims = "0.25"\n[gate]\nmax_sar = 0.1\n')
    cfg = g.evaluate_config(g.load_config(p)["evaluate"])
    assert cfg.protect.defenses == ["none", "noise"] and cfg.protect.params == {"sigma": [0.02, 0.05]}
    assert cfg.privacy.attacks == ["nearest", "decoder"] and cfg.protect.epsilons == [1.0]
    assert cfg.privacy.victims == 0.25
    p.write_text('[evaluate]\nepsilons = "a,b"\n[gate]\nmax_sar = 0.1\n')
    with pytest.raises(ConfigError, match=r"\[evaluate\]"):
        g.load_config(p)


def test_pyproject_tool_table(tmp_path):
    p = tmp_path / "pyproject.toml"
    p.write_text('[project]\nname = "x"\n[tool.facepii.evaluate]\nbudget = "quick"\n'
                 '[tool.facepii.gate]\nmax_sar = 0.1\n')
    c = g.load_config(p)
    assert c["evaluate"]["budget"] == "quick" and c["gate"]["max_sar"] == 0.1
    cfg = g.evaluate_config({"defenses": "noise,quantize", "params": {"sigma": 0.05}})
    assert cfg.protect.defenses == ["noise", "quantize"] and cfg.protect.params == {"sigma": [0.05]}
    assert cfg.privacy.attacks


@pytest.fixture
def report_file(tmp_path):
    p = tmp_path / "report.json"
    p.write_text(json.dumps(make_report()))
    return p


@pytest.mark.parametrize("rules, code", [("max_leakage_ratio = 10.0\nmax_sar = 0.1\n", 0),
                                         ("max_leakage_ratio = 0.5\n", 1)])
def test_cli_exit_codes_and_junit(tmp_path, report_file, capsys, rules, code):
    cfg = tmp_path / "facepii.toml"
    cfg.write_text("[gate]\n" + rules)
    rc, out, err = run_cli(["gate", "--config", cfg, "--report", report_file, "--junit", tmp_path / "j.xml",
                            "--out", tmp_path / "out"], capsys)
    assert rc == code, (out, err)
    assert ("FAIL" in out) == (code == 1) and "pessimistic end" in out
    assert (tmp_path / "j.xml").is_file()
    html = (tmp_path / "out" / "report.html").read_text()
    assert ("FAIL" in html) == (code == 1) and "Gate" in html


@pytest.mark.parametrize("args, needle", [
    (["--config", "nope.toml"], "nope.toml: no such config file"),
    (["--report", "missing.json"], "missing.json: no such report file"),
])
def test_cli_usage_errors_exit_2(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "facepii.toml").write_text("[gate]\nmax_sar = 0.1\n")
    rc, _, err = run_cli(["gate", *args], capsys)
    assert rc == 2 and needle in err


def test_cli_config_without_rules(tmp_path, report_file, capsys):
    cfg = tmp_path / "facepii.toml"
    cfg.write_text("[evaluate]\nseed = 1\n")
    rc, _, err = run_cli(["gate", "--config", cfg, "--report", report_file], capsys)
    assert rc == 2 and "holds no rule" in err


def test_gate_out_inside_the_dataset_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    """As evaluate refuses it: the next run would take facepii's pictures there for photos of people."""
    from helpers import write_folder_dataset

    data = write_folder_dataset(tmp_path / "faces", n_ids=2, per_id=2)
    cfg = tmp_path / "facepii.toml"
    cfg.write_text(f'[evaluate]\ndataset = "folder:{data}"\nattacks = []\n[gate]\nmin_tar_at_far = '
                   '{far = 1e-3, value = 0.1}\n')
    rc, _, err = run_cli(["gate", "--config", str(cfg), "--out", str(data / "report")], capsys)
    assert rc == 2 and "inside the dataset folder" in err and len(err.strip().splitlines()) == 1
    assert not (data / "report").exists()
