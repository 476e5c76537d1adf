"""Export of a live image (UX point 21): the raw values as a float32 TIFF, and the image as shown
(display scale, colormap and contrast limits of its layer on the Real space canvas) as a PNG; and
the dock's whole 4D dataset (.h5 with its calibration, .npy, .zarr) after a warning with its size.

The raw export keeps the numbers for analysis elsewhere (ImageJ, Python); the PNG is for slides.
``tifffile`` is optional (napari brings it): without it the raw export writes ``.npy`` beside the
asked name and says so. Files are written in a worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QWidget

from ..errors import Napari4DSTEMError


def export_raw(img, path) -> tuple[Path, str]:
    """Write ``img`` as float32: a TIFF for ``.tif``/``.tiff`` (tifffile), ``.npy`` otherwise or
    when tifffile is missing. Returns ``(written path, message)``."""
    p = Path(path)
    a = np.ascontiguousarray(np.asarray(img, dtype=np.float32))
    if p.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile
        except ImportError:
            out = p.with_suffix(".npy")
            np.save(out, a)
            return out, f"tifffile is not installed: wrote the raw float32 values to {out.name} instead"
        tifffile.imwrite(p, a)
        return p, f"wrote the raw float32 values to {p.name}"
    out = p if p.suffix.lower() == ".npy" else p.with_suffix(".npy")
    np.save(out, a)
    return out, f"wrote the raw float32 values to {out.name}"


def display_rgba(data, contrast_limits, colormap, gamma: float = 1.0) -> np.ndarray:
    """``(ny, nx, 4)`` uint8: ``data`` as napari draws it, scaled to ``contrast_limits``, raised
    to ``gamma`` and mapped through ``colormap`` (a napari Colormap); NaN transparent."""
    a = np.asarray(data, dtype=np.float64)
    lo, hi = (float(v) for v in contrast_limits)
    t = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    if gamma != 1.0:
        t = t**gamma
    bad = ~np.isfinite(a)
    t[bad] = 0.0
    rgba = np.asarray(colormap.map(t.ravel()), dtype=np.float64).reshape(*a.shape, 4)
    rgba[bad, 3] = 0.0
    return np.round(np.clip(rgba, 0.0, 1.0) * 255).astype(np.uint8)


def export_png(rgba: np.ndarray, path) -> tuple[Path, str]:
    """Write an RGBA uint8 image as PNG (matplotlib's writer)."""
    from matplotlib.image import imsave

    p = Path(path)
    if p.suffix.lower() != ".png":
        p = p.with_suffix(".png")
    imsave(p, rgba)
    return p, f"wrote the image as shown to {p.name}"


def export_datacube(dc, path) -> tuple[Path, str]:
    """Worker: write the whole datacube (.h5/.emd with its calibration, .npy, .zarr), streamed in
    scan blocks, atomically (``io.save_datacube``)."""
    from ..io import save_datacube

    out = save_datacube(path, dc, overwrite=True)
    return Path(out), f"wrote the datacube {tuple(dc.shape)} {dc.dtype} to {Path(out).name}"


def datacube_warning(dc) -> str:
    """What exporting the raw datacube means: its size, and that it is every count."""
    gib = dc.nbytes / 2**30
    return (
        f"This writes the whole datacube, every raw count: {tuple(dc.shape)} {dc.dtype}, "
        f"{gib:.2f} GiB, and needs that much free space. Maps and images are smaller: Export raw "
        "or Save result. Write the datacube?"
    )


class ExportRow(QWidget):
    """The "Export raw...", "Export PNG..." and "Export datacube..." buttons for a dock's live
    image (``_realspace.LiveImage``) and its 4D dataset (``datacube()``: DataCube, Calibration)."""

    def __init__(self, live, status, datacube=None, parent: QWidget | None = None):
        from ._common import FileJobs

        super().__init__(parent)
        self.live = live
        self.status = status
        self.datacube = datacube
        self.files = FileJobs(status, self._on_error)
        self.last_written: Path | None = None
        self.raw_btn = QPushButton("Export raw...")
        self.raw_btn.setToolTip("the image's values as float32 TIFF (no display scaling)")
        self.png_btn = QPushButton("Export PNG...")
        self.png_btn.setToolTip("the image as shown: scale, colormap and contrast limits of its layer")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.raw_btn)
        row.addWidget(self.png_btn)
        self.cube_btn = QPushButton("Export datacube...")
        self.cube_btn.setToolTip("the whole 4D dataset as .h5 (with its calibration), .npy or .zarr")
        self.cube_btn.setVisible(datacube is not None)
        row.addWidget(self.cube_btn)
        self.raw_btn.clicked.connect(lambda _=False: self.export_raw())
        self.png_btn.clicked.connect(lambda _=False: self.export_png())
        self.cube_btn.clicked.connect(lambda _=False: self.export_datacube())

    def _ask(self, title: str, name: str, filt: str):
        path, _ = QFileDialog.getSaveFileName(self, title, name, filt)
        return path or None

    def _shown_file_name(self, ext: str) -> str:
        """``<shown image's layer name>.<ext>``, e.g. ``sum_image.tif`` while the sum image shows."""
        name = getattr(self.live, "shown_name", None) or getattr(self.live, "name", "virtual image")
        return f"{name.replace(' ', '_')}.{ext}"

    def export_raw(self, path=None) -> bool:
        """The raw values of the image the Real space canvas shows (``LiveImage.shown_raw``: the
        sum image while it covers the live one); a worker writes them."""
        raw = self.live.shown_raw
        if raw is None or raw.ndim != 2:
            self.status.setText("no image to export yet (an RGB composite has no raw values)")
            return False
        name = self._shown_file_name("tif")
        path = path or self._ask("Export raw image", name, "TIFF (*.tif *.tiff);;NumPy (*.npy)")
        if not path:
            return False
        self.files.run(export_raw, raw.copy(), path, desc="writing the raw image", on_done=self._done)
        return True

    def export_png(self, path=None) -> bool:
        """The image the Real space canvas shows, as its layer shows it (``LiveImage.shown_layer``;
        the colour mapping is done in the worker)."""
        layer = self.live.shown_layer
        if self.live.shown_raw is None or layer is None:
            self.status.setText("no image to export yet")
            return False
        path = path or self._ask("Export image as shown", self._shown_file_name("png"), "PNG (*.png)")
        if not path:
            return False
        data = np.array(layer.data)
        if getattr(layer, "rgb", False) or data.ndim == 3:
            rgba = np.concatenate([data, np.ones((*data.shape[:2], 1), data.dtype)], axis=-1)
            job = (lambda: export_png(np.round(np.clip(rgba, 0, 1) * 255).astype(np.uint8), path),)
        else:
            clim, cmap, gamma = tuple(layer.contrast_limits), layer.colormap, float(layer.gamma)
            job = (lambda: export_png(display_rgba(data, clim, cmap, gamma), path),)
        self.files.run(*job, desc="writing the PNG", on_done=self._done)
        return True

    def confirm(self, text: str) -> bool:
        """Ask before writing the raw datacube (tests replace this)."""
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(self, "Export the raw datacube", text)
        return answer == QMessageBox.StandardButton.Yes

    def export_datacube(self, path=None) -> bool:
        """The whole 4D dataset, after a warning with its size (a worker writes it)."""
        try:
            if self.datacube is None:
                raise Napari4DSTEMError("no 4D dataset here")
            dc, cal = self.datacube()
        except Napari4DSTEMError as e:
            self.status.setText(str(e))
            return False
        if not self.confirm(datacube_warning(dc)):
            self.status.setText("datacube not exported")
            return False
        path = path or self._ask("Export datacube", f"{dc.name}.h5", "EMD (*.h5 *.emd);;NumPy (*.npy);;Zarr (*.zarr)")
        if not path:
            return False
        from ..data.datacube import DataCube

        cube = DataCube(dc.data, cal, name=dc.name)  # with the layer's calibration (EMD keeps it)
        self.files.run(export_datacube, cube, path, desc="writing the datacube", on_done=self._done)
        return True

    def _done(self, result) -> None:
        self.last_written, msg = result
        self.status.setText(msg)

    def _on_error(self, exc) -> None:
        from .log import log_error

        log_error("Export", exc)
        self.status.setText(str(exc) if isinstance(exc, Napari4DSTEMError) else f"{type(exc).__name__}: {exc}")
