"""Benchmark: what distributing costs on one machine, for the stock and Shakespeare models.

    python -m shared.bench_scaling        # or: make bench-scaling

Trains each project's default model (a few epochs, the same global batch) three
ways and prints the steady-state training throughput (median
``examples_per_second`` of ``history.csv`` after the first epoch):

* 1 process, the default strategy (one device);
* 1 process, ``MirroredStrategy`` over 2 logical CPU devices (2 replicas that
  all-reduce gradients in memory);
* 2 worker processes on localhost (``MultiWorkerMirroredStrategy``, started by
  ``shared.launch``; gradients all-reduced over gRPC).

On one 2-core machine the three use the same cores, so any slowdown is the
communication and synchronisation overhead of each strategy; speed-ups need
more devices or machines. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from shared.config import program_name

# Each project's config class, and flags that shorten its default run to a few epochs.
PROJECTS = {
    "stock_lstm": ("StockConfig", ["--epochs", "4", "--patience", "10"]),
    "shakespeare": (
        "ShakespeareConfig",
        ["--epochs", "3", "--steps-per-epoch", "40", "--sample-length", "0"],
    ),
}
MODES = {
    "default": "1 process, 1 device",
    "mirrored": "1 process, 2 logical CPUs (MirroredStrategy)",
    "multiworker": "2 processes on localhost (MultiWorkerMirroredStrategy)",
}
UNITS = {"stock_lstm": "windows/s", "shakespeare": "characters/s"}


def _child(project: str, mode: str, run_dir: str, extra: list[str]) -> None:
    """Train once in this process (split into 2 logical CPUs first for ``mirrored``)."""
    if mode == "mirrored":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
    import importlib

    from shared.cli import run_training_cli

    train = importlib.import_module(f"projects.{project}.train")
    class_name, shortening = PROJECTS[project]
    config_class = getattr(importlib.import_module(f"projects.{project}.config"), class_name)
    argv = [*shortening, *extra, "--strategy", mode, "--run-dir", run_dir]
    run_training_cli(train.main, config_class, argv)


def _measure(project: str, mode: str, scratch: Path) -> float:
    run_dir = scratch / f"{project}-{mode}"
    child = [sys.executable, "-m", "shared.bench_scaling", "--child", project, mode, str(run_dir)]
    command = child
    if mode == "multiworker":
        command = [sys.executable, "-m", "shared.launch", "--workers", "2", "--", *child]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-2000:] + result.stderr[-2000:])
        raise SystemExit(f"{project} / {mode} failed (exit {result.returncode})")
    history = pd.read_csv(run_dir / "history.csv")
    return float(history["examples_per_second"].iloc[1:].median())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=program_name(), description=__doc__.split("\n")[0])
    # Internal: the benchmark runs each measurement in a child process of its own.
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--projects", nargs="+", default=list(PROJECTS), choices=list(PROJECTS))
    args, extra = parser.parse_known_args(argv)  # a child passes its extra flags on
    if extra and not args.child:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.child:
        _child(*args.child, extra)
        return
    scratch = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    results = {}
    try:
        for project in args.projects:
            for mode in MODES:
                results[(project, mode)] = _measure(project, mode, scratch)
                print(
                    f"{project:12s} {MODES[mode]:55s} {results[(project, mode)]:>10.0f}", flush=True
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\nTraining throughput, same global batch, 2 CPU cores (median after epoch 1):")
    print(f"{'project':12s} {'strategy':55s} {'throughput':>21s} {'vs 1 device':>12s}")
    for project in args.projects:
        baseline = results[(project, "default")]
        for mode, label in MODES.items():
            value = results[(project, mode)]
            print(
                f"{project:12s} {label:55s} {value:>8.0f} {UNITS[project]:<12s} "
                f"{value / baseline:>11.2f}x"
            )
    print(json.dumps({f"{p}/{m}": round(v, 1) for (p, m), v in results.items()}))


if __name__ == "__main__":
    main()
