"""Image figures of reconstructions: similarity to the photos their templates came from, and sharpness."""

from __future__ import annotations

import numpy as np


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Structural similarity (Wang et al. 2004) of image pairs on luma, Gaussian window sigma 1.5.

    ``a``, ``b``: N x H x W x 3 uint8. Returns N values in [-1, 1].
    """
    import cv2

    def luma(x):
        x = np.asarray(x, np.float64)
        return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = np.empty(len(a))
    for i, (x, y) in enumerate(zip(luma(a), luma(b))):
        def blur(z):
            return cv2.GaussianBlur(z, (11, 11), 1.5)

        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        out[i] = m[5:-5, 5:-5].mean()
    return out


def sharpness(faces: np.ndarray) -> np.ndarray:
    """Fine detail per face: the variance of the Laplacian (3 x 3 aperture) of the grey image (Pech-Pacheco
    et al. 2000), on N x H x W x 3 uint8 faces. A blurred composite scores a small fraction of a photo's."""
    import cv2

    faces = np.asarray(faces, np.uint8)
    return np.array([cv2.Laplacian(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
                     for f in faces], np.float64)
