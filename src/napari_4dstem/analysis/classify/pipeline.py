"""The whole classification of a dataset: origin, features, classes, class mean patterns.

:func:`iter_classify` is the one call the CLI and the napari widget make. It streams the
data at most three times (origin when the calibration has no origin map, features, class
means), each pass block by block in the native dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ...data.calibration import Calibration
from ...data.results import BraggPeaks, DiffractionImage, RealSpaceMap
from ...engine.chunks import iter_scan_blocks
from ...engine.jobs import Job, Progress, eager, job_doc, run_job
from ...errors import DataShapeError
from .features import FeatureParams, bragg_features, iter_features
from .model import Classification, ClassifyParams, iter_classify_features

__all__ = ["classify", "iter_class_means", "iter_classify", "to_emd_objects"]


@job_doc
def iter_class_means(
    data: Any, labels: np.ndarray, *, n_classes: int | None = None, scan_chunk=None
) -> Job[np.ndarray]:
    """Job: the mean pattern of every class, in one streamed pass.

    Parameters
    ----------
    %(data)s
    labels : int array ``(scan_y, scan_x)``
        Class of each pattern; negative labels are left out.
    n_classes : int, optional
        Number of classes (default ``labels.max() + 1``).
    scan_chunk : (int, int), optional
        Scan block read at a time (default: the engine's choice for the data's chunks).

    Yields
    ------
    %(yields)s

    Returns
    -------
    ndarray ``(n_classes, k_y, k_x)`` float32
        The generator's return value: the mean pattern of each class (sums in float64, a block at
        a time; zeros for an empty class).

    Raises
    ------
    DataShapeError
        When ``labels`` do not have the scan's shape.
    """
    arr = getattr(data, "data", data) if hasattr(data, "calibration") else data
    labels = np.asarray(labels)
    shape = tuple(int(s) for s in arr.shape)
    if labels.shape != shape[:2]:
        raise DataShapeError(f"labels have shape {labels.shape}, the scan is {shape[:2]}")
    k = int(n_classes if n_classes is not None else labels.max() + 1)
    sums = np.zeros((k, *shape[2:]))
    counts = np.bincount(labels.ravel()[labels.ravel() >= 0], minlength=k)[:k]
    from ...engine.chunks import default_scan_chunk, n_blocks, native_chunks

    chunk = scan_chunk or default_scan_chunk(shape, np.dtype(arr.dtype).itemsize, native_chunks(arr))
    total = n_blocks(shape, chunk)
    for i, (sy, sx, block) in enumerate(iter_scan_blocks(arr, chunk)):
        lab = labels[sy, sx]
        for c in np.unique(lab):
            if 0 <= c < k:
                sums[c] += block[lab == c].sum(axis=0, dtype=np.float64)
        yield Progress(i + 1, total, "class mean patterns")
    return (sums / np.maximum(counts, 1)[:, None, None]).astype(np.float32)


@job_doc
def iter_classify(
    data: Any,
    *,
    features: FeatureParams | None = None,
    params: ClassifyParams | None = None,
    origin: str | np.ndarray = "auto",
    peaks: BraggPeaks | None = None,
    calibration: Calibration | None = None,
    class_means: bool = True,
    exclude_bf: bool = True,
    scan_chunk: tuple[int, int] | None = None,
    backend: Any = None,
) -> Job[Classification]:
    """Job: classify every pattern of ``data`` without knowing the classes first.

    Parameters
    ----------
    %(data)s
    features : FeatureParams, optional
        Which features (default: binned patterns about the origin).
    params : ClassifyParams, optional
        Decomposition, clustering, number of classes.
    origin : {"auto", "calibration", "fixed"} or array ``(scan_y, scan_x, 2)``
        Origin of each pattern: ``"auto"`` uses the calibration's origin map when it has one,
        else measures the bright-field disk centre of every pattern and fits the descan plane
        (one extra pass); ``"calibration"`` uses the calibration's origin (map) or the detector
        centre; ``"fixed"`` the detector centre; or an explicit map.
    peaks : BraggPeaks, optional
        Needed for ``features.kind == "bragg"`` (no pass over the data for features then).
    calibration : Calibration, optional
        Defaults to the DataCube's.
    class_means : bool
        Also compute the full-resolution mean pattern of each class (one pass).
    exclude_bf : bool
        When ``features.inner_px`` is 0, leave out the bright-field disk (radius found on the
        mean of a sparse grid of patterns, plus a third and 1 px): its intensity mostly
        follows thickness, not structure.
    %(scan_chunk)s

    Yields
    ------
    Progress
        From each pass and each stage of the classification.

    Returns
    -------
    Classification
        The generator's return value, with ``class_patterns`` when ``class_means``; its params
        record the source and the origin used.

    Raises
    ------
    ValueError
        For an unknown ``origin``, or Bragg features without ``peaks``.
    """
    from ..virtual.images import as_datacube

    fp = features or FeatureParams()
    cube, cal = as_datacube(data, calibration)
    bf = _NOT_YET  # the bright-field disk, found once (a Cancel point every grid row)
    origin_map = None
    if isinstance(origin, np.ndarray):
        origin_map = origin
    elif origin == "auto":
        if cal.origin_map_px is not None:
            origin_map = cal.origin_map_px
        else:
            from ..virtual.origin import fit_origin_plane, iter_measure_origin

            # started at the bright-field disk found on the pattern's centre of symmetry: in a
            # thick crystal a Bragg disk can be brighter than the unscattered beam
            bf = yield from _iter_bf_disk(cube)
            measured = yield from iter_measure_origin(
                cube, calibration=cal, bf_disk=bf, scan_chunk=scan_chunk, backend=backend
            )
            origin_map = fit_origin_plane(measured).origin_map_px
    elif origin == "fixed":
        H, W = cube.detector_shape
        origin_map = np.array([(H - 1) / 2, (W - 1) / 2])
    elif origin != "calibration":
        raise ValueError(f"origin must be 'auto', 'calibration', 'fixed' or an array, got {origin!r}")
    if exclude_bf and fp.inner_px == 0 and fp.kind != "bragg":
        bf = (yield from _iter_bf_disk(cube)) if bf is _NOT_YET else bf
        if bf is not None:
            fp = dataclasses.replace(fp, inner_px=1.33 * bf.radius_px + 1.0)
    if fp.kind == "bragg":
        if peaks is None:
            raise ValueError("Bragg-vector features need detected disks (peaks=...)")
        feats = bragg_features(peaks, fp, origin_px=origin_map, detector_shape=cube.detector_shape)
    else:
        feats = yield from iter_features(
            cube, fp, origin_px=origin_map, calibration=cal, scan_chunk=scan_chunk, backend=backend
        )
    result = yield from iter_classify_features(feats, params)
    if class_means:
        means = yield from iter_class_means(cube, result.labels, n_classes=result.n_classes, scan_chunk=scan_chunk)
        result = dataclasses.replace(result, class_patterns=means)
    result.params["source"] = cube.source or cube.name
    result.params["origin"] = origin if isinstance(origin, str) else "given map"
    return result


_NOT_YET = object()
_BF_MESSAGE = "finding the bright-field disk"


def _grid_mean(cube) -> np.ndarray:
    """Sum of at most 16 x 16 patterns on a grid over the scan."""
    return run_job(_iter_grid_mean(cube))


def _iter_grid_mean(cube) -> Job[np.ndarray]:
    """:func:`_grid_mean` as a job: a step (a Cancel point) after each grid row read."""
    sy, sx = cube.scan_shape
    iy = np.unique(np.linspace(0, sy - 1, min(sy, 16)).astype(int))
    ix = np.unique(np.linspace(0, sx - 1, min(sx, 16)).astype(int))
    acc = np.zeros(cube.detector_shape)
    yield Progress(0, len(iy), _BF_MESSAGE)
    for k, i in enumerate(iy):
        row = cube.data[int(i)]
        row = np.asarray(row.compute() if hasattr(row, "compute") else row)
        acc += row[ix].sum(axis=0, dtype=np.float64)
        yield Progress(k + 1, len(iy), _BF_MESSAGE)
    return acc


def symmetry_centre(pattern: np.ndarray) -> tuple[float, float]:
    """Centre of symmetry ``(k_y, k_x)`` of a pattern, from Friedel's law.

    Centre of symmetry ``(k_y, k_x)`` of a pattern (Friedel's law: disk positions come in pairs ``+-g`` about
    the unscattered beam): the peak of the pattern's self-convolution (square-rooted intensities, so weak
    disks count too) lies at twice the centre; sub-pixel by a parabola through the peak and its neighbours.
    """
    from scipy.signal import fftconvolve

    a = np.sqrt(np.maximum(np.asarray(pattern, np.float64), 0))
    a -= np.median(a)
    conv = fftconvolve(a, a, mode="full")
    t = np.unravel_index(int(np.argmax(conv)), conv.shape)
    out = []
    for ax in range(2):
        i = t[ax]
        if 0 < i < conv.shape[ax] - 1:
            idx = list(t)
            idx[ax] = i - 1
            lo = conv[tuple(idx)]
            idx[ax] = i + 1
            hi = conv[tuple(idx)]
            den = lo - 2 * conv[t] + hi
            off = 0.5 * (lo - hi) / den if den < 0 else 0.0
        else:
            off = 0.0
        out.append((i + float(np.clip(off, -0.5, 0.5))) / 2)
    return out[0], out[1]


def _bf_disk(cube):
    """The bright-field disk on the mean of a grid of patterns, or None.

    The bright-field disk on the mean of a grid of patterns: its radius from the brightest disk (every disk
    has the probe's size), its centre the pattern's centre of symmetry when the brightest disk is not there (a
    Bragg disk brighter than the unscattered beam). None without a clear disk.
    """
    return run_job(_iter_bf_disk(cube))


def _iter_bf_disk(cube) -> Job[Any]:
    """:func:`_bf_disk` as a job.

    Cancel points while the grid is read, and while scipy.signal (:func:`symmetry_centre`;
    seconds on first use under load) is imported.
    """
    from ...engine.jobs import iter_imports
    from ..virtual.origin import BFDisk, find_bf_disk

    acc = yield from _iter_grid_mean(cube)
    yield from iter_imports(("scipy.signal",), _BF_MESSAGE)
    try:
        disk = find_bf_disk(acc)
    except DataShapeError:  # no clear disk (e.g. no direct beam): keep it
        return None
    c = symmetry_centre(acc)
    if np.hypot(c[0] - disk.center_px[0], c[1] - disk.center_px[1]) > disk.radius_px:
        return BFDisk(c, disk.radius_px)
    return disk


classify = eager(iter_classify, "Classify every pattern.")


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            for kk, vv in _jsonable(v).items():
                out[f"{k}.{kk}"] = vv
        elif v is None:
            out[k] = "None"
        else:
            out[k] = v
    return out


def to_emd_objects(result: Classification, calibration: Calibration | None = None) -> list:
    """The result as objects :func:`napari_4dstem.io.emd.write` stores.

    Parameters
    ----------
    result : Classification
        The classification.
    calibration : Calibration, optional
        Attached to every object (default an empty one).

    Returns
    -------
    list of RealSpaceMap and DiffractionImage
        Label map, probabilities, mixing fractions, loadings, class mean patterns and (for 2D
        features) component patterns, all with the parameters (flattened to EMD-storable
        values); py4DSTEM reads them as RealSlice/DiffractionSlice nodes.
    """
    cal = calibration or Calibration()
    params = _jsonable(dict(result.params))
    params.update(
        n_classes=result.n_classes,
        suggested_n_classes=result.suggested_n_classes,
        bic_k=list(result.bic),
        bic=list(result.bic.values()),
        silhouette_k=list(result.silhouette),
        silhouette=list(result.silhouette.values()),
        explained_variance_ratio=np.asarray(result.explained_variance_ratio, float),
        noise_variance=result.noise_variance,
    )
    ks = tuple(f"class_{c}" for c in range(result.n_classes))
    objs: list = [
        RealSpaceMap(result.labels, name="class_labels", units="", calibration=cal, params=params),
        RealSpaceMap(result.probability, name="class_probability", channels=ks, calibration=cal, params=params),
        RealSpaceMap(result.mixing, name="class_mixing", channels=ks, calibration=cal, params=params),
        RealSpaceMap(
            result.loadings,
            name="component_loadings",
            channels=tuple(f"component_{i}" for i in range(result.loadings.shape[-1])),
            calibration=cal,
            params=params,
        ),
    ]
    if result.class_patterns is not None:
        for c, m in enumerate(result.class_patterns):
            objs.append(
                DiffractionImage(
                    m,
                    name=f"class_{c}_mean",
                    units="counts",
                    calibration=cal,
                    params={"class": c, "n_patterns": int(result.class_sizes()[c])},
                )
            )
    if result.components.ndim == 3:
        for i, comp in enumerate(result.components):
            objs.append(
                DiffractionImage(
                    comp,
                    name=f"component_{i}",
                    units="",
                    calibration=cal,
                    params={"feature_space": "binned, normalised, transformed about the origin"},
                )
            )
    return objs
