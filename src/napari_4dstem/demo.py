"""The headless main job: open the bundled sample, run every analysis, write results + figures.

Each analysis is one *step*: a function ``step(ctx) -> None`` that adds results to
``ctx.results`` and figures to ``ctx.figures``. New capabilities add their step to ``STEPS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .data.datacube import DataCube
from .data.results import DiffractionImage, RealSpaceMap
from .engine.jobs import Progress
from .errors import OutputExistsError

__all__ = ["STEPS", "DemoContext", "run_demo"]


@dataclass
class DemoContext:
    """What the steps share: the data, the output folder, results and figures so far."""

    datacube: DataCube
    sample: dict[str, Any]
    out_dir: Path
    progress: Callable[[Progress], Any] | None = None
    source: Path | None = None  # the sample file
    results: list[Any] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def _figure_row(n: int):
    """A figure of ``n`` panels in a row, ``(fig, axes (1, n))``, on the file-only Agg backend
    (unless a backend is already chosen)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(1, n, figsize=(4.2 * n, 4), squeeze=False)


def _keep_figure(ctx: DemoContext, fig, name: str) -> Path:
    """Lay out ``fig``, save it as ``<name>.png`` in the demo's folder, close it; the path is listed."""
    fig.tight_layout()
    path = ctx.out_dir / f"{name}.png"
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    ctx.figures.append(path)
    return path


def save_figure(ctx: DemoContext, name: str, images: list[tuple[str, np.ndarray, str]], *, log=False) -> Path:
    """Save a row of images ``(title, array, kind)`` (kind ``'scan'`` or ``'k'``) as a PNG."""
    cal = ctx.datacube.calibration
    fig, axes = _figure_row(len(images))
    import matplotlib.pyplot as plt

    for ax, (title, img, kind) in zip(axes[0], images, strict=True):
        img = np.asarray(img, dtype=float)
        shown = np.log1p(np.clip(img, 0, None)) if log and kind == "k" else img
        if kind == "k":
            s = cal.k_pixel_size or 1.0
            unit = "px" if cal.k_units == "px" else cal.k_units
        else:
            s = (cal.scan_step or (1.0, 1.0))[0]
            unit = cal.scan_units
        ny, nx = img.shape
        extent = (-0.5 * s, (nx - 0.5) * s, (ny - 0.5) * s, -0.5 * s)
        diverging = title.startswith(("e_", "strain", "theta"))
        cmap = "RdBu_r" if diverging else ("inferno" if kind == "k" else "gray")
        lim = {}
        if diverging:  # centred on zero: white is no strain
            f = np.abs(shown[np.isfinite(shown)])
            m = float(np.percentile(f, 99)) if f.size else 1.0
            lim = {"vmin": -(m or 1e-6), "vmax": m or 1e-6}
        # NaN (not computed, not indexed) in its own colour, never as a value
        cmap = plt.get_cmap(cmap).with_extremes(bad="#00bcd4")
        im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, extent=extent, interpolation="nearest", **lim)
        ax.set_title(title + (" (log)" if log and kind == "k" else ""))
        ax.set_xlabel(("k_x" if kind == "k" else "scan_x") + f" [{unit}]")
        ax.set_ylabel(("k_y" if kind == "k" else "scan_y") + f" [{unit}]")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return _keep_figure(ctx, fig, name)


def step_patterns(ctx: DemoContext) -> None:
    """Mean and maximum diffraction patterns, streamed in chunks."""
    dc = ctx.datacube
    mean = dc.mean_pattern(ctx.progress)
    mx = dc.max_pattern(ctx.progress)
    cal = dc.calibration
    ctx.results += [
        DiffractionImage(mean, name="mean_pattern", units="counts", calibration=cal, params={"op": "mean"}),
        DiffractionImage(mx, name="max_pattern", units="counts", calibration=cal, params={"op": "max"}),
    ]
    total = RealSpaceMap(
        _scan_sums(dc),
        name="total_counts",
        units="counts",
        calibration=cal,
        params={"op": "sum over the detector"},
    )
    ctx.results.append(total)
    save_figure(ctx, "patterns", [("mean pattern", mean, "k"), ("max pattern", mx, "k")], log=True)
    save_figure(ctx, "total_counts", [("total counts per pattern", total.data, "scan")])


def _scan_sums(dc: DataCube) -> np.ndarray:
    from .engine.chunks import iter_scan_blocks

    out = np.zeros(dc.scan_shape)
    for sy, sx, block in iter_scan_blocks(dc.data):
        out[sy, sx] = block.sum(axis=(2, 3), dtype=np.float64)
    return out


def _probe_source(ctx: DemoContext):
    from .pipelines import ProbeSource

    has_probe = any(k.split("/")[-1] == "probe" for k in ctx.sample)
    return ProbeSource(str(ctx.source), "probe") if has_probe and ctx.source is not None else None


def step_strain(ctx: DemoContext) -> None:
    """Bragg disks with the sample's vacuum probe, lattice fits and the strain maps (the
    ``napari-4dstem strain`` pipeline). Only for a single crystal: a polycrystal has no one
    lattice to measure strain against."""
    from .pipelines import StrainParams, run_strain

    if "truth_strain" not in ctx.sample and "truth_lattice" not in ctx.sample:
        return
    sy, sx = ctx.datacube.scan_shape
    res = run_strain(
        ctx.datacube,
        probe=_probe_source(ctx),
        progress=ctx.progress,
        strain=StrainParams(reference=(0, max(1, sy // 4), 0, max(1, sx // 4))),
    )
    ctx.results += res.saved_objects()
    sm = res.strain
    save_figure(ctx, "bragg_vector_map", [("Bragg vector map", res.bvm.data, "k")], log=True)
    save_figure(
        ctx,
        "strain",
        [(f"{c} (true strain)" if c.startswith("e_") else c, sm.channel(c), "scan") for c in sm.strain.channels],
    )


def step_virtual(ctx: DemoContext) -> None:
    """BF, ABF and ADF virtual images (presets from the calibrated angles) in one pass (the
    ``napari-4dstem virtual`` pipeline)."""
    from .analysis.virtual.detectors import preset_detector
    from .analysis.virtual.origin import find_bf_disk
    from .pipelines import VirtualImageParams, run_virtual

    dc = ctx.datacube
    bf = find_bf_disk(dc.region_pattern(slice(None), slice(None)))
    names = ("BF", "ABF", "ADF")
    dets = [
        preset_detector(n, detector_shape=dc.detector_shape, calibration=dc.calibration, center_px=bf.center_px)
        for n in names
    ]
    res = run_virtual(
        dc,
        virtual=VirtualImageParams(detectors=tuple(dets), names=tuple(f"virtual_{n}" for n in names)),
        progress=ctx.progress,
    )
    stack = _renamed(res.stack, "virtual_images")
    ctx.results.append(replace(stack, params={**stack.params, "recipe": res.recipe.to_dict()}))
    save_figure(ctx, "virtual_images", [(f"virtual {n}", stack.data[..., i], "scan") for i, n in enumerate(names)])


def step_calibration_dpc(ctx: DemoContext) -> None:
    """Origin per pattern with the descan plane fit; COM, DPC and iDPC (the ``napari-4dstem dpc``
    pipeline). The rotation is the calibration's (0: the simulated scan and detector axes are
    aligned): the sample has no DPC signal to fit it from (the fit reports confidence ~1 and
    warns)."""
    from .pipelines import DPCParams, run_calibrate, run_dpc

    dc = ctx.datacube
    calib = run_calibrate(dc, progress=ctx.progress)  # origin per pattern, descan plane fit
    res = run_dpc(dc, dpc=DPCParams(regularization=1e-4), progress=ctx.progress)
    com, d, phase = res.saved_objects()
    ctx.results += [*calib.saved_objects(), com, d, _renamed(phase, "idpc_phase")]
    save_figure(
        ctx,
        "origin_descan",
        [
            ("origin k_y (measured)", calib.origin.data[..., 0], "scan"),
            ("origin k_y (plane fit)", calib.origin_fit.origin_map_px[..., 0], "scan"),
            ("DPC magnitude", res.dpc.channel("magnitude"), "scan"),
        ],
    )


def step_acom(ctx: DemoContext) -> None:
    """Orientation map (ACOM) of the bundled gold polycrystal (the ``napari-4dstem acom``
    pipeline, with its disk settings): Bragg disks, 2 deg plan, matching, IPF maps along x/y/z
    with the colour key, scored against the sample's true orientations."""
    from ._sample_data import sample_path
    from .analysis.acom.ipf import ipf_key_image
    from .analysis.crystal.symmetry import misorientation_deg
    from .io import emd
    from .pipelines import ACOMParams, ProbeSource, run_acom

    path = sample_path("polycrystal_au")
    contents = emd.read(path)
    dc = next(o for o in contents.values() if isinstance(o, DataCube))
    truth = contents["truth_orientation"]
    try:
        cal = dc.calibration.replace(origin_px=tuple(truth.params["origin_px_yx"]))
        run = run_acom(
            dc,
            acom=ACOMParams(crystals=("Au",), k_max_inv_A=1.2, thickness_nm=10.0, min_peaks=3),
            probe=ProbeSource(str(path)),
            calibration=cal,
            progress=ctx.progress,
        )
    finally:
        dc.close()
    res = run.result
    au = res.crystals[0]
    mis = misorientation_deg(res.orientation[:, :, 0], truth.data.reshape(*res.scan_shape, 3, 3), au.point_group)
    maps = [
        m if m.name.startswith("acom_") else replace(m, name=f"acom_{m.name}")
        for m in run.saved_objects()
        if isinstance(m, RealSpaceMap)
    ]
    maps.append(
        RealSpaceMap(
            np.nan_to_num(mis, nan=-1.0),
            name="acom_error_vs_truth",
            units="deg",
            calibration=res.calibration,
            params={"note": "-1 where masked (too few peaks)"},
        )
    )
    ctx.results += maps
    _save_rgb(
        ctx,
        "acom_ipf",
        [(f"IPF {d} (Au, lab {d})", res.ipf_rgb(d)) for d in ("x", "y", "z")]
        + [("IPF key m-3m: 001 red, 101 green, 111 blue", ipf_key_image(au.point_group))],
    )
    save_figure(
        ctx,
        "acom_quality",
        [
            ("correlation", res.correlation[:, :, 0], "scan"),
            ("reliability", res.reliability, "scan"),
            ("error vs truth [deg] (cyan: not indexed)", mis, "scan"),
        ],
    )


def _save_rgb(ctx: DemoContext, name: str, images: list[tuple[str, np.ndarray]]) -> None:
    fig, axes = _figure_row(len(images))
    for ax, (title, img) in zip(axes[0], images, strict=True):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    _keep_figure(ctx, fig, name)


def _renamed(m: RealSpaceMap, name: str) -> RealSpaceMap:
    from dataclasses import replace

    return replace(m, name=name)


def step_nn(ctx: DemoContext) -> None:
    """Bragg disks by the bundled neural network (FCU-Net) on an 8 x 8 corner of the scan (the
    CPU path runs tens of patterns per second); skipped without torch (the ``nn`` extra)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    from .nn.infer import predict_pattern
    from .pipelines import NNDiskParams, run_disks

    probe = _probe_source(ctx)
    if probe is None:
        return
    block = np.asarray(ctx.datacube.data[:8, :8])
    res = run_disks(
        block, detection=NNDiskParams(), probe=probe, calibration=ctx.datacube.calibration, progress=ctx.progress
    )
    img, _ = predict_pattern(block[0, 0], probe=probe.load())
    ctx.results.append(res.saved_objects()[0])
    save_figure(
        ctx,
        "nn_disks",
        [
            ("NN prediction, pattern (0, 0)", img.data, "k"),
            ("NN peaks per pattern (8 x 8 corner)", res.peaks.counts().astype(float), "scan"),
        ],
    )


STEPS: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("patterns", step_patterns),
    ("virtual images", step_virtual),
    ("calibration and DPC", step_calibration_dpc),
    ("strain", step_strain),
    ("NN disk detection", step_nn),
    ("orientation map (ACOM)", step_acom),
]


def run_demo(
    out_dir: str | Path,
    *,
    sample: str = "strained_crystal",
    overwrite: bool = False,
    progress: Callable[[Progress], Any] | None = None,
    log: Callable[[str], Any] | None = None,
) -> DemoContext:
    """Run every analysis step on a bundled sample; write ``results.h5`` and PNGs to ``out_dir``."""
    from ._sample_data import sample_path
    from .io import emd

    out = Path(out_dir)
    results_path = out / "results.h5"
    if results_path.exists() and not overwrite:
        raise OutputExistsError(results_path)
    out.mkdir(parents=True, exist_ok=True)
    src = sample_path(sample)
    contents = emd.read(src)
    dc = next(o for o in contents.values() if isinstance(o, DataCube))
    ctx = DemoContext(dc, contents, out, progress, source=src)
    try:
        for name, step in STEPS:
            if log:
                log(f"{name} ...")
            t0 = time.perf_counter()
            step(ctx)
            ctx.timings[name] = time.perf_counter() - t0
        emd.write(results_path, *ctx.results, overwrite=overwrite)
    finally:
        dc.close()
    return ctx
