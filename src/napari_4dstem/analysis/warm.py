"""Compile the numba kernels ahead (or load them from numba's cache), outside any GUI.

The kernels are ``numba.njit(cache=True)``: their first use in a fresh install compiles them
(tens of seconds each group on 2 cores), later processes load them from the cache (about a second).
:func:`iter_warm` runs the real core functions once on a tiny synthetic datacube of each dtype, so
that this cost is paid once, where the user chooses: ``napari-4dstem warmup`` after installing, or
the napari plugin's warm-up worker when its first dock opens (``widgets/_warmup.py``, which adds
napari's own Shapes kernels). numba compiles per argument type: each dtype of the patterns
(``uint16`` from most detectors, ``float32`` from processed data) is its own set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

__all__ = ["CORE_STEPS", "iter_warm", "tiny_cube"]


def tiny_cube(dtype) -> np.ndarray:
    """A 4x4 scan of 48x48 patterns: a bright disk and a square lattice of weaker disks.

    Parameters
    ----------
    dtype : numpy dtype
        Of the patterns.

    Returns
    -------
    ndarray ``(4, 4, 48, 48)``
        C-contiguous, of ``dtype``.
    """
    yy, xx = np.mgrid[:48, :48].astype(np.float64)
    pat = np.zeros((48, 48))
    for gy in (-12, 0, 12):
        for gx in (-12, 0, 12):
            pat += (200.0 if gy == gx == 0 else 40.0) * (np.hypot(yy - 24 - gy, xx - 24 - gx) < 4)
    cube = np.broadcast_to(pat + 2.0, (4, 4, 48, 48))
    return np.ascontiguousarray(cube).astype(dtype)


def warm_virtual(cube: np.ndarray) -> None:
    """Virtual images of disk, annulus and rectangle detectors, one and several at once."""
    from .virtual.detectors import AnnulusDetector, DiskDetector, RectangleDetector
    from .virtual.images import virtual_image, virtual_images

    for det in (DiskDetector((24, 24), 5), AnnulusDetector((24, 24), 6, 20), RectangleDetector((10, 30), (5, 40))):
        virtual_image(cube, det)
    virtual_images(cube, [DiskDetector((24, 24), 5), AnnulusDetector((24, 24), 6, 20)])


def warm_virtual_preview(cube: np.ndarray) -> None:
    """The Virtual imaging dock's binned drag preview: weighted (block-mean) detectors on a copy
    of the cube binned 4 x 4 on the detector, whose counts are summed into a wider dtype (uint16
    -> uint32), a type no other step compiles. Unwarmed, the first drag on a large in-RAM cube
    compiled it while dragging: no image for 3.8 s and the exact image 9.8 s after release, the
    exact jobs waiting on numba's compiler lock meanwhile (#15, UX audit session 13, defect 5)."""
    from ..data.datacube import DataCube
    from .virtual.detectors import AnnulusDetector, DiskDetector, RectangleDetector
    from .virtual.images import virtual_image
    from .virtual.preview import binned_detector, iter_preview_cube

    preview = iter_preview_cube(DataCube(cube), factor=4)
    try:
        while True:
            next(preview)
    except StopIteration as stop:
        binned = stop.value
    for det in (DiskDetector((24, 24), 5), AnnulusDetector((24, 24), 6, 20), RectangleDetector((10, 30), (5, 40))):
        virtual_image(binned, binned_detector(det, cube.shape[2:], 4))


def warm_com(cube: np.ndarray) -> None:
    """Centre of mass of every pattern."""
    from .virtual.com import center_of_mass

    center_of_mass(cube)


def warm_bragg(cube: np.ndarray) -> None:
    """Template correlation with each sub-pixel method, the lattice fit and the strain; the
    detection on 2 x 2-binned patterns (templates of radius >= 6 px, most real data) and with
    Orientation mapping's significance test (``ACOM_DISK_DEFAULTS``), both serial (one pattern:
    *Check current pattern*, the live overlay) and parallel. Unwarmed, the significance test and
    the binning compiled at the first Orientation check: 16 s on the FEI TIA int32 file, 31 s on
    the bundled gold sample after the old warm-up (load 6-8; 38 s in the UX audit of session 14)."""
    from .acom.matching import ACOM_DISK_DEFAULTS
    from .bragg.disks import bragg_vector_map, detect_in_stack, find_bragg_disks, origin_from_peaks
    from .bragg.lattice import Lattice, fit_lattice
    from .bragg.probe import make_template
    from .bragg.strain import strain_from_lattice

    yy, xx = np.mgrid[:48, :48]
    probe = 100.0 * (np.hypot(yy - 24, xx - 24) < 4)
    template = make_template(probe)
    pats = np.asarray(cube[0, :2])
    for subpixel in ("fit", "parabolic", "upsample"):
        detect_in_stack(pats, template, parallel=False, subpixel=subpixel)
    wide = make_template(100.0 * (np.hypot(yy - 24, xx - 24) < 7))  # radius >= 6: binned detection
    for parallel in (False, True):
        detect_in_stack(pats, template, parallel=parallel)
        detect_in_stack(pats, wide, parallel=parallel)
        detect_in_stack(pats, template, parallel=parallel, **ACOM_DISK_DEFAULTS)
        detect_in_stack(pats, wide, parallel=parallel, **ACOM_DISK_DEFAULTS)
    peaks = find_bragg_disks(cube, template=template)
    bragg_vector_map(peaks, origin=origin_from_peaks(peaks), shape=(48, 48))
    fit = fit_lattice(peaks, Lattice((12.0, 0.0), (0.0, 12.0)))
    strain_from_lattice(fit)


def warm_acom(cube: np.ndarray) -> None:
    """An orientation plan of the bundled gold at a coarse step, and the match of a few patterns
    drawn from it (dtype-independent: the matcher works on peak lists; first use of Orientation
    "Check current pattern" sat at 0 % for minutes with a cold cache)."""
    from .acom.matching import kinematic_bragg_peaks, match_orientations
    from .acom.plan import build_orientation_plan, zone_axis_orientation
    from .crystal.structure import bundled_crystal

    au = bundled_crystal("Au")
    plan = build_orientation_plan(au, energy_kev=300, k_max_inv_A=1.0, step_deg=6.0, thickness_A=50.0)
    U = zone_axis_orientation(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 2.0, 3.0]]))
    peaks = kinematic_bragg_peaks(au, U, k_max_inv_A=1.0, thickness_A=50.0, rng=np.random.default_rng(0))
    match_orientations(peaks, plan, min_peaks=3)


def warm_classify(cube: np.ndarray) -> None:
    """Classification's feature passes (binned patterns, polar, angular and fine radial profiles
    about each pattern's origin), per dtype. Unwarmed, the first *Classify* compiled them in its
    worker, and numba's compiler held the GIL for most of it: the GUI thread starved for the whole
    job (23-37 s on a 3 x 2 scan, worst stall 2-2.8 s, UX audit session 14, defect 4)."""
    from ..data.datacube import DataCube
    from .classify.features import FEATURE_KINDS, FeatureParams, iter_features

    # each kind: the angular and fine radial kernels write a slice of the output after the binned
    # pattern ("pattern+angular", "pattern+radial") and a whole array alone; a block of one scan
    # position makes that slice contiguous (another numba signature): both scans
    for scan in (cube, cube[:1, :1]):
        for kind in (k for k in FEATURE_KINDS if k != "bragg"):
            job = iter_features(DataCube(scan), FeatureParams(kind=kind))
            try:
                while True:
                    next(job)
            except StopIteration:
                pass


# in the order a user meets them
CORE_STEPS: tuple[Callable[[np.ndarray], None], ...] = (
    warm_virtual,
    warm_virtual_preview,
    warm_com,
    warm_bragg,
    warm_classify,
    warm_acom,
)


def iter_warm(
    dtypes: Sequence = ("uint16", "float32"), steps: Sequence[Callable[[np.ndarray], None]] = CORE_STEPS
) -> Iterator[tuple[str, str, float]]:
    """Run each step once on a tiny cube of each dtype; yield what ran and how long it took.

    Parameters
    ----------
    dtypes : sequence of numpy dtypes
        The pattern dtypes to compile for (default ``uint16`` and ``float32``).
    steps : sequence of callables
        Each takes the tiny cube (default :data:`CORE_STEPS`). Dtype-independent steps
        (``warm_acom``) run once.

    Yields
    ------
    (dtype, step, seconds) : (str, str, float)
        After each step.
    """
    done_once: set[str] = set()
    for dtype in dtypes:
        cube = tiny_cube(np.dtype(dtype))
        for step in steps:
            if step is warm_acom and step.__name__ in done_once:
                continue
            t0 = time.perf_counter()
            step(cube)
            done_once.add(step.__name__)
            yield np.dtype(dtype).name, step.__name__, time.perf_counter() - t0


if __name__ == "__main__":  # the plugin's warm-up runs this in a child process (widgets/_warmup.py)
    import sys

    for _ in iter_warm(sys.argv[1:] or ("uint16", "float32")):
        pass
