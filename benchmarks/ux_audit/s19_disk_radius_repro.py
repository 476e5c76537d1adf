"""Repro (session 15 audit, finding S3): the Calibration dock's *Measure disk* (core ``find_bf_disk``)
returns a bright-field radius 1.6-3.4 % small on a 6 px disk, so the detector calibration (pixel size =
alpha / radius) is 1.6-3.5 % large. The radius is a thresholded pixel count (sqrt(N / pi): 5.8903 =
sqrt(109 / pi)), quantised and biased low by the soft edge. Known answer: the package's own
``vacuum_probe`` (0.5 at r = R) with R = alpha / lambda / pixel = 1.2 mrad / 0.019687 A / 0.01 1/A =
6.095 px, noise-free and with Poisson noise (2e4 e-). Exit 1 while any relative error > 1 %."""
import sys

import numpy as np

from napari_4dstem.analysis.virtual.origin import find_bf_disk
from napari_4dstem.simulation.kinematic import vacuum_probe

R = 1.2e-3 / 0.0196875 / 0.01  # 6.095 px (300 keV wavelength 0.0196875 A)
rng = np.random.default_rng(0)
bad = []
for label, R_true in (("6.1 px", R), ("10 px", 10.0), ("20 px", 20.0)):
    p = vacuum_probe((128, 128), radius_px=R_true, origin_px=(64.3, 63.6), edge_px=0.5)
    for noisy in (False, True):
        img = rng.poisson(p / p.sum() * 2e4).astype(float) if noisy else p
        r = find_bf_disk(img).radius_px
        err = r / R_true - 1
        print(f"{label} {'Poisson 2e4' if noisy else 'noise-free'}: true {R_true:.3f} px, found {r:.3f} px, error {100 * err:+.2f} %")
        if abs(err) > 0.01:
            bad.append((label, noisy, round(100 * err, 2)))
print("DEFECT: BF disk radius off by > 1 %:" if bad else "ok", bad)
sys.exit(1 if bad else 0)
