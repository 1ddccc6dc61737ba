"""The transfer matrix (--encoder A,B): planning, the matrix from reports, its table, figure and CLI."""

import json

import numpy as np
import pytest

from facepii.errors import ParameterError


def est(v):
    return {"value": v, "ci95": [max(v - 0.1, 0), min(v + 0.1, 1)]}


def fig(r1, sar):
    return {"rank1": est(r1), "rank5": est(min(r1 + 0.1, 1)), "sar@fmr=1e-3": est(sar), "leakage_ratio": est(r1)}


def report(target, judge, cells, upper):
    """An unprotected row whose attacks got ``cells``: attack -> (judge rank-1, judge SAR)."""
    from facepii.report import Report

    per = {a: {**fig(*c), "judges": {judge: fig(*c)}, "target_judge": fig(*upper[a])} for a, c in cells.items()}
    row = {"defense": "none", "params": {}, "utility": {}, "privacy": {"judge": judge, "per_attack": per}}
    return Report.from_dict({"dataset": {}, "encoder": {"name": target}, "seed": 0, "rows": [row]})


def test_spec_list_and_slug():
    from facepii.encoders import spec_list
    from facepii.transfer import slug

    assert spec_list("sface,dlib", "--encoder") == ["sface", "dlib"]
    assert spec_list("onnx:/m/a.onnx?mean=0,0,0,dlib", "--encoder") == ["onnx:/m/a.onnx?mean=0,0,0", "dlib"]
    assert spec_list(None, "--encoder") == []
    with pytest.raises(ParameterError, match="twice"):
        spec_list("sface,sface", "--encoder")
    assert slug("onnx:/x/y/m.onnx?size=96") == "onnx-m.onnx" and slug("sface") == "sface"
    assert slug("../..") == "target"


def test_plan_judges_each_target_by_the_others_and_attacks_dlib_by_queries():
    pytest.importorskip("dlib")
    from facepii.config import EvaluateConfig
    from facepii.transfer import plan

    cfg = EvaluateConfig.from_options(encoder="sface,dlib", attacks=["nearest"])
    steps = plan(cfg)
    assert [(t, c.data.encoder, c.privacy.judge) for t, c, _ in steps] == [("sface", "sface", "dlib"),
                                                                            ("dlib", "dlib", "sface")]
    assert steps[0][1].privacy.knowledge == "white" and steps[1][1].privacy.knowledge == "black"
    assert "queries only" in steps[1][2][0]
    cfg = EvaluateConfig.from_options(encoder="sface,dlib", attacks=["nearest"], judge="dlib,onnx:m.onnx")
    assert plan(cfg)[0][1].privacy.judge == "dlib,onnx:m.onnx"


def test_matrix_rows_take_each_judges_best_attack_and_the_diagonal():
    from facepii.transfer import Transfer, matrix_row

    a = report("sface", "dlib", {"inverse": (0.5, 0.3), "optimize": (0.7, 0.4)},
               {"inverse": (0.96, 0.9), "optimize": (0.9, 0.95)})
    row = matrix_row(a, "sface")
    assert row["dlib"]["attack"] == "optimize" and row["dlib"]["rank1"]["value"] == 0.7
    assert row["sface"]["upper_bound"] and row["sface"]["attack"] == "inverse"   # its own best attack
    b = report("dlib", "sface", {"inverse": (0.3, 0.1)}, {"inverse": (0.8, 0.6)})
    tr = Transfer(["sface", "dlib"], [], {"sface": row, "dlib": matrix_row(b, "dlib")}, ["a note"])
    assert tr.judges == ["sface", "dlib"]            # columns in the rows' order: the diagonal is the diagonal
    h, body = tr.rows()
    assert h == ["target \\ judge", "sface", "dlib"]
    assert body[0][2].startswith("0.700") and "(upper bound)" in body[0][1] and "(upper bound)" in body[1][2]
    assert "a note" in tr.markdown()
    c = report("sface", "x", {"inverse": (0.3, 0.1)}, {"inverse": (0.8, 0.6)})
    tr = Transfer(["dlib", "sface"], [], {"dlib": matrix_row(b, "dlib"), "sface": {**matrix_row(c, "sface"), **row}})
    assert tr.judges == ["dlib", "sface", "x"]      # then the judges that are not targets
    # a judge's name is text in transfer.md, never markup
    evil = report("sface", "<img src=x onerror=alert(1)>|x", {"inverse": (0.3, 0.1)}, {"inverse": (0.8, 0.6)})
    md = Transfer(["sface"], [], {"sface": matrix_row(evil, "sface")}, ["<b>note</b>"]).markdown()
    import re

    assert re.search(r"(?<!\\)[<>]", md) is None  # every angle bracket escaped: no tag survives
    assert "\\<img src=x onerror=alert(1)\\>\\|x" in md and "\\<b\\>note" in md


def test_transfer_figure_draws(tmp_path):
    from facepii.outputs import write_figure
    from facepii.plots import transfer_figure
    from facepii.transfer import Transfer, matrix_row

    a = report("sface", "dlib", {"optimize": (0.7, 0.4)}, {"optimize": (0.9, 0.9)})
    tr = Transfer(["sface"], [], {"sface": matrix_row(a, "sface")})
    fig = transfer_figure(tr)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.images[0].get_array(), [[0.9, 0.7]])  # the cells are the matrix (sface, dlib)
    texts = [t.get_text() for t in ax.texts]
    assert "0.70\n[0.60, 0.80]" in texts and any("upper bound" in t for t in texts)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sface", "dlib"]
    from PIL import Image

    p = write_figure(fig, tmp_path / "transfer.png")
    assert Image.open(p).size[0] > 300


def test_cli_prints_and_writes_the_matrix(tmp_path, monkeypatch, capsys):
    import facepii.cli
    import facepii.transfer as T
    from facepii.report import Evaluation

    from helpers import run_cli

    evs = [Evaluation(report("sface", "dlib", {"optimize": (0.7, 0.4)}, {"optimize": (0.9, 0.9)})),
           Evaluation(report("dlib", "sface", {"inverse": (0.3, 0.1)}, {"inverse": (0.8, 0.6)}))]

    def fake(cfg):
        assert cfg.data.encoder == "sface,dlib"
        names = [e.report.encoder["name"] for e in evs]
        return T.Transfer(names, evs, {n: T.matrix_row(e.report, n) for n, e in zip(names, evs)},
                          ["target dlib: queries only"])

    monkeypatch.setattr(facepii.cli, "run_transfer", fake)
    (tmp_path / "photos" / "ann").mkdir(parents=True)
    code, out, err = run_cli(["evaluate", "-q", "-d", f"folder:{tmp_path / 'photos'}", "--encoder", "sface,dlib",
                              "--out", str(tmp_path / "o"), "--json", str(tmp_path / "t.json")], capsys)
    assert code == 0, err
    assert "transfer matrix" in out and "===== target dlib =====" in out
    d = json.loads((tmp_path / "t.json").read_text())
    assert d["schema"] == "facepii.transfer/1" and d["matrix"]["sface"]["dlib"]["rank1"]["value"] == 0.7
    for f in ("transfer.md", "transfer.json", "transfer.png", "sface/report.md", "dlib/report.json"):
        assert (tmp_path / "o" / f).is_file(), f


def test_pipeline_refuses_several_targets():
    from facepii.config import EvaluateConfig
    from facepii.pipeline import run

    with pytest.raises(ParameterError, match="transfer matrix"):
        run(EvaluateConfig.from_options(encoder="sface,dlib"))


def test_targets_sharing_an_output_folder_are_refused_before_the_work(tmp_path, monkeypatch, capsys):
    import facepii.cli

    from helpers import run_cli

    monkeypatch.setattr(facepii.cli, "run_transfer", lambda cfg: pytest.fail("the work started"))
    (tmp_path / "photos" / "ann").mkdir(parents=True)
    code, _, err = run_cli(["evaluate", "-q", "-d", f"folder:{tmp_path / 'photos'}", "--encoder",
                            "onnx:/a/m.onnx,onnx:/b/m.onnx", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "share the output folder" in err and len(err.strip().splitlines()) == 1
