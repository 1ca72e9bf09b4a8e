"""Where benchmark results go and how they are written: JSON through data.atomic, mode 0644."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from data.atomic import write_json_atomic
from policy.optim import cpu_has_native_bf16

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What a result was measured on: platform, torch, core count, CPU model and whether it computes bf16 natively."""
    return {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "native_bf16": cpu_has_native_bf16(),
    }


def cpu_caption(machine: dict[str, Any]) -> str:
    """'<CPU model>, native bf16' from ``machine_info()`` ('unknown CPU' for results written before it was kept)."""
    bf16 = {True: ", native bf16", False: ", no native bf16"}.get(machine.get("native_bf16"), "")
    return f"{machine.get('cpu', 'unknown CPU')}{bf16}"


def tagged_stem(base: str, tag: str) -> str:
    """``base``, or ``base_<tag>``: a variant's result files sit beside the default run's without replacing them."""
    return f"{base}_{tag}" if tag else base


def tag_error(tag: str) -> str | None:
    """Why ``tag`` cannot name result files (None when it can: letters, digits, '_' or '-')."""
    if tag and not tag.replace("_", "").replace("-", "").isalnum():
        return f"--tag {tag!r} must be letters, digits, '_' or '-' (it names files)"
    return None


def write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically, readable by everyone; returns the path."""
    return write_json_atomic(path, payload, mode=0o644)
