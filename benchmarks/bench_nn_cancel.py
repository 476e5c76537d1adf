"""NN Find all: patterns/s of the network's whole-scan loop, before and after it ran in a thread of
its own with a Cancel point every 0.1 s (session 13, #15 UX 20), in one process, alternating.

"before" is the old call (``map_scan`` with the kernel in the job's thread, the NN dock's blocks of
4 patterns), "after" :func:`napari_4dstem.nn.infer._iter_nn_blocks` with the same kernel, blocks
and data. Each run covers the first ``--patterns`` patterns of the data (blocks of (1, 4)). A
warm-up run of each comes first (the process's first forward pass, numba caches).

Run: python benchmarks/bench_nn_cancel.py [--data FILE.h5] [--patterns 64] [--repeats 3]
Default data: the bundled sample (strained_crystal, 32 x 32 x 128 x 128, gzip EMD, read lazily).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="EMD file (default: the bundled strained_crystal sample)")
    ap.add_argument("--patterns", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import torch

    from napari_4dstem._sample_data import sample_path
    from napari_4dstem.analysis.bragg.disks import disk_count_partial
    from napari_4dstem.data.datacube import DataCube
    from napari_4dstem.engine.driver import map_scan
    from napari_4dstem.io import emd
    from napari_4dstem.nn import infer
    from napari_4dstem.nn.registry import load_model

    contents = emd.read(a.data or sample_path("strained_crystal"))
    dc = next(o for o in contents.values() if isinstance(o, DataCube))
    probe = np.asarray(contents["probe"].data)
    lm = load_model(None)
    geo, pm = infer._geometry_for(probe, dc.shape[2:], lm, "auto", None, 2048)
    dev = torch.device("cpu")
    prec = infer._precision("bfloat16", dev)
    opts = dict(
        min_relative=0.1,
        min_absolute=0.05,
        min_spacing_px=infer._spacing(None, geo),
        min_significance=5.0,
        edge_px=infer._edge(None, geo),
        max_peaks=100,
        batch_size=4,
        device=dev,
        mc_samples=0,
    )
    tail = (101, infer._N_FIELDS)
    chunk = (1, 4)
    blocks = a.patterns // 4

    def before():
        net = infer._inference_copy(lm.module, precision=prec)
        return map_scan(
            dc.data,
            infer._nn_kernel,
            out_tail=tail,
            kwargs={"model": net, "geo": geo, "probe_model": pm, "opts": opts},
            split_blocks=False,
            scan_chunk=chunk,
            message="NN Bragg disks",
            partial=disk_count_partial("NN disks per pattern"),
        )

    def after():
        net = infer._inference_copy(lm.module, precision=prec)
        return infer._iter_nn_blocks(
            dc.data,
            net,
            {"geo": geo, "probe_model": pm, "opts": opts},
            out_tail=tail,
            scan_chunk=chunk,
            message="NN Bragg disks",
            partial=disk_count_partial("NN disks per pattern"),
        )

    def run(make) -> float:
        job = make()
        t = time.perf_counter()
        for p in job:
            if p.done >= blocks:
                break
        job.close()
        return blocks * 4 / (time.perf_counter() - t)

    print(f"load {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}; precision {prec}")
    run(before), run(after)  # warm-up: first forward pass, numba caches
    rates = {"before": [], "after": []}
    for _ in range(a.repeats):
        for name, make in (("before", before), ("after", after)):
            rates[name].append(run(make))
            print(f"  {name}: {rates[name][-1]:.2f} patterns/s (load {os.getloadavg()[0]:.1f})", flush=True)
    b, f = statistics.median(rates["before"]), statistics.median(rates["after"])
    print(f"median patterns/s: before {b:.2f}, after {f:.2f}, after/before {f / b:.3f}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
