import numpy as np
import pytest

from facepii import datasets as ds
from facepii.errors import DatasetError

from helpers import write_folder_dataset


def test_folder_layout(tmp_path):
    root = write_folder_dataset(tmp_path / "d", n_ids=3, per_id=2)
    (root / "person_00" / "notes.txt").write_text("not a face")
    fs = ds.load_dataset(f"folder:{root}")
    assert len(fs) == 6 and fs.n_identities == 3 and fs.kind == "paths"
    assert sorted(set(fs.labels)) == ["person_00", "person_01", "person_02"]
    assert [e["reason"] for e in fs.excluded] == ["not an image file (.txt)"]


def test_celeba_layout(tmp_path):
    root = tmp_path / "celeba"
    (root / "img_celeba").mkdir(parents=True)
    for i in range(5):
        (root / "img_celeba" / f"{i:06d}.jpg").write_bytes(b"x")
    lines = [f"{i:06d}.jpg {ident}" for i, ident in enumerate([7, 7, 9, 9, 9])] + ["000099.jpg 3"]
    (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    fs = ds.load_dataset(f"celeba:{root}")
    assert len(fs) == 5 and list(fs.labels) == ["7", "7", "9", "9", "9"]
    assert fs.excluded[0]["reason"].startswith("listed in identity_CelebA.txt but missing")


def test_celeba_aligned_folder_name(tmp_path):
    root = tmp_path / "c"
    (root / "img_align_celeba").mkdir(parents=True)
    (root / "img_align_celeba" / "a.jpg").write_bytes(b"x")
    (root / "identity_CelebA.txt").write_text("a.jpg 1\n")
    assert len(ds.load_celeba(root)) == 1


@pytest.mark.parametrize("spec, needle", [
    ("folder:/no/such/place", "no such folder"),
    ("celeba:/no/such/place", "no such folder"),
    ("embeddings:/no/such.npz", "no such file"),
    ("imagenet:/x", "unknown dataset spec"),
    ("folder:", "needs a path"),
])
def test_bad_specs_name_the_problem(spec, needle):
    with pytest.raises(DatasetError, match=needle):
        ds.load_dataset(spec)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images in per-identity sub-folders"):
        ds.load_dataset(f"folder:{tmp_path / 'empty'}")


def test_loose_images_hint(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="sub-folder named after them"):
        ds.load_folder(tmp_path)


def test_select_min_images_excludes_and_counts(tmp_path):
    root = write_folder_dataset(tmp_path / "d", n_ids=3, per_id=2)
    (root / "person_00" / "img_1.png").unlink()
    fs = ds.select(ds.load_folder(root), min_images=2)
    assert fs.n_identities == 2
    assert any("person_00 has 1 image(s)" in e["reason"] for e in fs.excluded)


def test_select_is_seeded():
    fs = ds.FaceSet(labels=np.repeat(np.arange(50), 3), embeddings=np.zeros((150, 4), np.float32), source="t")
    a = ds.select(fs, max_identities=10, seed=1)
    b = ds.select(fs, max_identities=10, seed=1)
    c = ds.select(fs, max_identities=10, seed=2)
    assert list(a.labels) == list(b.labels) and a.n_identities == 10
    assert list(a.labels) != list(c.labels)


def test_select_nothing_left():
    fs = ds.FaceSet(labels=np.arange(5), embeddings=np.zeros((5, 4), np.float32), source="t")
    with pytest.raises(DatasetError, match="lower --min-images"):
        ds.select(fs, min_images=2)


def test_embeddings_npz(tmp_path):
    p = tmp_path / "e.npz"
    np.savez(p, embeddings=np.random.default_rng(0).normal(size=(4, 8)), labels=np.array(["a", "a", "b", "b"]),
             paths=np.array(list("wxyz")))
    fs = ds.load_dataset(f"embeddings:{p}")
    assert fs.kind == "embeddings" and fs.embeddings.dtype == np.float32 and fs.item_name(2) == "y"
    assert fs.subset([1, 2]).item_name(1) == "y"


@pytest.mark.parametrize("arrays, needle", [
    ({"embeddings": np.array([[1.0, np.nan], [0, 1]]), "labels": np.array([0, 1])}, "NaN or inf .*row 0"),
    ({"embeddings": np.ones((3,)), "labels": np.array([0, 1, 2])}, "must be N x d"),
    ({"embeddings": np.ones((3, 2)), "labels": np.array([0, 1])}, "one entry per row"),
    ({"embeddings": np.ones((3, 2))}, "'labels' is missing"),
])
def test_embeddings_npz_errors(tmp_path, arrays, needle):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DatasetError, match=needle):
        ds.load_embeddings(p)


def test_embeddings_not_npz(tmp_path):
    p = tmp_path / "bad.npz"
    p.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        ds.load_embeddings(p)


def test_lfw_offline_uncached_one_line(tmp_path, monkeypatch):
    import sklearn.datasets

    def offline(**_k):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sklearn.datasets, "fetch_lfw_people", offline)
    with pytest.raises(DatasetError) as e:
        ds.load_dataset(f"lfw:{tmp_path}")
    msg = str(e.value)
    assert "\n" not in msg and "folder:PATH" in msg and "download failed" in msg


def test_lfw_cached_reads_folder(tmp_path):
    write_folder_dataset(tmp_path / "lfw_home" / "lfw_funneled", n_ids=2, per_id=2)
    fs = ds.load_dataset(f"lfw:{tmp_path}")
    assert len(fs) == 4 and fs.source.startswith("lfw:")


def test_default_spec_env(monkeypatch):
    assert ds.default_spec() == "lfw"
    monkeypatch.setenv("FACEPII_DATASET", "folder:/x")
    assert ds.default_spec() == "folder:/x"
