"""`import napari_4dstem` stays light: no napari, Qt, torch or dask.distributed."""

import subprocess
import sys

CODE = """
import sys, napari_4dstem
import napari_4dstem.data, napari_4dstem.io, napari_4dstem.engine, napari_4dstem.cli
heavy = [m for m in ("napari", "qtpy", "PyQt6", "magicgui", "torch", "distributed", "abtem", "matplotlib")
         if m in sys.modules]
print(",".join(heavy))
"""


def test_core_import_pulls_in_nothing_heavy():
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""


def test_public_api_is_lazy():
    import napari_4dstem

    assert napari_4dstem.DataCube.__name__ == "DataCube"
    assert "open_datacube" in dir(napari_4dstem)
