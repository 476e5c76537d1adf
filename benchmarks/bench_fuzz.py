"""Fuzz every reader at full size (>= 4,000 malformed inputs) and count what goes wrong.

Seeds of every format (synthetic, plus the real files of ``shared/realdata`` when present) are
mutated by ``tests/io/fuzzing.py`` (truncations, appended/deleted/inserted bytes, header byte
flips and extreme integers, edited numbers and lines of text headers and sidecars, FIFOs,
``/dev/zero`` symlinks, folders and 8 GiB sparse files in place of the file, a sidecar or a
sibling, HDF5 datasets declaring huge sizes or mapping missing sources, random windows). Each
input runs in a worker process with a timeout (default 10 s) and an address-space cap
(3 GiB above the worker's size); the peak resident memory is measured per input.

Prints, and writes as JSON (``--json``): inputs per verdict (``refused``, ``same``,
``reinterpreted``, ``data_differs``, and the failures ``foreign`` exception, ``hang``,
``crash``, ``overalloc`` above 2x the input's bytes + 32 MiB, ``wrong_shape``), per seed, and
every failing input. Exit code 1 when any failure is found.

Run: ``python benchmarks/bench_fuzz.py [--sample N] [--timeout 10] [--json out.json]``
(about 1-6 minutes on 2 loaded cores for the full run). ``--only emd,arina,py4dstem --draws 8``
mutates the HDF5 seeds under 8 random draws (the libhdf5 failures are rare per draw).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "io"))
import fuzzing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=0, help="run only N inputs drawn at random")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", help="only seeds whose name contains one of these (comma-separated)")
    ap.add_argument(
        "--draws",
        type=int,
        default=1,
        help="mutate every seed this many times, with random draws --seed, --seed+1, ...",
    )
    ap.add_argument("--no-real", action="store_true", help="synthetic seeds only")
    ap.add_argument("--json", type=Path, help="write the full summary here")
    args = ap.parse_args(argv)

    seeds = fuzzing.make_seeds(include_real=not args.no_real)

    # the mutations come from one random stream over all seeds, so --only keeps the very
    # inputs the full run makes for those seeds (filtered after drawing them)
    def wanted(s) -> bool:
        return not args.only or any(w in s.name for w in args.only.split(","))

    runner = fuzzing.Runner(timeout_s=args.timeout)
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="n4d-fuzz-") as d:
        root = Path(d)
        for s in seeds:
            if wanted(s):
                s.expected = fuzzing.expected_of(s, runner, root)
        cases = [c for d in range(args.draws) for c in fuzzing.all_cases(seeds, args.seed + d) if wanted(c.seed)]
        if args.sample:
            import numpy as np

            idx = np.random.default_rng(args.seed).permutation(len(cases))[: args.sample]
            cases = [cases[i] for i in sorted(idx)]
        for i, c in enumerate(cases):
            results.append(fuzzing.run_case(c, runner, root))
            if (i + 1) % 500 == 0:
                print(f"  {i + 1}/{len(cases)} inputs, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        runner.kill()
    summary = fuzzing.summarize(results)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["seeds"] = [s.name for s in seeds if wanted(s)]
    summary["max_peak_over_input"] = max(
        (r["peak"] / max(1, 2 * r["input_bytes"] + fuzzing.SLACK_BYTES) for r in results), default=0
    )
    summary["slowest_s"] = max((r["secs"] for r in results), default=0)
    print(f"{summary['inputs']} inputs from {len(summary['seeds'])} seeds in {summary['seconds']} s")
    for k, v in sorted(summary["verdicts"].items()):
        print(f"  {k:14s} {v}")
    print("failures (foreign/hang/crash/overalloc/wrong_shape):", len(summary["bad"]))
    for r in summary["bad"][:40]:
        print(f"  {r['verdict']:11s} {r['seed']:14s} {r['label'][:60]:60s} {r.get('error', '')[:120]}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))
    return 1 if summary["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
