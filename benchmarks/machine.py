"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu() -> str:
    """The CPU line of a benchmark: model, cores, and the cores this process may use."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return f"{cpu_model()}, {os.cpu_count()} cores (usable: {usable})"


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def commit() -> str:
    """The commit measured, and whether the working tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return head + (" (with uncommitted changes)" if dirty else "")


def machine_basics() -> dict[str, str]:
    """What every benchmark reports about where it ran, before lines of its own."""
    return {
        "commit": commit(),
        "cpu": cpu(),
        "load average before the run": load_average(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def postgres_settings(url: str, names: Sequence[str] = ()) -> tuple[str, dict[str, str]]:
    """The PostgreSQL server's version, and the settings `names` (SHOW NAME)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
            return version, {k: conn.exec_driver_sql(f"SHOW {k}").scalar() for k in names}
    finally:
        engine.dispose()
