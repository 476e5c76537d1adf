"""Session 14, defect: on a small detector with a large bright-field disk (the Direct Electron
ROI_Random_Scan_movie.mrc, 16 x 16 px frames, BF disk radius about 6 px found by the dock) the
HAADF preset (beyond 3 alpha) gets an inner radius beyond the detector's corners, and
`preset_detector` raises a bare ValueError from AnnulusDetector instead of a clear
Napari4DSTEMError; the Virtual imaging dock lets it escape (traceback at dock open, in
_precompute_presets, and at every HAADF click; the previous preset's image stays).
Exit status 1 while the defect is there. Run: PYTHONPATH=src python s18_haadf_preset_repro.py"""
import sys

from napari_4dstem.analysis.virtual.detectors import preset_detector
from napari_4dstem.errors import Napari4DSTEMError

# the values the dock used on ROI_Random_Scan_movie.mrc (s18 run log: BF centre and radius)
centre, alpha = (11.90249525017598, 7.490925039189125), 5.970821321441846
try:
    det = preset_detector("HAADF", detector_shape=(16, 16), center_px=centre, bf_radius_px=alpha)
    print("HAADF ->", det)
    sys.exit(0)
except Napari4DSTEMError as e:
    print("clear error (fine):", e)
    sys.exit(0)
except Exception as e:  # noqa
    print(f"HAADF preset raised {type(e).__name__}: {e}")
    sys.exit(1)
