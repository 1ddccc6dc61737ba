"""Hostile classes 3 and 4: values are checked where they enter (no figure from garbage), the cache is
verified on read (bad entries recomputed and counted), and every file under a dataset root is used,
skipped or excluded with a reason (nothing dropped without a word)."""

import os
import sqlite3

import numpy as np
import pytest
from PIL import Image

from facepii import datasets as ds
from facepii.errors import DatasetError, EncoderError

from helpers import CountingEncoder, FixedAligner, run_cli, write_folder_dataset


def npz(tmp_path, emb, labels=None, **extra):
    p = tmp_path / "e.npz"
    np.savez(p, embeddings=emb, labels=np.repeat(np.arange(len(emb) // 2), 2) if labels is None else labels, **extra)
    return p


def good(n=20, d=8):
    return np.random.default_rng(0).normal(size=(n, d))


@pytest.mark.parametrize("emb, needle", [
    (np.vstack([np.zeros((1, 8)), good(19)]), "all zeros"),
    (good() + 1j, "real numbers"),
    (np.vstack([np.full((1, 8), 1e39), good(19)]), "beyond float32's range"),
    (np.ones((20, 8)), "identical"),
    (np.array([["a"] * 8] * 20), "real numbers"),
])
def test_degenerate_embeddings_are_refused(tmp_path, capsys, emb, needle):
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz(tmp_path, emb)}"], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_a_defense_that_makes_nan_templates_is_an_error(tmp_path, capsys):
    code, _, err = run_cli(["evaluate", "-q", "-d", f"embeddings:{npz(tmp_path, good())}", "--defense", "noise",
                            "--param", "sigma=1e39"], capsys)
    assert code == 2 and "NaN or infinite templates" in err


def test_npz_reads_only_its_members_and_says_what_is_wrong(tmp_path):
    import tracemalloc

    p = tmp_path / "big.npz"
    np.savez_compressed(p, embeddings=good(), labels=np.repeat(np.arange(10), 2),
                        unrelated=np.zeros(150_000_000, np.uint8))  # 150 MB inflated, ~150 kB on disk
    assert p.stat().st_size < 2_000_000
    tracemalloc.start()
    fs = ds.load_embeddings(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(fs) == 20 and peak < 50_000_000
    t = tmp_path / "text.npz"
    t.write_text("embeddings,labels\n1,2\n")
    with pytest.raises(DatasetError) as e:
        ds.load_embeddings(t)
    assert "pickle" not in str(e.value) and "not a zip archive" in str(e.value)


def test_tampered_cache_entries_are_recomputed_and_counted(tmp_path):
    from facepii.cache import Cache
    from facepii.extract import extract

    data = ds.load_folder(write_folder_dataset(tmp_path / "faces", n_ids=3, per_id=4))
    first = extract(data, [CountingEncoder()], Cache(tmp_path / "c"), aligner=FixedAligner())
    con = sqlite3.connect(tmp_path / "c" / "facepii-cache.sqlite3")
    keys = [k for (k,) in con.execute("SELECT key FROM embeddings ORDER BY key")]
    con.execute("UPDATE embeddings SET vec = substr(vec, 1, 4) WHERE key = ?", (keys[0],))   # truncated
    fake = np.ones(16, np.float32).tobytes()
    con.execute("UPDATE embeddings SET vec = ? WHERE key = ?", (fake, keys[1]))                # replaced
    lm_key = con.execute("SELECT key FROM landmarks LIMIT 1").fetchone()[0]
    con.execute("UPDATE landmarks SET lm = ? WHERE key = ?", (np.full(10, np.nan).tobytes(), lm_key))
    con.commit()
    con.close()
    enc, al = CountingEncoder(), FixedAligner()
    again = extract(data, [enc], Cache(tmp_path / "c"), aligner=al)
    assert again.stats["cache_rejected"] == 3 and enc.embedded == 2 and al.calls == 1 and len(again.faceset) == 12
    np.testing.assert_allclose(again.embeddings["counting@1"], first.embeddings["counting@1"], rtol=1e-6)


def test_old_cache_without_checksums_is_migrated_and_recomputed(tmp_path):
    from facepii.cache import Cache

    d = tmp_path / "c"
    d.mkdir()
    con = sqlite3.connect(d / "facepii-cache.sqlite3")
    con.executescript("CREATE TABLE landmarks (key TEXT PRIMARY KEY, lm BLOB, reason TEXT);"
                      "CREATE TABLE embeddings (key TEXT PRIMARY KEY, vec BLOB);")
    con.execute("INSERT INTO embeddings VALUES ('k', ?)", (np.ones(4, np.float32).tobytes(),))
    con.commit()
    con.close()
    c = Cache(d)
    assert c.get_embeddings(["k"], 4) == {} and c.rejected == 1
    c.put_embeddings({"k": np.ones(4)})
    assert list(c.get_embeddings(["k"], 4)) == ["k"]


def test_same_photo_under_two_identities_is_used_for_neither(tmp_path):
    from facepii.cache import Cache
    from facepii.extract import extract

    root = write_folder_dataset(tmp_path / "faces", n_ids=3, per_id=3)
    (root / "person_01" / "copy.png").write_bytes((root / "person_00" / "img_0.png").read_bytes())
    (root / "person_00" / "again.png").write_bytes((root / "person_00" / "img_1.png").read_bytes())
    ex = extract(ds.load_folder(root), [CountingEncoder()], Cache(None), aligner=FixedAligner())
    reasons = {s["path"].split("faces/")[1]: s["reason"] for s in ex.skipped}
    assert "under 2 identities" in reasons["person_00/img_0.png"]
    assert "under 2 identities" in reasons["person_01/copy.png"]
    pair = {"person_00/again.png", "person_00/img_1.png"}
    assert len(pair & set(reasons)) == 1 and "duplicate" in reasons[(pair & set(reasons)).pop()]


def test_celeba_photo_listed_under_two_identities(tmp_path):
    root = tmp_path / "c"
    (root / "img_celeba").mkdir(parents=True)
    for f in ("a.jpg", "b.jpg", "c.jpg"):
        (root / "img_celeba" / f).write_bytes(b"x")
    (root / "identity_CelebA.txt").write_text("a.jpg 1\na.jpg 2\nb.jpg 1\nc.jpg 1\nc.jpg 1\n")
    fs = ds.load_celeba(root)
    assert sorted(os.path.basename(p) for p in fs.paths) == ["b.jpg", "c.jpg"]
    reasons = " ".join(e["reason"] for e in fs.excluded)
    assert "listed under 2 identities" in reasons and "listed 2 times" in reasons


def test_float_tiff_is_read_not_called_faceless(tmp_path):
    from facepii.faces import read_image

    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    rgb = read_image(tmp_path / "f.tif")
    assert rgb.dtype == np.uint8 and rgb.max() == 255 and rgb.min() == 0


def onnx_model(path, outputs):
    """A tiny ONNX graph: input data (N, 3, 112, 112); outputs built from it."""
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 112, 112])
    nodes, outs = [], []
    for name, kind in outputs:
        if kind == "image":
            nodes.append(helper.make_node("Identity", ["data"], [name]))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, 112, 112]))
        else:
            nodes.append(helper.make_node("ReduceMean", ["data"], [name], axes=[2, 3], keepdims=0))
            outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3]))
    g = helper.make_graph(nodes, "g", [inp], outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_onnx_models_whose_output_is_no_embedding(tmp_path):
    from facepii.encoders import get_encoder

    img = onnx_model(tmp_path / "img.onnx", [("out", "image")])
    with pytest.raises(EncoderError, match="37632 values per face"):
        get_encoder(f"onnx:{img}")
    multi = onnx_model(tmp_path / "multi.onnx", [("gender", "vec"), ("age", "vec"), ("emb", "vec")])
    with pytest.raises(EncoderError, match="3 outputs.*output=NAME"):
        get_encoder(f"onnx:{multi}")
    enc = get_encoder(f"onnx:{multi}?output=emb")
    assert enc.dim == 3
    with pytest.raises(EncoderError, match="no output 'embedding'"):
        get_encoder(f"onnx:{multi}?output=embedding")


def test_every_file_under_a_folder_dataset_is_accounted_for(tmp_path):
    root = write_folder_dataset(tmp_path / "faces", n_ids=3, per_id=2)
    photo = (root / "person_00" / "img_0.png").read_bytes()
    (root / "loose.png").write_bytes(photo)                         # loose in the root
    (root / "person_01" / "nested").mkdir()
    (root / "person_01" / "nested" / "deep.png").write_bytes(photo)  # nested
    (root / "person_02" / ".hidden.png").write_bytes(photo)          # hidden
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(photo)                   # hidden folder
    (root / "person_02" / "notes.txt").write_text("x")               # not an image
    os.mkfifo(root / "person_02" / "pipe.png")                       # a FIFO named like a photo
    (root / "person_00" / "loop.png").symlink_to(root / "person_00" / "loop.png")  # a link loop
    (root / "README").write_text("x")                                # a file in the root
    fs = ds.load_folder(root)
    reasons = {os.path.relpath(e["path"], root): e["reason"] for e in fs.excluded}
    assert len(fs.paths) == 6
    assert "dataset root" in reasons["loose.png"]
    assert "nested folder" in reasons["person_01/nested/deep.png"]
    assert "hidden" in reasons["person_02/.hidden.png"] and "hidden" in reasons[".cache"]
    assert "not an image" in reasons["person_02/notes.txt"]
    assert "not a regular file" in reasons["person_02/pipe.png"]
    assert "loop" in reasons["person_00/loop.png"]
    assert "not a person's sub-folder" in reasons["README"]
    entries = {os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root) for f in files}
    accounted = {os.path.relpath(p, root) for p in fs.paths} | set(reasons)
    assert entries - {".cache/x.png"} <= accounted  # the hidden folder is excluded as a whole
