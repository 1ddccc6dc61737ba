import numpy as np
import pytest
from PIL import Image

from facepii.cache import Cache
from facepii.datasets import load_folder
from facepii.extract import extract

from helpers import CountingEncoder, FixedAligner, write_folder_dataset


@pytest.fixture
def data(tmp_path):
    root = write_folder_dataset(tmp_path / "faces", n_ids=3, per_id=4)
    return load_folder(root)


def test_second_run_computes_nothing(data, tmp_path):
    enc1, al1 = CountingEncoder(), FixedAligner()
    a = extract(data, [enc1], Cache(tmp_path / "c"), aligner=al1, batch_size=5)
    assert enc1.embedded == 12 and al1.calls == 12 and a.stats["computed"] == 12
    enc2, al2 = CountingEncoder(), FixedAligner()
    b = extract(data, [enc2], Cache(tmp_path / "c"), aligner=al2, batch_size=5)
    assert enc2.calls == 0 and al2.calls == 0 and b.stats["cached"] == 12 and b.stats["computed"] == 0
    np.testing.assert_array_equal(a.for_encoder(enc1), b.for_encoder(enc2))
    assert list(b.faceset.labels) == list(a.faceset.labels)


def test_interrupted_run_keeps_finished_batches_and_resumes(data, tmp_path):
    enc = CountingEncoder(fail_after=2)  # dies (Ctrl-C) on the third batch
    with pytest.raises(KeyboardInterrupt):
        extract(data, [enc], Cache(tmp_path / "c"), aligner=FixedAligner(), batch_size=4)
    assert Cache(tmp_path / "c").count() == 8
    enc2 = CountingEncoder()
    out = extract(data, [enc2], Cache(tmp_path / "c"), aligner=FixedAligner(), batch_size=4)
    assert enc2.embedded == 4 and len(out.faceset) == 12


def test_no_cache_persists_nothing(data, tmp_path):
    enc = CountingEncoder()
    extract(data, [enc], Cache(None), aligner=FixedAligner())
    enc2 = CountingEncoder()
    extract(data, [enc2], Cache(None), aligner=FixedAligner())
    assert enc2.embedded == 12


def test_bad_files_are_skipped_with_reasons_and_failures_cached(tmp_path):
    root = write_folder_dataset(tmp_path / "faces", n_ids=2, per_id=3)
    (root / "person_00" / "empty.jpg").write_bytes(b"")
    (root / "person_00" / "text.jpg").write_text("this is not a jpeg")
    red = np.zeros((120, 120, 3), np.uint8)
    red[0, 0] = (255, 0, 0)  # FixedAligner: "no face"
    Image.fromarray(red).save(root / "person_01" / "noface.png")
    fs = load_folder(root)
    al = FixedAligner()
    out = extract(fs, [CountingEncoder()], Cache(tmp_path / "c"), aligner=al)
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in out.skipped}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["text.jpg"].startswith("not an image")
    assert reasons["noface.png"].startswith("no face found")
    assert len(out.faceset) == 6
    al2 = FixedAligner()
    again = extract(fs, [CountingEncoder()], Cache(tmp_path / "c"), aligner=al2)
    assert al2.calls == 0 and len(again.skipped) == 3


def test_changed_photo_is_recomputed(data, tmp_path):
    extract(data, [CountingEncoder()], Cache(tmp_path / "c"), aligner=FixedAligner())
    p = data.paths[0]
    img = np.asarray(Image.open(p)).copy()
    img[50:60, 50:60] = 0
    Image.fromarray(img).save(p)
    enc = CountingEncoder()
    extract(data, [enc], Cache(tmp_path / "c"), aligner=FixedAligner())
    assert enc.embedded == 1


def test_two_encoders_share_detection(data, tmp_path):
    class Other(CountingEncoder):
        name = "other"

    e1, e2, al = CountingEncoder(), Other(), FixedAligner()
    out = extract(data, [e1, e2], Cache(tmp_path / "c"), aligner=al)
    assert al.calls == 12 and e1.embedded == 12 and e2.embedded == 12
    assert set(out.embeddings) == {"counting@1", "other@1"}


def test_array_faceset(tmp_path):
    from facepii.datasets import FaceSet

    imgs = np.random.default_rng(0).integers(0, 255, (6, 130, 130, 3), dtype=np.uint8)
    fs = FaceSet(labels=np.repeat([0, 1, 2], 2), images=imgs, source="arrays")
    enc = CountingEncoder()
    out = extract(fs, [enc], Cache(tmp_path / "c"), aligner=FixedAligner())
    assert len(out.faceset) == 6 and out.aligned([0, 1]).shape == (2, 112, 112, 3)
    enc2 = CountingEncoder()
    extract(fs, [enc2], Cache(tmp_path / "c"), aligner=FixedAligner())
    assert enc2.calls == 0
