"""The kernel warm-up covers Orientation mapping's first check and run (#15, UX audit s14 defect 4):
after the warm-up, *Check current pattern* and *Run on all* compile no new kernel signature."""

import subprocess
import sys
import textwrap

# Run in a fresh interpreter: kernels compiled by other tests of this session would hide a gap.
SCRIPT = textwrap.dedent(
    """
    import dataclasses, sys
    import numpy as np
    from numba.core.registry import CPUDispatcher
    from napari_4dstem.engine.kernels import Kernel
    from napari_4dstem.analysis.warm import tiny_cube, warm_acom, warm_bragg

    def signatures():
        found = set()
        for name, mod in list(sys.modules.items()):
            if not name.startswith("napari_4dstem"):
                continue
            for obj in list(vars(mod).values()):
                disp = [obj] if isinstance(obj, CPUDispatcher) else []
                if isinstance(obj, Kernel):
                    disp = [obj.parallel, obj.serial]
                for d in disp:
                    found.update((d.py_func.__qualname__, str(s)) for s in d.signatures)
        return found

    def run(gen):
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value

    from napari_4dstem.analysis.acom.matching import kinematic_bragg_peaks
    from napari_4dstem.analysis.acom.plan import zone_axis_orientation
    from napari_4dstem.analysis.crystal.structure import bundled_crystal
    from napari_4dstem.data.calibration import Calibration
    from napari_4dstem.data.datacube import DataCube
    from napari_4dstem.pipelines import ACOMParams, iter_acom, iter_acom_pattern, iter_plans, iter_probe_template

    dtype = np.int32  # the FEI TIA file of the audit
    cube = tiny_cube(dtype)
    warm_bragg(cube)
    warm_acom(cube)
    warmed = signatures()

    # a 2 x 2 scan of gold patterns along [001] and [011]: disks of radius 7 px (binned detection)
    au = bundled_crystal("Au")
    k_px = 0.02  # 1/A a pixel
    yy, xx = np.mgrid[:96, :96]
    pats = []
    for uvw in ([0, 0, 1], [0, 1, 1], [0, 0, 1], [1, 1, 1]):
        U = zone_axis_orientation(np.array([uvw], float))[0]
        p = kinematic_bragg_peaks(au, U[None], k_max_inv_A=0.9, k_pixel_size=k_px, origin_px=(48.0, 48.0)).at(0, 0)
        img = np.full((96, 96), 3.0)
        img += 4000.0 * (np.hypot(yy - 48, xx - 48) < 7)
        for qy, qx, a in zip(p["qy"], p["qx"], p["intensity"] / np.max(p["intensity"])):
            img += 400.0 * a * (np.hypot(yy - qy, xx - qx) < 7)
        pats.append(img)
    data = np.asarray(pats).reshape(2, 2, 96, 96).astype(dtype)
    cal = Calibration(k_pixel_size=k_px, k_units="1/A", beam_energy_kev=300.0)
    dc = DataCube(data, calibration=cal)
    probe = 4000.0 * (np.hypot(yy - 48, xx - 48) < 7)
    # the dock's defaults (orientation.py) and its check's settings
    acom = ACOMParams(crystals=("Au",), energy_kev=300.0, k_max_inv_A=0.9, step_deg=2.0, thickness_nm=10.0)
    check = dataclasses.replace(acom, n_matches=3, overlap="candidates")
    plans = run(iter_plans(check, 300.0, 0.9, None))
    template = run(iter_probe_template(dc, probe))
    assert template.radius_px >= 6, template.radius_px
    one = iter_acom_pattern(dc.pattern(0, 0), iy=0, ix=0, template=template, plans=plans, calibration=cal, acom=check)
    one = run(one)
    assert one.result is not None and len(one.peaks_yx) >= 5, one
    print("CHECK", len(one.peaks_yx), float(one.result.correlation[0, 0, 0]))
    new_check = signatures() - warmed
    run(iter_acom(dc, acom=acom, calibration=cal, probe=probe))
    print("NEW", sorted(new_check | (signatures() - warmed)))
    """
)


def test_warm_steps_compile_the_orientation_check_and_run_kernels():
    """After the warm-up's Bragg and ACOM steps, the dock's check of one pattern (serial disk
    detection with ACOM's significance test, 2 x 2-binned for a 7 px disk, the matcher with
    candidates) and its run on all patterns compile nothing: the first check never waits on numba
    (the old warm-up left the significance test and the binning to it: 16-31 s, load 6-8)."""
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("NEW")]
    assert line == ["NEW []"], out.stdout[-3000:]
