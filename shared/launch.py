"""Start N training workers on this machine, each with its own ``TF_CONFIG``.

    python -m shared.launch --workers 2 -- python -m projects.xor_mlp.train --quick
    make multiworker PROJECT=xor_mlp WORKERS=2 ARGS="--quick"

Each worker is the same command with ``TF_CONFIG`` naming every worker's
``localhost`` port (free ports, picked at start) and its own index; worker 0 is
the chief. Every output line is prefixed ``[worker i]``. If a worker fails, the
others are stopped and the launcher exits with the failed worker's status,
naming it. All workers get the same ``RUN_STAMP``, so a run without
``--run-dir`` still has one directory; re-run the same command with the same
``--run-dir`` to resume an interrupted run.

On real machines there is no launcher: start the same command on each host with
that host's ``TF_CONFIG`` (see README.md, "Several machines").
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from shared.config import program_name

STOP_GRACE_SECONDS = 10.0
# After Ctrl-C: how long the workers get to finish their step and stop by themselves
# (one step of a large CPU batch can take half a minute).
CTRL_C_GRACE_SECONDS = 60.0
RUN_STAMP_VARIABLE = "RUN_STAMP"


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on localhost right now."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind(("localhost", 0))
            sockets.append(handle)
            ports.append(handle.getsockname()[1])
    finally:
        for handle in sockets:
            handle.close()
    return ports


def tf_config(ports: Sequence[int], index: int) -> str:
    """The ``TF_CONFIG`` JSON of worker ``index`` in a localhost cluster."""
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def _relay(stream, prefix: str, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            sys.stdout.write(f"{prefix}{line}")
            sys.stdout.flush()
    stream.close()


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_after_ctrl_c(processes: Sequence[subprocess.Popen]) -> None:
    """Let child trainings stop by themselves, else interrupt them, else stop them.

    A terminal's Ctrl-C reaches the children too (the same process group): each
    stops at the end of a step and says how to resume. SIGTERM or SIGKILL at once
    would cut that short (``subprocess.run`` kills at once, without a word), and
    TensorFlow's multi-worker runtime catches SIGTERM itself (a worker then hung in
    its step until it was killed). A Ctrl-C sent to the parent alone (``kill -INT``)
    is passed on after the grace period; a second Ctrl-C skips the wait.

    Args:
        processes: The children, e.g. a launch's workers or a sweep's training.
    """
    for stop in (None, signal.SIGINT):
        grace = CTRL_C_GRACE_SECONDS if stop is None else STOP_GRACE_SECONDS
        deadline = time.monotonic() + grace
        for process in processes:
            if stop is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(stop)
        try:
            for process in processes:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            return
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            continue
    _stop(processes)


def launch(command: Sequence[str], workers: int) -> int:
    """Run ``command`` as ``workers`` cooperating workers; return the exit status.

    Args:
        command: The training command, e.g. ``["python", "-m", "projects.xor_mlp.train"]``.
        workers: How many worker processes.

    Returns:
        0 when every worker succeeded, else the first failed worker's status
        (1 if it was killed by a signal).
    """
    try:
        ports = free_ports(workers)
    except OSError as error:  # e.g. more workers than the open-file limit allows
        print(
            f"launch: cannot reserve {workers} free localhost ports ({error.strerror}); "
            "use fewer --workers.",
            file=sys.stderr,
            flush=True,
        )
        return 1
    stamp = os.environ.get(RUN_STAMP_VARIABLE) or dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    lock = threading.Lock()
    processes, relays = [], []
    print(f"launch: {workers} workers on localhost ports {ports}: {' '.join(command)}", flush=True)
    for index in range(workers):
        env = {
            **os.environ,
            "TF_CONFIG": tf_config(ports, index),
            RUN_STAMP_VARIABLE: stamp,
            "PYTHONUNBUFFERED": "1",
        }
        try:
            process = subprocess.Popen(
                list(command),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
        except OSError as error:  # not executable, or out of processes or open files
            print(
                f"launch: cannot start worker {index} ({error.strerror}: {command[0]}); "
                "stopping the other workers.",
                file=sys.stderr,
                flush=True,
            )
            _stop(processes)
            return 1
        processes.append(process)
        relay = threading.Thread(
            target=_relay, args=(process.stdout, f"[worker {index}] ", lock), daemon=True
        )
        relay.start()
        relays.append(relay)

    status = 0
    try:
        while True:
            codes = [process.poll() for process in processes]
            failed = [index for index, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                index = failed[0]
                code = codes[index]
                reason = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
                with lock:
                    print(
                        f"launch: worker {index} {reason}; stopping the other workers.",
                        file=sys.stderr,
                        flush=True,
                    )
                _stop(processes)
                status = code if code > 0 else 1
                break
            if all(code == 0 for code in codes):
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop_after_ctrl_c(processes)
        with lock:
            print("launch: interrupted; the workers are stopped.", file=sys.stderr, flush=True)
        status = 130
    for relay in relays:
        relay.join(timeout=5)
    if status == 0:
        print(f"launch: all {workers} workers finished.", flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="Run a training command as N local workers (MultiWorkerMirroredStrategy).",
        usage="python -m shared.launch --workers N -- COMMAND [ARGS ...]",
    )
    parser.add_argument("--workers", type=int, default=2, help="Worker processes (default: 2).")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The training command.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the training command after --, e.g. -- python -m projects.xor_mlp.train")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if shutil.which(command[0]) is None:  # not a program on PATH, nor an executable file
        parser.error(
            f"{command[0]}: not found or not executable; give the training command after --, "
            "e.g. -- python -m projects.xor_mlp.train"
        )
    return launch(command, args.workers)


if __name__ == "__main__":
    sys.exit(main())
