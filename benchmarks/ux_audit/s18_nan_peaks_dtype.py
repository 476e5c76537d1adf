"""Session 14: defect 2 (NaN disk intensities on the TIA file) with the pattern as int32 and as float64, and where the NaN disks lie. Run: PYTHONPATH=src python s18_nan_peaks_dtype.py"""
import numpy as np, sys
sys.path.insert(0,'benchmarks/ux_audit')
from napari_4dstem.io import open_datacube
from napari_4dstem.data.datacube import DataCube
from napari_4dstem.pipelines import DiskDetectionParams, detect_pattern
from napari_4dstem.widgets.bragg import _template_job
def drive(g):
    try:
        while True: next(g)
    except StopIteration as e: return e.value
dc = open_datacube('/work/shared/realdata/rosettasciio/tia/new/128x128x5-diffraction_preview.emi')
t,_,_ = drive(_template_job(dc, None, "plain", None))
pat = np.asarray(dc.pattern(0, 4))
print('pattern dtype', pat.dtype, 'min', pat.min(), 'max', pat.max(), 'nan?', np.isnan(pat.astype(float)).any())
for name, x in [('int32', pat), ('float64', pat.astype(float))]:
    p = detect_pattern(x, t, DiskDetectionParams())
    print(name, len(p), 'nan intensity', int(np.isnan(p[:,2]).sum()), 'nan rows qy/qx', int(np.isnan(p[:,:2]).sum()))
    k = np.isnan(p[:,2]); print('  NaN-intensity disk positions (first 5):', np.round(p[k][:5,:2],1).tolist())
