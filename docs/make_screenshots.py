"""Take the documentation screenshots from the real plugin in napari.

Run under a virtual screen:  xvfb-run -a python docs/make_screenshots.py
Writes docs/images/*.png.
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "images"


def _grab(viewer, name: str) -> Path:
    from qtpy.QtWidgets import QApplication

    for _ in range(20):
        QApplication.processEvents()
    path = OUT / name
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    print(f"wrote {path}")
    return path


def sample_in_napari() -> None:
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1100, 760)
    layers = viewer.open_sample("napari-4dstem", "strained_crystal")
    cube = next(lyr for lyr in layers if lyr.ndim == 4)
    viewer.dims.set_point(0, 20 * cube.scale[0])
    viewer.dims.set_point(1, 26 * cube.scale[1])
    viewer.layers.selection.active = cube
    viewer.scale_bar.visible = True
    viewer.reset_view()
    _grab(viewer, "napari_sample_strained_crystal.png")
    viewer.close()


def main() -> int:
    OUT.mkdir(exist_ok=True)
    sample_in_napari()
    return 0


if __name__ == "__main__":
    sys.exit(main())
