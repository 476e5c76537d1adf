"""Small seeded synthetic 4D-STEM generators for the analysis tests (the `synth` fixture), and crystal
orientations built from axes (the `orient` fixture)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def soft_disk(shape, center, radius, edge=0.5):
    """A disk of height 1 with a logistic edge of width ``edge`` px, sampled at pixel centres."""
    yy, xx = np.indices(shape, dtype=np.float64)
    d = np.hypot(yy - center[0], xx - center[1])
    return 1.0 / (1.0 + np.exp((d - radius) / edge))


def disk_cube(
    centers,
    *,
    det=(48, 48),
    radius=8.0,
    peak=60.0,
    background=0.5,
    bragg=(),
    rng=None,
    dtype=np.float32,
):
    """Patterns ``(scan_y, scan_x, *det)``: a bright-field disk at ``centers[iy, ix]`` (px),
    optional Bragg disks at fixed offsets ``bragg`` from it, a flat background, and Poisson
    noise when ``rng`` is given."""
    centers = np.asarray(centers, dtype=np.float64)
    sy, sx = centers.shape[:2]
    out = np.empty((sy, sx, *det), dtype=np.float64)
    for i in range(sy):
        for j in range(sx):
            c = centers[i, j]
            p = peak * soft_disk(det, c, radius)
            for dy, dx, amp in bragg:
                p += amp * soft_disk(det, (c[0] + dy, c[1] + dx), radius)
            out[i, j] = p + background
    if rng is not None:
        out = rng.poisson(out)
    return out.astype(dtype)


@pytest.fixture
def synth():
    """The generators above (test modules cannot import each other in importlib mode)."""
    return SimpleNamespace(soft_disk=soft_disk, disk_cube=disk_cube)


def axis_rotation(axis, angle):
    """The rotation by ``angle`` (rad) about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def beam_along(d, phi=0.3):
    """An orientation (crystal -> lab) whose beam direction in the crystal frame is ``d``, turned
    by ``phi`` (rad) about the beam."""
    from napari_4dstem.analysis.acom.plan import rotation_z

    d = np.asarray(d, float) / np.linalg.norm(d)
    e1 = np.cross(d, [0.3, 0.5, 0.8])
    e1 /= np.linalg.norm(e1)
    U = np.stack([e1, np.cross(d, e1), d])  # rows: lab x, y, z in the crystal frame
    assert np.isclose(np.linalg.det(U), 1.0)
    return rotation_z(phi) @ U


@pytest.fixture
def orient():
    """The orientation builders above (``axis_rotation``, ``beam_along``) for the ACOM tests."""
    return SimpleNamespace(axis_rotation=axis_rotation, beam_along=beam_along)
