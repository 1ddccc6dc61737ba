"""``--attacker-data SPEC``: the attacker trains on its own photos; the victims are drawn from --dataset
alone; victims' photos and people found in the attacker's set are set aside and counted; the options are
checked before any work."""

from __future__ import annotations

import numpy as np
import pytest

from facepii.config import EvaluateConfig
from facepii.errors import ParameterError
from facepii.stages import split_identities

from helpers import attacker_folders, embeddings_npz, run_cli, write_folder_dataset

# ---------------------------------------------------------------- the split without auxiliary identities


def test_with_the_attackers_own_photos_every_eligible_identity_is_a_victim():
    labels = np.repeat(np.arange(10), 3)
    labels = np.concatenate([labels, [10]])            # one identity with a single photo: never a victim
    s = split_identities(labels, None, 0, aux_elsewhere=True)
    assert s.victim_ids.tolist() == list(range(10)) and len(s.aux_pos) == 0
    assert set(s.victim_pos.tolist()) == set(range(30))
    assert len(split_identities(labels, 4, 0, aux_elsewhere=True).victim_ids) == 4
    assert len(split_identities(labels, 0.5, 0, aux_elsewhere=True).victim_ids) == round(0.5 * 11)
    default = split_identities(labels, None, 0)           # without it: a quarter, the rest auxiliary
    assert len(default.victim_ids) < 10 and len(default.aux_pos) > 0
    with pytest.raises(ParameterError, match="--victims 12"):
        split_identities(labels, 12, 0, aux_elsewhere=True)


# ---------------------------------------------------------------- checked before the work


@pytest.mark.parametrize("spec, says", [
    ("nope", "must be a dataset spec of photos"),
    ("folder:", "must be a dataset spec of photos"),
    ("embeddings:x.npz", "an embeddings file holds none"),
])
def test_a_bad_attacker_data_spec_is_refused_in_one_line(tmp_path, capsys, spec, says):
    data = write_folder_dataset(tmp_path / "d", n_ids=4, per_id=2)
    code, _, err = run_cli(["evaluate", "-q", "--dataset", f"folder:{data}", "--attacker-data", spec], capsys)
    assert code == 2 and "--attacker-data" in err and says in err


@pytest.mark.parametrize("where", ["missing", "a-file"])
def test_an_attacker_folder_that_is_not_there_is_refused_before_the_work(tmp_path, capsys, where):
    data = write_folder_dataset(tmp_path / "d", n_ids=4, per_id=2)
    (tmp_path / "a-file").write_text("not a folder")
    code, _, err = run_cli(["evaluate", "-q", "--dataset", f"folder:{data}", "--attacker-data",
                            f"folder:{tmp_path / where}"], capsys)
    assert code == 2 and "no such folder" in err and len(err.strip().splitlines()) == 1


def test_the_evaluated_dataset_is_not_the_attackers(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "d", n_ids=4, per_id=2)
    code, _, err = run_cli(["evaluate", "-q", "--dataset", f"folder:{data}", "--attacker-data",
                            f"folder:{data}/."], capsys)
    assert code == 2 and "the evaluated dataset itself" in err


def test_attacker_data_without_attacks_is_refused(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "d", n_ids=4, per_id=2)
    other = write_folder_dataset(tmp_path / "o", n_ids=4, per_id=2, seed=1)
    code, _, err = run_cli(["evaluate", "-q", "--dataset", f"folder:{data}", "--no-privacy", "--attacker-data",
                            f"folder:{other}"], capsys)
    assert code == 2 and "--attacker-data has no effect without attacks" in err


def test_no_output_goes_into_the_attackers_folder(tmp_path, capsys):
    data = write_folder_dataset(tmp_path / "d", n_ids=4, per_id=2)
    other = write_folder_dataset(tmp_path / "o", n_ids=4, per_id=2, seed=1)
    code, _, err = run_cli(["evaluate", "-q", "--dataset", f"folder:{data}", "--attacker-data", f"folder:{other}",
                            "--out", str(other / "report")], capsys)
    assert code == 2 and "inside the dataset folder" in err
    assert not (other / "report").exists()


def test_an_embeddings_dataset_as_the_attackers_is_refused_by_the_config(tmp_path):
    f = embeddings_npz(tmp_path / "e.npz")
    cfg = EvaluateConfig.from_options(dataset="folder:x", attacks=["nearest"], attacker_data=f"embeddings:{f}")
    with pytest.raises(ParameterError, match="holds none"):
        cfg.validate()


# ---------------------------------------------------------------- real photos


def test_the_victims_photos_and_people_are_set_aside(celeba, tmp_path):
    from facepii.attacker_data import load_attacker_photos
    from facepii.cache import Cache
    from facepii.encoders import get_encoder
    from facepii.stages import embed, load_selected

    vic, att, who = attacker_folders(celeba, tmp_path, 5, 8, 3)
    cfg = EvaluateConfig.from_options(dataset=f"folder:{vic}", attacks=["nearest"], attacker_data=f"folder:{att}",
                                      max_aux=6).validate()
    target = get_encoder("sface")
    cache = Cache(None)
    embedded = embed(cfg, load_selected(cfg), {"target": target}, cache)
    split = split_identities(embedded.labels, None, 0, aux_elsewhere=True)
    assert sorted(split.victim_ids.tolist()) == sorted(who["victims"])
    got = load_attacker_photos(cfg, target, embedded, split, cache)
    b = got.block
    assert b["victim_photos_set_aside"] == 1 and b["victim_identities_set_aside"] == 1
    assert b["photos_set_aside"] == 1 + 3 and b["identities_available"] == 8
    assert b["identities"] == 6 == got.n_identities                     # --max-aux 6: a seeded sample
    kept = set(got.photos.labels[got.pos].tolist())
    assert kept <= set(who["attacker"]) and not kept & set(who["victims"])
    victim_keys = {embedded.keys[i] for i in split.victim_pos}
    assert not victim_keys & {got.photos.keys[i] for i in got.pos}
    again = load_attacker_photos(cfg, target, embedded, split, cache)
    assert got.pos.tolist() == again.pos.tolist()


def test_a_prior_trained_on_the_attackers_photos_says_so(tmp_path):
    from attacks.prior import KINDS
    from facepii.cache import Cache
    from facepii.config import PrivacyConfig
    from facepii.reconstructions import attacker_prior

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (24, 112, 112, 3), dtype=np.uint8)
    keys, labels = [f"k{i}" for i in range(24)], np.repeat(np.arange(8), 3)
    assert "eigenfaces" in KINDS
    for data, says in ((None, "auxiliary split"), ("folder:/data/public", "attacker data folder:/data/public")):
        p = PrivacyConfig(attacks=["nearest"], budget="quick", attacker_data=data)
        prior, source = attacker_prior(p, 0, faces, keys, labels, [], Cache(None))
        assert prior.describe()["source"] == says and source == "trained"
