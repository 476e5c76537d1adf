"""Translate core objects <-> napari layer data tuples (no napari import needed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .data._blockread import checked_view
from .data.calibration import Calibration
from .data.datacube import DataCube
from .data.results import BraggPeaks, DiffractionImage, RealSpaceMap

__all__ = ["calibration_from_layer_meta", "datacube_layer", "peaks_layer", "result_layer", "result_layers"]

RGB_CHANNELS = ("r", "g", "b")
# stacks with more channels open as one hidden layer (channel, scan_y, scan_x) with a slider
MAX_CHANNEL_LAYERS = 8


def _limits(img: np.ndarray) -> tuple[float, float]:
    img = np.asarray(img, dtype=np.float64)
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(finite, [0.1, 99.9])
    if hi <= lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


def display_scan_chunk(dc: DataCube) -> tuple[int, int] | None:
    """The scan chunk of a file's dask view for napari: the file's own storage chunk (an HDF5 or
    zarr dataset chunked over several positions, e.g. our EMD files' 8 x 8 patterns), else None
    (``DataCube.default_scan_chunk``, about 32 MiB).

    napari slices one pattern per scan step through the layer's dask array, and dask reads whole
    dask chunks: with one 32 MiB chunk over the bundled sample's sixteen 8 x 8 HDF5 chunks, every
    step copied all of them out of HDF5's cache (12 ms CPU, 110-130 ms wall under load); with the
    storage's chunks a step reads one (3 ms, #15). The docks' passes still read 32 MiB blocks
    (``default_scan_chunk`` takes multiples of these chunks). Data that already is a dask array
    (the readers' frame stacks) or is read per position keeps its chunks."""
    if isinstance(dc.data, np.ndarray) or hasattr(dc.data, "__dask_graph__"):
        return None
    st = dc.storage_chunks
    if st is None or len(st) != 4 or st[0] * st[1] < 4:
        return None
    shape = tuple(int(v) for v in dc.data.shape)
    pattern_bytes = shape[2] * shape[3] * np.dtype(dc.data.dtype).itemsize
    return grown_scan_chunk(shape[:2], (int(st[0]), int(st[1])), pattern_bytes)


# a display chunk grows (in storage chunks) until it holds this much, or the scan this few chunks
DISPLAY_CHUNK_MIN_BYTES = 2**20
DISPLAY_CHUNK_MAX_COUNT = 4096


def grown_scan_chunk(scan_shape: tuple[int, int], storage: tuple[int, int], pattern_bytes: int) -> tuple[int, int]:
    """The storage chunk ``storage`` over the scan, doubled (the shorter side first) until a chunk
    holds :data:`DISPLAY_CHUNK_MIN_BYTES` or the scan has at most :data:`DISPLAY_CHUNK_MAX_COUNT`
    chunks (a multiple of the storage chunk, or the whole axis).

    A file stored in 2 x 2 scan chunks gave 262,144 dask chunks for a 1024 x 1024 scan: dask's
    graph alone cost 156-410 ms a step. Storage chunks already that big are kept (a step reads one).
    """
    ny, nx = (int(v) for v in scan_shape)
    cy, cx = min(int(storage[0]), ny), min(int(storage[1]), nx)
    while cy * cx * pattern_bytes < DISPLAY_CHUNK_MIN_BYTES and -(-ny // cy) * -(-nx // cx) > DISPLAY_CHUNK_MAX_COUNT:
        if cy < ny and (cy <= cx or cx >= nx):
            cy = min(2 * cy, ny)
        elif cx < nx:
            cx = min(2 * cx, nx)
        else:
            break
    return cy, cx


def datacube_layer(dc: DataCube) -> tuple[Any, dict[str, Any], str]:
    """A lazy 4D image layer tuple: scale, units and axis labels from the calibration.

    Contrast limits come from the pattern at the scan centre (one frame read), so opening
    never scans the dataset.
    """
    cy, cx = dc.scan_shape[0] // 2, dc.scan_shape[1] // 2
    # a memmap is checked against its file on every slice: napari never touches a page past
    # the end of a file another program truncated (SIGBUS would end the session)
    data = checked_view(dc.data) if isinstance(dc.data, np.ndarray) else dc.to_dask(display_scan_chunk(dc))
    kwargs = {
        "name": dc.name,
        **dc.calibration.napari_kwargs("4d"),
        "contrast_limits": _limits(dc.pattern(cy, cx)),
        "multiscale": False,
        "colormap": "inferno",
        "metadata": {
            "napari_4dstem": {
                "kind": "datacube",
                "calibration": dc.calibration,
                "source": dc.source,
                "metadata": dc.metadata,
            }
        },
    }
    return (data, kwargs, "image")


def result_layer(
    obj: RealSpaceMap | DiffractionImage, *, source: str | None = None, **extra
) -> tuple[Any, dict[str, Any], str]:
    """Layer tuple for a 2D result; a map's channels become separate layers by the caller.

    ``source``: the file it was read from (recorded with its node name, so that a pipeline
    using the layer, e.g. as the probe, can name it in a script)."""
    part = "k" if isinstance(obj, DiffractionImage) else "scan"
    kwargs = {
        "name": obj.name,
        **obj.calibration.napari_kwargs(part),
        "contrast_limits": _limits(obj.data),
        "metadata": {
            "napari_4dstem": {
                "kind": "diffraction" if part == "k" else "real_space",
                "calibration": obj.calibration,
                "units": obj.units,
                "params": dict(obj.params),
                **({"source": str(source), "node": obj.name} if source is not None else {}),
            }
        },
        **extra,
    }
    return (obj.data, kwargs, "image")


def result_layers(obj: RealSpaceMap | DiffractionImage, *, source: str | None = None) -> list[tuple]:
    """Layer tuples for a result: one image, one RGB image (channels r, g, b), or one image per
    channel of a stack (named ``"name [channel]"``; the writer saves each as a 2D map that
    records its channel)."""
    if isinstance(obj, DiffractionImage) or obj.data.ndim == 2:
        return [result_layer(obj, source=source)]
    if obj.channels == RGB_CHANNELS:
        data, kw, kind = result_layer(obj, source=source, rgb=True)
        kw.pop("contrast_limits", None)
        kw["metadata"]["napari_4dstem"]["rgb_channels"] = list(RGB_CHANNELS)
        return [(data, kw, kind)]
    if len(obj.channels) > MAX_CHANNEL_LAYERS:  # e.g. orientation matrices of every top-N match
        data, kw, kind = result_layer(obj, source=source, visible=False)
        scan = obj.calibration.napari_kwargs("scan")
        kw.update(
            scale=(1.0, *scan["scale"]), units=("", *scan["units"]), axis_labels=("channel", *scan["axis_labels"])
        )
        kw["metadata"]["napari_4dstem"]["channels"] = list(obj.channels)
        return [(np.moveaxis(obj.data, -1, 0), kw, kind)]
    out = []
    for k, c in enumerate(obj.channels):
        one = RealSpaceMap(
            obj.data[..., k],
            name=f"{obj.name} [{c}]",
            units=obj.units,
            calibration=obj.calibration,
            params={**obj.params, "channel": c, "of": obj.name},
        )
        data, kw, kind = result_layer(one, source=source, visible=k == 0)
        if source is not None:
            kw["metadata"]["napari_4dstem"]["node"] = obj.name
        out.append((data, kw, kind))
    return out


def peaks_layer(peaks: BraggPeaks, *, source: str | None = None, **extra) -> tuple[Any, dict[str, Any], str]:
    """A 4D Points layer ``(scan_y, scan_x, k_y, k_x)`` of Bragg peaks (shown on the pattern of
    the current scan position), intensity and correlation as features; the writer saves it back
    as BraggPeaks."""
    pos = peaks.position_index()
    sx = peaks.scan_shape[1]
    data = np.stack([pos // sx, pos % sx, peaks.qy, peaks.qx], axis=1).astype(np.float64)
    kwargs = {
        "name": peaks.name,
        **peaks.calibration.napari_kwargs("4d"),
        "features": {"intensity": peaks.intensity, "correlation": peaks.correlation},
        "size": 6,
        "face_color": "transparent",
        "border_color": "lime",
        "out_of_slice_display": False,
        "metadata": {
            "napari_4dstem": {
                "kind": "braggpeaks",
                "calibration": peaks.calibration,
                "scan_shape": list(peaks.scan_shape),
                "params": dict(peaks.params),
                **({"source": str(source), "node": peaks.name} if source is not None else {}),
            }
        },
        **extra,
    }
    return (data, kwargs, "points")


def peaks_from_points(data: Any, meta: dict[str, Any]) -> BraggPeaks:
    """BraggPeaks from a Points layer: 4 columns ``(scan_y, scan_x, k_y, k_x)`` (rows rounded
    to scan positions), or 2 columns ``(k_y, k_x)`` (the peaks of one pattern)."""
    from .errors import DataShapeError

    pts = np.asarray(data, dtype=np.float64)
    ours = (meta.get("metadata") or {}).get("napari_4dstem", {})
    feats = meta.get("features")
    cols = {}
    for f in ("intensity", "correlation"):
        v = None
        if feats is not None and f in feats:
            v = np.asarray(feats[f], dtype=np.float64)
        cols[f] = v if v is not None and v.shape == (len(pts),) else np.full(len(pts), np.nan)
    if pts.ndim != 2 or pts.shape[1] not in (2, 4):
        raise DataShapeError(f"Bragg peaks are 4D (scan_y, scan_x, k_y, k_x) or 2D points, got shape {pts.shape}")
    if pts.shape[1] == 2:
        pos = np.zeros(len(pts), np.int64)
        scan_shape = (1, 1)
    else:
        iy, ix = np.rint(pts[:, 0]).astype(np.int64), np.rint(pts[:, 1]).astype(np.int64)
        if len(pts) and (iy.min() < 0 or ix.min() < 0):
            raise DataShapeError("Bragg peaks at negative scan positions")
        given = ours.get("scan_shape")
        scan_shape = (
            tuple(int(v) for v in given) if given else ((int(iy.max()) + 1, int(ix.max()) + 1) if len(pts) else (1, 1))
        )
        if len(pts) and (iy.max() >= scan_shape[0] or ix.max() >= scan_shape[1]):
            raise DataShapeError(f"Bragg peaks outside the scan {scan_shape}")
        pos = iy * scan_shape[1] + ix
        pts = pts[:, 2:]
    order = np.argsort(pos, kind="stable")
    counts = np.bincount(pos, minlength=scan_shape[0] * scan_shape[1])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return BraggPeaks(
        scan_shape,
        offsets,
        pts[order, 0],
        pts[order, 1],
        cols["intensity"][order],
        cols["correlation"][order],
        name=str(meta.get("name") or "braggpeaks").replace("/", "_"),
        calibration=calibration_from_layer_meta(meta),
        params=dict(ours.get("params") or {}),
    )


def calibration_from_layer_meta(meta: dict[str, Any]) -> Calibration:
    """The Calibration a layer carries (our metadata), else one rebuilt from scale and units."""
    ours = (meta.get("metadata") or {}).get("napari_4dstem", {})
    cal = ours.get("calibration")
    if isinstance(cal, Calibration):
        return cal
    if isinstance(cal, dict):
        return Calibration.from_dict(cal)
    scale, units = meta.get("scale"), meta.get("units")
    if scale is not None and units is not None and len(scale) == 4:
        return Calibration.from_napari(scale, units)
    return Calibration()
