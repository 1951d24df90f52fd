"""5-point similarity alignment to the usual 112-pixel face template, scaled to the crop size.

Each face's five landmarks (eyes, nose tip, mouth corners) are mapped onto the template by
the least-squares similarity transform (rotation, uniform scale, shift; Umeyama 1991), and
the crop is sampled through its inverse with bilinear interpolation, replicating the frame's
border where the crop reaches outside it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# The 5-point template of the ArcFace / InsightFace 112x112 crops (x, y in pixels): left eye,
# right eye, nose tip, left mouth corner, right mouth corner.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
TEMPLATE_SIZE = 112


def face_template(size: int) -> np.ndarray:
    """The template's five points for a ``size`` x ``size`` crop."""
    return TEMPLATE_112 * (size / TEMPLATE_SIZE)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 matrix [sR | t] minimising sum |dst - (s R src + t)|^2, R a proper rotation."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])  # no reflection
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / src_c.var(axis=0).sum()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align_faces(frames: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """uint8 frames [n, H, W, 3] and their faces' landmarks [n, 5, 2] -> uint8 crops [n, size, size, 3]."""
    n, height, width = frames.shape[:3]
    template = face_template(size)
    inverse = np.empty((n, 2, 3))
    for i in range(n):
        forward = similarity_transform(landmarks[i], template)
        linear_inv = np.linalg.inv(forward[:, :2])
        inverse[i] = np.hstack([linear_inv, -linear_inv @ forward[:, 2:]])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    crop_points = np.stack([xs.ravel(), ys.ravel(), np.ones(size * size)])  # (3, size^2) pixel centres
    frame_points = inverse @ crop_points  # (n, 2, size^2) where each crop pixel lies in its frame
    # grid_sample with align_corners=False puts pixel centre i at (2i + 1) / extent - 1
    grid_x = (2 * frame_points[:, 0] + 1) / width - 1
    grid_y = (2 * frame_points[:, 1] + 1) / height - 1
    grid = torch.from_numpy(np.stack([grid_x, grid_y], axis=-1).reshape(n, size, size, 2)).float()
    pixels = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    crops = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return crops.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()

