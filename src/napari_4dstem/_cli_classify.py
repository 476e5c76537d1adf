"""The ``classify`` subcommand (registered in :mod:`napari_4dstem.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_classify(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("classify", help="find the phases and domains of a scan (features, PCA/NMF, clustering)")
    p.add_argument("file", type=Path)
    p.add_argument(
        "out",
        type=Path,
        help="output .h5 (EMD): class_labels, class_probability, class_mixing, "
        "component_loadings, class_<k>_mean, component_<i>",
    )
    p.add_argument(
        "--features",
        choices=["pattern", "radial", "polar", "angular", "pattern+angular", "bragg"],
        default="pattern",
        help="pattern (binned, keeps orientation; default), pattern+angular (also the disks' angles, "
        "blind to their intensities: grains a few degrees apart), angular, radial or polar "
        "(rotation-invariant), bragg (histogram of detected disks: needs --peaks)",
    )
    p.add_argument("--peaks", type=Path, help="EMD file with Bragg peaks (from `disks`) for --features bragg")
    p.add_argument("--bin", type=float, metavar="PX", help="bin size / ring width in detector px")
    p.add_argument("--radius", type=float, metavar="PX", help="outer radius about the origin")
    p.add_argument(
        "--inner",
        type=float,
        default=0.0,
        metavar="PX",
        help="leave out pixels closer to the origin (default: the bright-field disk)",
    )
    p.add_argument("--keep-bf", action="store_true", help="keep the bright-field disk in the features")
    p.add_argument("--method", choices=["gmm", "kmeans", "hierarchical"], default="gmm")
    p.add_argument("--decomposition", choices=["pca", "nmf"], default="pca")
    p.add_argument("--n-classes", type=int, help="number of classes (default: suggested from the data)")
    p.add_argument("--max-classes", type=int, default=8)
    p.add_argument("--n-components", type=int, help="components kept (default: above the noise floor)")
    p.add_argument("--transform", choices=["sqrt", "log", "none"], default="sqrt")
    p.add_argument("--spatial", type=float, default=1.0, help="weight of agreeing neighbours (0: none)")
    p.add_argument(
        "--remerge-jump",
        type=float,
        default=20.0,
        help="with the count suggested: merge bordering classes whose border is less of a step than this "
        "many times the steps beside it, on the smoothed map (0: off)",
    )
    p.add_argument(
        "--remerge-separation",
        type=float,
        default=0.0,
        help="guard of --remerge-jump: never merge two classes whose interiors (away from their border) differ "
        "by more than this many times their own spread (two structures joined by a wide mixing band; 0: off)",
    )
    p.add_argument(
        "--space",
        choices=["auto", "components", "maf"],
        default="auto",
        help="what the clustering sees: the leading PCA components, their maximum-autocorrelation factors "
        "(large regions before narrow nuisances: lattices a few %% apart), or auto (both, one chosen per scan)",
    )
    p.add_argument("--maf", type=int, default=8, metavar="N", help="maximum-autocorrelation factors (--space maf/auto)")
    p.add_argument(
        "--origin",
        choices=["auto", "calibration", "fixed"],
        default="auto",
        help="auto: calibration's origin map, else measured + descan plane",
    )
    p.add_argument("--seed", type=int, default=0)
    from ._cli_common import analysis_args

    analysis_args(p)  # --calibration, --scheduler, --overwrite, --scan-shape, as every workflow
    return p


def run_classify(args) -> int:
    from ._cli_common import EXIT_OK, run_on_cube
    from .errors import FileFormatError
    from .pipelines import ClassificationParams, iter_classification

    if args.out.suffix.lower() not in (".h5", ".hdf5", ".emd"):
        raise FileFormatError(args.out, "classify writes an EMD file (.h5)")
    if args.out.exists() and not args.overwrite:
        raise FileFormatError(args.out, "exists; pass --overwrite to replace it")
    if args.features == "bragg" and args.peaks is None:
        raise FileFormatError(args.file, "--features bragg needs --peaks PEAKS.h5 (from `disks`)")
    params = ClassificationParams(
        features=args.features,
        radius_px=args.radius,
        bin_px=args.bin,
        inner_px=args.inner,
        keep_bf=args.keep_bf,
        peaks_path=None if args.peaks is None else str(args.peaks.resolve()),
        method=args.method,
        decomposition=args.decomposition,
        n_classes=args.n_classes,
        max_classes=args.max_classes,
        n_components=args.n_components,
        transform=args.transform,
        spatial=args.spatial,
        space=args.space,
        maf=args.maf,
        remerge_jump=args.remerge_jump,
        remerge_separation=args.remerge_separation,
        seed=args.seed,
        origin=args.origin,
    )
    result = run_on_cube(args, iter_classification, classify=params)
    result.save(args.out, overwrite=args.overwrite)
    res = result.classification
    sizes = ", ".join(f"{c}: {n}" for c, n in enumerate(res.class_sizes()))
    print(
        f"{res.n_classes} classes (suggested {res.suggested_n_classes}; patterns per class {sizes}); "
        f"{res.params['n_components']} components, clustered on {res.params.get('space_chosen', 'components')}; "
        f"wrote {args.out}"
    )
    return EXIT_OK
