"""Which floating-point precision to train in: float32, or mixed float16/bfloat16.

Mixed precision computes in 16 bits and keeps the weights (and, in each model,
the output layer and the loss) in float32. It pays on NVIDIA GPUs with tensor
cores (float16) and on CPUs that compute bfloat16 natively (AVX512-BF16 or
AMX); elsewhere 16-bit arithmetic is emulated and slower.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import keras
import tensorflow as tf

log = logging.getLogger(__name__)


def cpu_supports_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16), from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:  # not Linux: no way to tell, so assume not
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def choose_precision(
    mode: str,
    gpu_capabilities: list[tuple[int, int]],
    cpu_bfloat16: bool,
    bfloat16_faster_on_cpu: bool = True,
) -> tuple[str, str]:
    """The Keras dtype policy for ``--mixed-precision`` and the reason, as a sentence.

    ``auto``: float16 on GPUs with tensor cores (compute capability 7.0+);
    bfloat16 on a CPU that computes it natively (AVX512-BF16 or AMX), where the
    benchmarks (``make bench-cifar``, ``make bench-shakespeare``) measured it
    faster for this kind of model (``bfloat16_faster_on_cpu``); otherwise
    float32. ``on``: float16 on a GPU, bfloat16 on a CPU. ``off``: float32.
    """
    if mode == "off":
        return "float32", "--mixed-precision off"
    if gpu_capabilities:
        if mode == "on" or min(gpu_capabilities) >= (7, 0):
            return "mixed_float16", "NVIDIA GPU(s) with float16 tensor cores"
        return "float32", "the GPU has no float16 tensor cores (compute capability < 7.0)"
    if mode == "on":
        return "mixed_bfloat16", "--mixed-precision on, on a CPU"
    if cpu_bfloat16 and bfloat16_faster_on_cpu:
        return "mixed_bfloat16", "the CPU computes bfloat16 natively (AVX512-BF16/AMX)"
    if cpu_bfloat16:
        return (
            "float32",
            "this model is not measured faster in bfloat16 on such CPUs (make bench-*)",
        )
    return "float32", "the CPU has no native bfloat16 (no AVX512-BF16 or AMX)"


def precision_policy(mode: str, bfloat16_faster_on_cpu: bool = True) -> str:
    """The Keras dtype policy for ``--mixed-precision`` on this machine (see `choose_precision`)."""
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [
        tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))
        for gpu in gpus
    ]
    policy, reason = choose_precision(
        mode, capabilities, cpu_supports_bfloat16(), bfloat16_faster_on_cpu
    )
    log.info("Precision policy: %s (--mixed-precision %s: %s)", policy, mode, reason)
    return policy


@contextlib.contextmanager
def training_precision(mode: str, bfloat16_faster_on_cpu: bool = True) -> Iterator[str]:
    """Set Keras's global dtype policy for ``--mixed-precision`` and restore float32 after.

    Models built inside the block compute in the chosen precision; later models
    in the same process (tests, notebooks) get float32 again, even after an error.
    """
    policy = precision_policy(mode, bfloat16_faster_on_cpu)
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(previous)
