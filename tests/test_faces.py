import io

import numpy as np
import pytest
from PIL import Image

from facepii import faces
from facepii.errors import ImageError

from helpers import face_photo


def test_similarity_transform_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    ang, s, t = 0.3, 1.7, np.array([5.0, -3.0])
    R = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = s * src @ R.T + t
    m = faces.similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], s * R, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def _png(arr, mode=None):
    b = io.BytesIO()
    Image.fromarray(arr, mode).save(b, format="PNG")
    return b.getvalue()


@pytest.mark.parametrize("data, needle", [
    (b"", "empty file"),
    (b"hello, I am text", "not an image"),
])
def test_read_image_bad_bytes(data, needle):
    with pytest.raises(ImageError, match=needle):
        faces.read_image(data)


def test_read_image_truncated():
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    b = io.BytesIO()
    Image.fromarray(arr).save(b, format="JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        faces.read_image(b.getvalue()[: len(b.getvalue()) // 2])


def test_decompression_bomb_guard():
    data = _png(np.zeros((200, 300, 3), np.uint8))
    with pytest.raises(ImageError, match="decompression-bomb guard"):
        faces.read_image(data, max_pixels=10_000)
    assert faces.read_image(data).shape == (200, 300, 3)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="cannot read file"):
        faces.read_image(tmp_path / "nope.jpg")


def test_modes_become_rgb():
    gray = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    out = faces.read_image(_png(gray))
    assert out.shape == (64, 64, 3) and (out[..., 0] == gray).all()
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent -> white background
    assert (faces.read_image(_png(rgba)) == 255).all()


# ---- on a real photo (skipped without the shared data) ----------------------


@pytest.fixture(scope="module")
def photo(celeba):
    return faces.read_image(face_photo(celeba, 0))


@pytest.fixture(scope="module")
def sface():
    from facepii.encoders import SFaceEncoder

    return SFaceEncoder()


def _embed_bytes(data, sface):
    aligned, _ = faces.FaceAligner()(data)
    return sface.embed(aligned[None])[0]


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_real_photo_detect_align_embed(photo, sface):
    aligned, lm = faces.FaceAligner()(photo)
    assert aligned.shape == (112, 112, 3) and aligned.dtype == np.uint8
    # the eyes land on the template's eyes
    m = faces.similarity_transform(lm, faces.TEMPLATE_112)
    mapped = lm @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - faces.TEMPLATE_112).max() < 6


def test_grayscale_cmyk_exif_rotated_are_handled(photo, sface):
    ref = _embed_bytes(_png(photo), sface)
    im = Image.fromarray(photo)
    b = io.BytesIO()
    im.convert("CMYK").save(b, format="JPEG", quality=95)
    assert _cos(ref, _embed_bytes(b.getvalue(), sface)) > 0.9
    b = io.BytesIO()
    im.convert("L").save(b, format="PNG")
    assert _cos(ref, _embed_bytes(b.getvalue(), sface)) > 0.6
    # stored rotated by 90 degrees, with the EXIF orientation that says "rotate back"
    rot = im.transpose(Image.Transpose.ROTATE_90)  # stored turned 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation 6: display after rotating 90 degrees clockwise
    b = io.BytesIO()
    rot.save(b, format="JPEG", quality=95, exif=exif.tobytes())
    decoded = faces.read_image(b.getvalue())
    assert decoded.shape == photo.shape
    assert _cos(ref, _embed_bytes(b.getvalue(), sface)) > 0.9


def test_no_face_raises(sface):
    sky = np.full((200, 200, 3), (120, 170, 230), np.uint8)
    with pytest.raises(ImageError, match="no face found"):
        faces.FaceAligner()(sky)
