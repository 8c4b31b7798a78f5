"""Which GPUs this host has, and which one each worker slot gets."""

from __future__ import annotations

import os
import shutil
import subprocess


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else the driver's list
    (NVML through pynvml when installed, else nvidia-smi); none means CPU only."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml, or no driver behind it
        pass
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def choose_gpus(spec: str) -> list[str]:
    """`--gpus`: "all" (those visible), "none", or ids such as "0,2" (which must exist)."""
    spec = spec.strip().lower()
    if spec == "none":
        return []
    found = visible_gpus()
    if spec == "all":
        return found
    wanted = [part.strip() for part in spec.split(",") if part.strip()]
    missing = [g for g in wanted if g not in found]
    if missing:
        raise ValueError(
            f"--gpus: no GPU {', '.join(missing)} on this host "
            f"(found: {', '.join(found) or 'none'})"
        )
    return wanted


def slot_devices(workers: int, gpus: list[str]) -> list[str | None]:
    """One GPU id per worker slot, round-robin (K slots per GPU); None means CPU."""
    if not gpus:
        return [None] * workers
    return [gpus[i % len(gpus)] for i in range(workers)]


def pin_device(gpu: str | None, *, sharing: int, threads: int) -> None:
    """Set, before any framework is imported, what this process may use: its GPU, or
    its share of the cores."""
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu if gpu is not None else ""
    share_device(gpu is not None, sharing=sharing, threads=threads)


def share_device(on_gpu: bool, *, sharing: int, threads: int) -> None:
    """How a process uses the device it was given (by us or by Ray): GPU memory grown on
    demand, so `sharing` processes fit on one GPU; on the CPU, `threads` cores."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # TensorFlow
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX
    if on_gpu and sharing > 1:
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / sharing:.2f}")
    if not on_gpu:  # share the cores instead of every process using all of them
        for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))
