"""Layers > Measure > napari-4dstem lists every widget, and its items open them."""

import pytest

pytestmark = pytest.mark.gui


def test_layers_measure_submenu_lists_and_opens_every_widget(make_napari_viewer):
    from app_model.types import SubmenuItem
    from napari._app_model import get_app_model
    from npe2 import PluginManager

    viewer = make_napari_viewer()
    app = get_app_model()
    subs = [i for i in app.menus.get_menu("napari/layers/measure") if isinstance(i, SubmenuItem)]
    ours = [i for i in subs if i.submenu == "napari-4dstem.widgets"]
    assert [i.title for i in ours] == ["napari-4dstem"]
    manifest = PluginManager.instance().get_manifest("napari-4dstem")
    widgets = {w.command: w.display_name for w in manifest.contributions.widgets}
    items = app.menus.get_menu("napari-4dstem.widgets")
    assert sorted(i.command.id for i in items) == sorted(widgets)
    # in the order of a session, in five groups (separators in the menu)
    groups = [[i.command.id.split(".")[1] for i in g] for g in app.menus.iter_menu_groups("napari-4dstem.widgets")]
    assert groups[:2] == [
        ["raw_layout", "scan_shape", "calibration_dpc", "series"],
        ["virtual_imaging", "phase_retrieval", "result_pane"],
    ]
    assert len(groups) == 5 and groups[-1] == ["results_list", "log", "keymap"]
    # the item opens its dock widget (the log: the one that computes nothing)
    app.commands.execute_command("napari-4dstem.log")
    from napari_4dstem.widgets.log import LogWidget

    docked = viewer.window.dock_widgets
    assert any(isinstance(w, LogWidget) for w in docked.values()), list(docked)
