"""The ``actchunk-data`` command: import, export and verify demonstration stores.

    actchunk-data import SRC OUT.zarr [--format lerobot|robomimic] [options]   # a LeRobot directory or robomimic hdf5
    actchunk-data export IN.zarr DST [--format lerobot|robomimic] [options]    # a LeRobot directory or robomimic hdf5
    actchunk-data verify STORE [STORE ...]                                     # decode and check every chunk

``--format`` defaults to what the paths say: a directory (or a path without an .hdf5 / .h5 suffix) is
LeRobot's format, an .hdf5 / .h5 file robomimic's. The options are those of ``python -m data.lerobot_io``
and ``python -m data.robomimic_io`` (``actchunk-data import --format lerobot --help`` lists them).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from data import lerobot_io, robomimic_io, verify

FORMATS = {"lerobot": lerobot_io.main, "robomimic": robomimic_io.main}
HDF5_SUFFIXES = (".hdf5", ".h5")


def _pop_format(args: list[str]) -> tuple[str | None, list[str]]:
    """The value of ``--format X`` / ``--format=X`` and the arguments without it."""
    for i, arg in enumerate(args):
        if arg == "--format" and i + 1 < len(args):
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith("--format="):
            return arg.partition("=")[2], args[:i] + args[i + 1 :]
    return None, args


def _infer_format(command: str, args: Sequence[str]) -> str:
    """The format the paths name: the import's source, the export's destination."""
    paths = [a for a in args if not a.startswith("-")]
    path = paths[0] if command == "import" and paths else paths[1] if len(paths) > 1 else ""
    return "robomimic" if Path(path).suffix.lower() in HDF5_SUFFIXES else "lerobot"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``actchunk-data``): dispatch to the format's own command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "verify":
        return verify.main(rest)
    if command not in ("import", "export"):
        print(f"actchunk-data: error: unknown command {command!r}; choose import, export or verify", file=sys.stderr)
        return 2
    fmt, rest = _pop_format(rest)
    fmt = fmt or _infer_format(command, rest)
    if fmt not in FORMATS:
        print(f"actchunk-data: error: unknown --format {fmt!r}; choose one of {sorted(FORMATS)}", file=sys.stderr)
        return 2
    return FORMATS[fmt]([command, *rest])


if __name__ == "__main__":
    sys.exit(main())
