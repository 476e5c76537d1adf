"""GPU check for the NN path: inference and a few training steps on CUDA, patterns/s.

Run: ``python benchmarks/gpu_check.py`` (exits 0 with "SKIP" when torch or CUDA is missing).
Prints the CPU rate on the same data for comparison, and checks CUDA and CPU peaks agree.
"""

from __future__ import annotations

import sys
import tempfile
import time

import numpy as np


def _compare(a, b, n_patterns: int, what: str) -> bool:
    """Print how two peak lists of the first ``n_patterns`` differ; True if they agree."""
    na = np.diff(a.offsets[: n_patterns + 1])
    nb = np.diff(b.offsets[: n_patterns + 1])
    differ = np.nonzero(na != nb)[0]
    ok = na == nb
    d = []
    for i in np.nonzero(ok)[0]:
        sa = slice(a.offsets[i], a.offsets[i + 1])
        sb = slice(b.offsets[i], b.offsets[i + 1])
        if na[i]:
            d.append(np.max(np.hypot(a.qy[sa] - b.qy[sb], a.qx[sa] - b.qx[sb])))
    dmax = float(np.max(d)) if d else 0.0
    print(
        f"CUDA vs CPU, {what}: peak counts differ in {len(differ)} of {n_patterns} patterns "
        f"({int(na.sum())} vs {int(nb.sum())} peaks); max position difference where the counts "
        f"agree {dmax:.4f} px"
    )
    return len(differ) == 0 and dmax <= 0.05


def main() -> int:
    try:
        import torch
    except ImportError:
        print("SKIP: torch is not installed")
        return 0
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        return 0
    from napari_4dstem.engine.jobs import run_job
    from napari_4dstem.nn.infer import find_bragg_disks_nn
    from napari_4dstem.nn.model import ModelConfig
    from napari_4dstem.nn.registry import load_model
    from napari_4dstem.nn.synthetic import write_training_shards
    from napari_4dstem.nn.train import TrainConfig, iter_train
    from napari_4dstem.simulation.samples import make_strained_crystal

    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    s = make_strained_crystal(scan_shape=(32, 32), detector_shape=(256, 256), disk_radius_px=10, spacing_px=40)
    data = np.asarray(s.datacube.data)
    lm = load_model(None)
    rates = {}
    for dev in ("cuda", "cpu"):
        sub = data if dev == "cuda" else data[:8]
        find_bragg_disks_nn(sub[:1, :4], probe=s.probe, model=lm, device=dev)  # warm-up
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        bp = find_bragg_disks_nn(sub, probe=s.probe, model=lm, device=dev, batch_size=128)
        rates[dev] = sub.shape[0] * sub.shape[1] / (time.perf_counter() - t0)
        if dev == "cuda":
            bp_cuda = bp
        print(f"inference {dev}: {rates[dev]:.1f} patterns/s (256x256, binned into the 128 model)")
    cpu8 = find_bragg_disks_nn(data[:8], probe=s.probe, model=lm, device="cpu")
    same = _compare(bp_cuda, cpu8, 8 * 32, "TF32 convolutions (cuDNN default)")
    # the same with TF32 off: full float32 convolutions, as on the CPU
    torch.backends.cudnn.allow_tf32 = False
    bp32 = find_bragg_disks_nn(data[:8], probe=s.probe, model=lm, device="cuda", batch_size=128)
    same32 = _compare(bp32, cpu8, 8 * 32, "float32 convolutions (allow_tf32 = False)")
    torch.backends.cudnn.allow_tf32 = True
    same = same or same32
    with tempfile.TemporaryDirectory() as d:
        write_training_shards(d + "/set", n_patterns=256, per_shard=128, seed=0)
        cfg = TrainConfig(
            model=ModelConfig(size=128, width=6, domain=lm.config.domain),
            epochs=1,
            steps_per_epoch=20,
            batch_size=32,
            strain_scan=None,
            val_max=8,
            device="cuda",
            amp=True,
        )
        t0 = time.perf_counter()
        res = run_job(iter_train(d + "/set", out_dir=d + "/out", config=cfg))
        dt = time.perf_counter() - t0
    print(
        f"training cuda (mixed precision): {20 * 32 / dt:.1f} patterns/s incl. validation; "
        f"final loss {res.history[-1]['train_loss']:.4g}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
