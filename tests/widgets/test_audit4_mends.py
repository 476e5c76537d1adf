"""Session 15, audit4 defects mended by the lead (Bragg dock's typed lattice vectors)."""

import numpy as np
import pytest

from napari_4dstem.widgets._results import set_results_viewer

from .conftest import DOCK_OPEN_BUDGET_S

pytestmark = pytest.mark.gui


def test_typing_g1_while_g2_is_zero_says_so_and_raises_no_error(make_napari_viewer, monkeypatch, stall_detector):
    """audit4 S10: before any lattice was found (g1 = g2 = 0), every committed g field made a
    Lattice and popped "g1=(5.0, 0.0) and g2=(0.0, 0.0) are parallel" as an error (three errors
    before the fourth value of two typed vectors). Now the dock waits for both vectors in its
    status line, and a zero vector is called zero."""
    import napari.utils.notifications

    from napari_4dstem.widgets.bragg import BraggStrainWidget

    main, results = make_napari_viewer(), make_napari_viewer()
    set_results_viewer(main, results)
    errors = []
    monkeypatch.setattr(napari.utils.notifications, "show_error", lambda msg, *a, **k: errors.append(msg))
    with stall_detector.excluded("first layer add"):
        main.add_image(np.ones((2, 2, 16, 16), np.float32), name="cube")
    with stall_detector.excluded("dock opening", budget_s=DOCK_OPEN_BUDGET_S):
        w = BraggStrainWidget(main)
        main.window.add_dock_widget(w)
    assert w.lattice is None
    # the typed vectors' first Lattice imports analysis.bragg (scipy.optimize) on the GUI thread,
    # as the old code did; a real session has imported it in the live detection's worker by then
    with stall_detector.excluded("reference"):
        import napari_4dstem.analysis.bragg.lattice  # noqa: F401
    w.g[0].setValue(5.0)
    assert w.lattice is None and not errors, errors
    assert "g2 not set yet" in w.status.text(), w.status.text()
    w.g[3].setValue(4.0)
    assert w.lattice is not None and w.lattice.g1 == (5.0, 0.0) and w.lattice.g2 == (0.0, 4.0)
    assert not errors, errors
