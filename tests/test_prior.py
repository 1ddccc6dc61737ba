"""The attacker's face prior (attacks.prior): trained on photos only, a file that reads back as it was
written, refused when it is not a prior or was trained on a victim; detail that follows the face it
is added to; `facepii prior train` and `evaluate --prior` end to end."""

from __future__ import annotations

import json
import struct
from dataclasses import replace

import numpy as np
import pytest

from attacks.facemodel import BUDGETS, FaceModel
from attacks.prior import PRIOR_BUDGETS, FacePrior, PriorSettings
from facepii.errors import ParameterError

from helpers import attacker_folders, run_cli

SMALL = PriorSettings(components=8, donors=40, patch=12, stride=6)


def _faces(n: int, seed: int = 0) -> np.ndarray:
    """Face-like test images: a smooth blob and eyes on a gradient, plus fine texture of each image's own."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:112] / 111.0
    out = []
    for _ in range(n):
        cx, cy, r = 0.5 + rng.normal(0, 0.03), 0.5 + rng.normal(0, 0.03), 0.3 + rng.normal(0, 0.02)
        blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / r ** 2))
        eyes = sum(np.exp(-(((xx - ex) ** 2 + (yy - 0.45) ** 2) / 0.003)) for ex in (0.36, 0.64))
        base = 60 + 120 * blob - 50 * eyes + 30 * yy
        tex = rng.normal(0, 12, (112, 112))
        img = np.stack([base + tex, base * 0.9 + tex, base * 0.8 + tex], -1)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def prior():
    faces = _faces(30)
    return FacePrior.train(faces, [f"k{i}" for i in range(30)], np.repeat(np.arange(10), 3), SMALL, seed=0,
                           source="synthetic")


def test_a_prior_learns_from_photos_only_and_records_them(prior):
    assert prior.kind == "detail" and prior.space.components.shape == (8, 112 * 112 * 3)
    assert prior.donors.shape == (40, 112, 112, 3) and prior.donors.dtype == np.uint8
    m = prior.manifest
    assert m["photos"] == 30 and m["identities"] == 10 and m["photo_keys"] == sorted(f"k{i}" for i in range(30))
    assert prior.overlap(["k3", "x", "k29"]) == 2 and prior.overlap(["x"]) == 0


def test_detail_adds_fine_detail_that_follows_the_face(prior):
    from facepii.metrics import sharpness

    faces = _faces(6, seed=5)
    blurred = np.stack([__import__("cv2").GaussianBlur(f, (0, 0), 2.0) for f in faces])
    x = blurred.transpose(0, 3, 1, 2).astype(np.float32) / 255
    band = prior.detail(x)
    assert band.shape == x.shape and band.dtype == np.float32
    out = np.clip((x + band) * 255, 0, 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
    assert sharpness(out).mean() > 3 * sharpness(blurred).mean()
    assert np.abs(band.mean()) < 0.02  # a high band: it adds detail, it does not move the face's tone
    assert np.array_equal(band, prior.detail(x))  # deterministic
    assert np.array_equal(band[2:3], prior.detail(x[2:3]))  # each face's detail is its own
    eigen = FacePrior(prior.space, replace(SMALL, kind="eigenfaces"), None, prior.manifest)
    assert not eigen.detail(x).any()


def test_a_prior_file_reads_back_as_written(prior):
    prior.centroids = np.eye(10, 128, dtype=np.float32)
    back = FacePrior.from_bytes(prior.to_bytes())
    assert back.to_bytes() == prior.to_bytes() and back.digest() == prior.digest()
    assert back.settings == prior.settings and back.manifest == prior.manifest
    assert np.array_equal(back.donors, prior.donors) and np.array_equal(back.centroids, prior.centroids)
    assert back.same_people(np.eye(2, 128, dtype=np.float32)).tolist() == [True, True]
    assert back.same_people(np.eye(2, 128, k=20, dtype=np.float32)).tolist() == [False, False]


def _header(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _with_header(h: dict, body: bytes) -> bytes:
    text = json.dumps(h).encode()
    return struct.pack("<Q", len(text)) + text + body


@pytest.mark.parametrize("edit, says", [
    (lambda h: h["__metadata__"].update(format="facepii-prior/v0"), "not a facepii prior"),
    (lambda h: h["__metadata__"].update(manifest="[1, 2]"), "manifest is malformed"),
    (lambda h: h["__metadata__"].update(manifest="{"), "manifest is malformed"),
    (lambda h: h["__metadata__"].update(manifest=json.dumps({"settings": {"kind": "detail"}})), "malformed"),
    (lambda h: h.pop("donors"), "donors of detail are missing|not a safetensors file"),
    (lambda h: h.pop("space.scale"), "face space of the wrong shape|not a safetensors file"),
])
def test_a_file_that_is_not_a_good_prior_is_refused_with_the_reason(prior, edit, says):
    h, body = _header(prior.to_bytes())
    edit(h)
    with pytest.raises(ValueError, match=says):
        FacePrior.from_bytes(_with_header(h, body))


def test_a_detail_prior_without_donors_is_refused(prior):
    bare = FacePrior(prior.space, prior.settings, None, prior.manifest)
    with pytest.raises(ValueError, match="donors of detail are missing"):
        FacePrior.from_bytes(bare.to_bytes())


@pytest.mark.parametrize("data", [b"", b"\x00" * 8, b"not safetensors at all", struct.pack("<Q", 1 << 40) + b"{}"])
def test_garbage_is_not_a_prior(data):
    with pytest.raises(ValueError, match="not a safetensors file|not a facepii prior"):
        FacePrior.from_bytes(data)


def test_settings_out_of_range_are_refused(prior):
    h, body = _header(prior.to_bytes())
    m = json.loads(h["__metadata__"]["manifest"])
    m["settings"]["patch"] = 10  # not a multiple of 4
    h["__metadata__"]["manifest"] = json.dumps(m)
    with pytest.raises(ValueError, match="settings out of range"):
        FacePrior.from_bytes(_with_header(h, body))


def test_a_face_model_carries_its_prior_to_the_cache_and_to_workers(prior):
    faces = _faces(24, seed=1)
    E = np.random.default_rng(0).normal(size=(24, 16)).astype(np.float32)
    budget = replace(BUDGETS["quick"], components=8, decoder_steps=2, flips=False)
    fm = FaceModel.train(E, faces, budget, prior=prior)
    assert fm.space is prior.space and fm.prior is prior
    back = FaceModel.from_bytes(fm.to_bytes())
    assert back.prior is not None and back.prior.digest() == prior.digest()
    assert np.array_equal(back.reconstruct(E[:4]), fm.reconstruct(E[:4]))
    no_detail = FaceModel(fm.space, fm.decoder, fm.d_in)
    assert not np.array_equal(no_detail.reconstruct(E[:4]), fm.reconstruct(E[:4]))


def test_the_budgets_scale_the_prior():
    assert [PRIOR_BUDGETS[b].donors for b in ("quick", "standard", "thorough")] == [1500, 3000, 6000]
    assert all(PRIOR_BUDGETS[b].components == BUDGETS[b].components for b in PRIOR_BUDGETS)


def test_a_prior_trained_on_a_victims_photo_is_refused(prior, tmp_path):
    from facepii.config import PrivacyConfig
    from facepii.reconstructions import attacker_prior

    path = tmp_path / "p.safetensors"
    path.write_bytes(prior.to_bytes())
    p = PrivacyConfig(attacks=["decoder"], prior=str(path))
    got, source = attacker_prior(p, 0, _faces(3), ["a", "b", "c"], np.arange(3), ["v1", "v2"], None)
    assert source == f"file {path}" and got.digest() == prior.digest()
    with pytest.raises(ParameterError, match="trained on 1 of the victims' photos"):
        attacker_prior(p, 0, _faces(3), ["a", "b", "c"], np.arange(3), ["v1", "k7"], None)
    for bad, says in ((tmp_path / "none.safetensors", "no such file"), (tmp_path / "junk", "not a safetensors")):
        if "junk" in str(bad):
            bad.write_bytes(b"junk" * 10)
        with pytest.raises(ParameterError, match=says):
            attacker_prior(replace(p, prior=str(bad)), 0, _faces(3), ["a"], np.arange(1), ["v"], None)


def test_evaluate_checks_the_prior_option_before_the_work(tmp_path, capsys):
    code, _, err = run_cli(["evaluate", "--dataset", f"folder:{tmp_path}", "--prior", str(tmp_path / "nope")], capsys)
    assert code == 2 and "--prior" in err and "no such file" in err
    code, _, err = run_cli(["evaluate", "--dataset", f"folder:{tmp_path}", "--no-privacy", "--prior", "detail"],
                           capsys)
    assert code == 2 and "--prior has no effect without attacks" in err


@pytest.mark.slow
@pytest.mark.integration
def test_a_prior_file_and_the_attackers_own_photos_end_to_end(celeba, tmp_path, capsys):
    """`facepii prior train` on some people; two evaluations of a vendor's people (folder:vic) by an attacker
    with photos of its own (--attacker-data folder:att, which holds one victim's other photos and another
    victim's photo: both set aside) and the prior file: the same report (the prior is reused, not retrained),
    the attacks trained on the attacker's photos; an evaluation whose victims are the prior's people is
    refused. (One test: each evaluation trains the attacker's face model, a minute and more.)"""
    vic, att, who = attacker_folders(celeba, tmp_path / "data", 6, 10, 4, n_prior=8)
    pri = tmp_path / "data" / "pri"
    pfile = tmp_path / "prior.safetensors"
    cache = tmp_path / "cache"
    code, out, err = run_cli(["prior", "train", "-q", "--dataset", f"folder:{pri}", "--seed", "1", "--budget",
                              "quick", "--cache-dir", str(cache), "--out", str(pfile)], capsys)
    assert code == 0, err
    assert "written to" in out and "personal data" in out
    code, out, _ = run_cli(["prior", "show", str(pfile)], capsys)
    assert code == 0 and "detail" in out and "identities_stored  8" in out
    reports = []
    for i in range(2):
        j = tmp_path / f"r{i}.json"
        code, out, err = run_cli(["evaluate", "-q", "--dataset", f"folder:{vic}", "--attacker-data", f"folder:{att}",
                                  "--attack", "nearest,decoder", "--judge", "dlib", "--budget", "quick",
                                  "--bootstrap", "200", "--prior", str(pfile), "--cache-dir", str(cache),
                                  "--json", str(j)], capsys)
        assert code == 0, err
        reports.append(json.loads(j.read_text()))
    r = reports[0]
    assert r["rows"] == reports[1]["rows"]
    assert r["attacker"]["prior"]["from"] == f"file {pfile}" and r["attacker"]["prior"]["kind"] == "detail"
    assert reports[1]["attacker"]["face_model"] == "cache"
    s = r["split"]
    assert s["victims"] == 6 and s["auxiliary_identities"] == 10 and s["auxiliary_images"] == 40
    assert s["attacker_data"]["photos_set_aside"] == 5 and s["attacker_data"]["spec"] == f"folder:{att}"
    assert s["attacker_data"]["victim_photos_set_aside"] == 1 and s["attacker_data"]["victim_identities_set_aside"] == 1
    assert f"its own dataset (folder:{att}: 40 photos of 10 people)" in r["threat_model"]
    assert r["dataset"]["n_identities"] == 6          # utility: the vendor's people only
    assert set(r["rows"][0]["privacy"]["per_attack"]) == {"nearest", "decoder"}
    j = tmp_path / "nearest.json"  # no attack that uses a face model: the prior file is checked, not used
    code, _, err = run_cli(["evaluate", "-q", "--dataset", f"folder:{vic}", "--attacker-data", f"folder:{att}",
                            "--attack", "nearest", "--judge", "dlib", "--budget", "quick", "--bootstrap", "200",
                            "--prior", str(pfile), "--cache-dir", str(cache), "--json", str(j)], capsys)
    assert code == 0, err
    n = json.loads(j.read_text())
    assert n["attacker"]["face_model"] == "not trained: no attack of this run uses one (nearest)"
    assert n["attacker"]["prior"] == {"from": f"file {pfile} (checked, not used: no face model)"}
    assert n["rows"][0]["privacy"]["per_attack"]["nearest"] == r["rows"][0]["privacy"]["per_attack"]["nearest"]
    code, _, err = run_cli(["evaluate", "-q", "--dataset", f"folder:{pri}", "--attack", "nearest", "--budget",
                            "quick", "--prior", str(pfile), "--cache-dir", str(cache)], capsys)
    assert code == 2 and "--prior" in err and "victims" in err
