"""Screenshot of the Phase retrieval widget (docs/phase.md), from the real plugin in napari.

Run under a virtual screen:  xvfb-run -a python docs/make_phase_screenshots.py
Writes docs/images/phase_retrieval_widget.png and phase_retrieval_realspace.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "images"


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_4dstem.analysis.phase.forward import simulate_phase_dataset
    from napari_4dstem.widgets._results import results_viewer

    s = simulate_phase_dataset(
        scan_shape=(24, 24), detector_px=64, step_A=0.4, defocus_A=50.0, phase_per_atom_rad=0.1, seed=1
    )
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 950)
    cube = s.datacube
    viewer.add_image(
        np.asarray(cube.data),
        name="simulated weak phase object",
        metadata={"napari_4dstem": {"calibration": cube.calibration}},
        **cube.calibration.napari_kwargs("4d"),
    )
    _, w = viewer.window.add_plugin_dock_widget("napari-4dstem", "Phase retrieval")
    w.method.setCurrentText("ptycho")
    w.defocus.setValue(50.0)
    w.iterations.setValue(8)
    w.run_btn.click()
    t0 = time.time()
    while (w._worker is not None or not w.results) and time.time() - t0 < 600:
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(30):
        QApplication.processEvents()
    viewer.screenshot(str(OUT / "phase_retrieval_widget.png"), canvas_only=False, flash=False)
    # the results are on the window's Real space canvas (a viewer model without a window of its own)
    rv = results_viewer(viewer)
    rv.layers["probe intensity"].visible = False
    rv.reset_view()
    for _ in range(30):
        QApplication.processEvents()
    viewer.screenshot(str(OUT / "phase_retrieval_realspace.png"), canvas_only=False, flash=False)
    print("wrote", OUT / "phase_retrieval_widget.png", OUT / "phase_retrieval_realspace.png")
    viewer.close()


if __name__ == "__main__":
    main()
