"""One resize for both paths into a face model: onnxruntime's (numpy) and the torch copy's (differentiable).

A model whose input is not the aligned 112 x 112 face (160, 224, 96 x 112, or a tight crop brought back
to 112) needs the face resized before the graph. The two paths into the same graph must see the same
numbers, or a white-box attacker differentiates another function than the one it is judged by: an
integer resize (OpenCV's fixed-point INTER_LINEAR, rounded to uint8) on one side and a float one on the
other differ by up to half a grey level per pixel, which a 224-pixel model turned into a 1% difference
of its features.

So both paths apply one linear map: bilinear interpolation with half-pixel centres (the geometry of
OpenCV's INTER_LINEAR and of ``torch.nn.functional.interpolate(..., align_corners=False)``, no
anti-aliasing), written as two small matrices, rows x columns, applied to float pixels. numpy computes
it in float64 and rounds once to float32; torch applies the same matrices in float32 (differentiable);
the two agree to about 1e-5 grey levels (checked by :func:`facepii.torch_onnx.verify`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: in the cache key of every encoder that resizes: embeddings made with another resize are not reused
RESIZE_VERSION = "bilinear-f64/v1"


@lru_cache(maxsize=32)
def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out x n_in) float64: output sample i takes source position (i + 0.5) * n_in / n_out - 0.5, clamped to
    the image, linearly between its two neighbours. Each row sums to 1."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize from {n_in} to {n_out} samples")
    M = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        src = min(max((i + 0.5) * scale - 0.5, 0.0), n_in - 1.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        w = src - i0
        M[i, i0] += 1.0 - w
        M[i, i1] += w
    M.setflags(write=False)
    return M


def resize(faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """N x H x W x C faces (any numeric type) -> N x h x w x C float32, by :func:`resize_matrix`."""
    h, w = size
    x = np.asarray(faces, np.float64)
    if x.shape[1:3] == (h, w):
        return x.astype(np.float32)
    R, C = resize_matrix(x.shape[1], h), resize_matrix(x.shape[2], w)
    return np.einsum("oh,nhwc,pw->nopc", R, x, C, optimize=True).astype(np.float32)


def resize_torch(x, size: tuple[int, int]):
    """The same map on an N x C x H x W float tensor (differentiable)."""
    import torch

    h, w = size
    if tuple(x.shape[-2:]) == (h, w):
        return x
    R = torch.from_numpy(resize_matrix(x.shape[-2], h).astype(np.float32)).to(x.device)
    C = torch.from_numpy(resize_matrix(x.shape[-1], w).astype(np.float32)).to(x.device)
    return torch.matmul(torch.matmul(R, x), C.T)
