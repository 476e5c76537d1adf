"""Accuracy of the bright-field disk radius (``find_bf_disk``), session 15 (audit finding S3).

Known answers: the package's ``vacuum_probe`` at 3, 6.1, 10, 20 px, edges 0.5 and 1 px, noise-free
and Poisson (2e4, 1e3 counts, 20 patterns each): mean error, scatter, worst. With a path to the
audit's SrTiO3 scan (``s19_make_data.py``'s ``sto.npy``, 6.095 px planted), its mean pattern and
its 48 vacuum patterns too. Prints a table; asserts nothing (the tests do).

Run: python benchmarks/bench_disk_radius.py [/tmp/s19/sto.npy]
"""

import sys

import numpy as np

from napari_4dstem.analysis.virtual.origin import find_bf_disk
from napari_4dstem.simulation.kinematic import vacuum_probe


def main() -> None:
    rng = np.random.default_rng(1)
    for radius in (3.0, 6.1, 10.0, 20.0):
        for edge in (0.5, 1.0):
            p = vacuum_probe((128, 128), radius_px=radius, origin_px=(64.3, 60.7), edge_px=edge)
            for counts in (None, 2e4, 1e3):
                n = 20 if counts else 1
                errs = 100 * np.array(
                    [
                        find_bf_disk(rng.poisson(p * counts).astype(float) if counts else p).radius_px / radius - 1
                        for _ in range(n)
                    ]
                )
                print(
                    f"R {radius:5.1f} px, edge {edge} px, {'noise-free' if counts is None else f'{counts:.0e} counts'}:"
                    f" mean {errs.mean():+.3f} %, sd {errs.std():.3f} %, worst {np.abs(errs).max():.2f} %"
                )
    if len(sys.argv) > 1:
        d = np.load(sys.argv[1]).astype(float)
        truth = 1.2e-3 / 0.0196875 / 0.01
        print(f"SrTiO3 mean pattern: {100 * (find_bf_disk(d.mean((0, 1))).radius_px / truth - 1):+.2f} %")
        e = 100 * np.array([find_bf_disk(q).radius_px / truth - 1 for q in d[:, :2].reshape(-1, *d.shape[2:])])
        print(f"SrTiO3 vacuum patterns: mean {e.mean():+.3f} %, sd {e.std():.3f} % (n {e.size})")


if __name__ == "__main__":
    main()
