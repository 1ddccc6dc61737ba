"""Helpers every test module shares (one place): the CLI in-process, synthetic data, stand-in models,
typed report rows. Fixtures are in conftest.py."""

from __future__ import annotations

import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CELEBA = Path(os.environ.get("FACEPII_TEST_CELEBA", ROOT.parent / "shared" / "datasets" / "celeba-subset"))
MOBILEFACENET = Path(os.environ.get("FACEPII_TEST_MOBILEFACENET",
                                    ROOT.parent / "shared" / "models" / "mobilefacenet" / "model.onnx"))


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


def face_photo(celeba: Path, k: int = 0) -> Path:
    """The k-th photo listed in the subset."""
    name = (celeba / "identity_CelebA.txt").read_text().split("\n")[k].split()[0]
    return celeba / "img_celeba" / name


class FixedAligner:
    """A stand-in for YuNet on synthetic images: every image has its 'face' at the template spot,
    except images whose top-left pixel is pure red (no face)."""

    version = "test-aligner/v1"

    def __init__(self):
        from facepii.faces import TEMPLATE_112

        self.lm = TEMPLATE_112.copy()
        self.calls = 0

    def landmarks(self, rgb):
        from facepii.errors import ImageError

        self.calls += 1
        if tuple(rgb[0, 0]) == (255, 0, 0):
            raise ImageError("no face found (test)")
        return self.lm * (rgb.shape[1] / 112)


class CountingEncoder:
    """Mean colour + a fixed random projection of the pixels: fast, deterministic, counts calls."""

    name = "counting"
    version = "1"
    dim = 16
    comparator = "cosine"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.embedded = 0
        self.fail_after = fail_after
        self._proj = np.random.default_rng(0).normal(size=(112 * 112 * 3 // 64, 16)).astype(np.float32)

    def embed(self, faces):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.embedded += len(faces)
        x = faces[:, ::8, ::8, :].reshape(len(faces), -1).astype(np.float32) / 255
        return (x @ self._proj[: x.shape[1]]).astype(np.float32)


def write_folder_dataset(root: Path, n_ids: int = 4, per_id: int = 3, size: int = 140, seed: int = 0) -> Path:
    """Synthetic one-folder-per-identity dataset of random-texture PNGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n_ids):
        d = root / f"person_{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, size=(size, size, 3))
        for j in range(per_id):
            img = np.clip(base + rng.normal(scale=20, size=base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"img_{j}.png")
    return root


def tiny_face_model(path, size=None, two_outputs=True, relu_out=False, seed=0):
    """A small 'face model': Conv -> Relu -> GlobalAveragePool -> Gemm -> 16-d embedding (+ an 'age' output)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = {"W": rng.normal(size=(8, 3, 3, 3)) / 50, "B": rng.normal(size=8), "G": rng.normal(size=(8, 16)),
             "g": rng.normal(size=16), "A": rng.normal(size=(8, 1)), "a": np.zeros(1)}
    nodes = [helper.make_node("Conv", ["data", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "G", "g"], ["e0"])]
    if relu_out:
        nodes.append(helper.make_node("Relu", ["e0"], ["embedding"]))
    else:
        nodes.append(helper.make_node("Identity", ["e0"], ["embedding"]))
    outs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, 16])]
    if two_outputs:
        nodes.append(helper.make_node("Gemm", ["f", "A", "a"], ["age"]))
        outs.append(helper.make_tensor_value_info("age", TensorProto.FLOAT, [None, 1]))
    hw = [size, size] if size else ["H", "W"]
    g = helper.make_graph(nodes, "face", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [None, 3, *hw])],
                          outs, [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def est(v, lo=None, hi=None):
    """A figure in report.json's form."""
    return {"value": v, "ci95": [v if lo is None else lo, v if hi is None else hi]}


def typed_row(defense="none", params=None, attack="optimize", rank1=0.5, sar=0.3, tar=0.8, n_victims=10):
    """A report row with one attack's privacy figures (what evaluate writes, smaller)."""
    from facepii.estimates import AttackFigures, JudgeFigures, PrivacyEstimates, RowEstimates, UtilityEstimates
    from facepii.metrics import Estimate

    def e(v):
        return Estimate(float(v), (max(0.0, v - 0.1), min(1.0, v + 0.1)))

    j = JudgeFigures(e(rank1), e(min(1.0, rank1 + 0.2)), Estimate(rank1 * n_victims, ((rank1 - 0.1) * n_victims,
                                                                                     (rank1 + 0.1) * n_victims)),
                     e(sar), 1.0 / n_victims)
    fig = AttackFigures(j, e(0.4), j)
    return RowEstimates(defense=defense, params=params or {}, utility=UtilityEstimates({"tar@far=1e-3": e(tar)}),
                        privacy=PrivacyEstimates("dlib", {attack: fig}))


def fake_evaluation(n=8, seed=0):
    """An evaluation of two rows with random 'faces' (what --out and the lineup material need)."""
    from facepii.report import Evaluation, Report

    rng = np.random.default_rng(seed)

    def faces(k):
        return rng.integers(0, 255, (k, 112, 112, 3), dtype=np.uint8)

    rows = [typed_row("none", {}, "optimize"), typed_row("noise", {"sigma": 0.1}, "decoder", rank1=0.3)]
    rep = Report(dataset={}, encoder={}, seed=0, rows=rows)
    gallery_sets = [faces(1 + i % 3) for i in range(n)]
    victims = np.array([f"id{i}" for i in range(n)])
    return Evaluation(rep, {0: faces(n), 1: faces(n)}, faces(n), np.stack([g[0] for g in gallery_sets]), victims,
                      gallery_sets)


def make_report(leak=(5.0, 3.0, 8.0), sar=(0.02, 0.01, 0.04), tar=(0.70, 0.65, 0.75), base_tar=0.80,
                privacy=True):
    def row(defense, params, t, lk, s):
        r = {"defense": defense, "params": params,
             "utility": {"tar@far=1e-3": est(*t), "tar@far=1e-2": est(0.9, 0.85, 0.95)}}
        if privacy:
            fig = {"leakage_ratio": est(*lk), "sar@fmr=1e-3": est(*s), "rank1": est(lk[0] / 50, lk[1] / 50, lk[2] / 50)}
            r["privacy"] = {"attack": "optimize", "judge": "dlib", **fig, "per_attack": {"optimize": dict(fig)}}
        return r

    return {"schema": "facepii.report/1", "rows": [
        row("none", {}, (base_tar, base_tar - 0.03, base_tar + 0.03), (30.0, 25.0, 35.0), (0.4, 0.3, 0.5)),
        row("noise", {"sigma": 0.05}, tar, leak, sar)]}


def embeddings_npz(path: Path, n_ids: int = 30, per_id: int = 4, dim: int = 64, seed: int = 0) -> Path:
    """An embeddings:FILE.npz dataset of clustered random templates (n_ids identities, per_id each)."""
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(n_ids), per_id)
    E = rng.normal(size=(n_ids, dim))[lab] + rng.normal(scale=1.0, size=(n_ids * per_id, dim))
    np.savez(path, embeddings=E.astype(np.float32), labels=lab.astype(str))
    return path


def celeba_ids(celeba: Path) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = defaultdict(list)
    for line in (celeba / "identity_CelebA.txt").read_text().splitlines():
        name, who = line.split()
        if (celeba / "img_celeba" / name).is_file():
            ids[who].append(name)
    return ids


def attacker_folders(celeba: Path, root: Path, n_victims: int, n_attacker: int, per_id: int,
                     n_prior: int = 0) -> tuple[Path, Path, dict]:
    """LFW-layout folders of CelebA photos (``per_id`` each): ``vic``, the vendor's people; ``att``, the
    attacker's other people plus one victim (other photos of the same person) and one victim's photo under
    another person's name; with ``n_prior``, ``pri``: yet other people (a prior's photos)."""
    ids = celeba_ids(celeba)
    order = sorted((i for i in ids if len(ids[i]) >= 2 * per_id), key=int)
    vic, att = order[:n_victims], order[n_victims:n_victims + n_attacker]
    pri = order[n_victims + n_attacker:n_victims + n_attacker + n_prior]
    for who in pri:
        (root / "pri" / who).mkdir(parents=True)
        for f in ids[who][:per_id]:
            shutil.copy(celeba / "img_celeba" / f, root / "pri" / who / f)
    for who in vic:
        (root / "vic" / who).mkdir(parents=True)
        for f in ids[who][:per_id]:
            shutil.copy(celeba / "img_celeba" / f, root / "vic" / who / f)
    for who in att:
        (root / "att" / who).mkdir(parents=True)
        for f in ids[who][:per_id]:
            shutil.copy(celeba / "img_celeba" / f, root / "att" / who / f)
    (root / "att" / vic[0]).mkdir()
    for f in ids[vic[0]][per_id:2 * per_id]:          # the same person, other photos
        shutil.copy(celeba / "img_celeba" / f, root / "att" / vic[0] / f)
    stray = ids[vic[1]][0]                              # a victim's photo filed under an attacker identity
    shutil.copy(celeba / "img_celeba" / stray, root / "att" / att[0] / stray)
    return root / "vic", root / "att", {"victims": vic, "attacker": att, "prior": pri}
