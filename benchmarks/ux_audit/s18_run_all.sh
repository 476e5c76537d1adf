#!/bin/bash
# Session 14: s18_realdata_docks.py on each real file, one napari at a time. Out: $UX_AUDIT_OUT/TAG.out
R=/work/shared/realdata/rosettasciio
cd "$(dirname "$0")/../.."
export UX_AUDIT_OUT=${UX_AUDIT_OUT:-/tmp/ux-audit3}
PY=${PY:-/work/main/.venv/bin/python}
while read -r tag f; do
  [ -z "$tag" ] && continue
  PYTHONPATH=$PWD/src timeout 600 nice -n 10 xvfb-run -a -s "-screen 0 1920x1080x24" $PY -X faulthandler \
    benchmarks/ux_audit/s18_realdata_docks.py "$R/$f" "$tag" > "$UX_AUDIT_OUT/$tag.out" 2>&1
  echo "$tag rc=$?" >> "$UX_AUDIT_OUT/run_all.txt"
done <<LIST
p4legacy emd/py4DSTEM_size2x3x4x5.h5
tia5 tia/new/128x128x5-diffraction_preview.emi
blo1 blockfile/test1.blo
arina arina/test_00_master.h5
mrc00405 mrc/20241021_00405_movie.mrc
mrcroi mrc/ROI_Random_Scan_movie.mrc
dm_int8 digitalmicrograph/3D/test-9.dm3
mib24_1x9 quantumdetector/Merlin_Single_Quad/Single_9_Frame_CounterDepth_24_Rows_256.mib
blo2 blockfile/test2.blo
LIST
