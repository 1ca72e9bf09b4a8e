"""Where benchmark results go and how they are written: JSON through data.atomic, mode 0644."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data.atomic import write_json_atomic

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically, readable by everyone; returns the path."""
    return write_json_atomic(path, payload, mode=0o644)
