"""Convert between LeRobot's dataset format v3.0 and our zarr ``ReplayBuffer`` (see data/lerobot_format.py).

Import (``data.lerobot_read``) maps LeRobot's features to our keys: observation.image -> image,
observation.images.<cam> -> <cam>_image, observation.state -> agent_pos (``--state-key state``),
observation.environment_state -> state, action, next.reward -> reward, any other observation.<x> -> <x>;
``--map SRC=DST`` renames one and ``--map SRC=`` leaves it out. Export (``data.lerobot_write``) maps back:
image -> observation.image, <cam>_image -> observation.images.<cam>, agent_pos -> observation.state,
state -> observation.environment_state (or observation.state without agent_pos), reward -> next.reward,
action, other keys -> observation.<key>.
Both build their output beside its path and rename it into place at the end: a failure leaves nothing.

CLI::

    python -m data.lerobot_io import DIR OUT.zarr [--map SRC=DST] [--state-key agent_pos|state]
                                                  [--image-size H W] [--overwrite]
    python -m data.lerobot_io export IN.zarr DIR [--map OURS=THEIRS] [--fps N] [--vcodec libsvtav1|h264] [--crf 30]
                                                 [--robot-type NAME] [--chunks-size 1000] [--data-file-mb 100]
                                                 [--video-file-mb 200] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data.lerobot_format import parse_map
from data.lerobot_read import import_lerobot
from data.lerobot_write import VIDEO_CODEC_NAMES, export_lerobot


def build_parser(prog: str = "python -m data.lerobot_io") -> argparse.ArgumentParser:
    """The import/export argument parser."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="LeRobot v3.0 dataset directory -> zarr store")
    imp.add_argument("src", help="LeRobot dataset directory (holds meta/info.json)")
    imp.add_argument("dst", help="output .zarr directory")
    imp.add_argument("--map", action="append", default=[], metavar="SRC=DST", help="rename a feature (SRC= drops it)")
    imp.add_argument(
        "--state-key", default="agent_pos", choices=["agent_pos", "state"], help="our key for observation.state"
    )
    imp.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="resize every image to H x W")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing store")
    exp = sub.add_parser("export", help="zarr store -> LeRobot v3.0 dataset directory")
    exp.add_argument("src", help="input .zarr store")
    exp.add_argument("dst", help="output dataset directory")
    exp.add_argument("--map", action="append", default=[], metavar="OURS=THEIRS", help="rename a key (OURS= drops it)")
    exp.add_argument("--fps", type=int, default=None, help="control rate; default: the store's fps attribute")
    exp.add_argument("--vcodec", default="libsvtav1", choices=sorted(VIDEO_CODEC_NAMES), help="video codec")
    exp.add_argument("--crf", type=int, default=30, help="video quality (lower: better, larger); LeRobot's is 30")
    exp.add_argument("--robot-type", default=None, help="info.json's robot_type")
    exp.add_argument("--chunks-size", type=int, default=1000, help="files per chunk directory")
    exp.add_argument("--data-file-mb", type=float, default=100.0, help="size limit of a data parquet file")
    exp.add_argument("--video-file-mb", type=float, default=200.0, help="size limit of a video file")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing LeRobot dataset directory")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run a parsed command; bad input prints one line and returns 2."""
    try:
        if args.cmd == "import":
            buf = import_lerobot(
                args.src,
                args.dst,
                key_map=parse_map(args.map),
                state_key=args.state_key,
                image_size=tuple(args.image_size) if args.image_size else None,
                overwrite=args.overwrite,
            )
            print(buf.summary())
        else:
            out = export_lerobot(
                args.src,
                args.dst,
                key_map=parse_map(args.map),
                fps=args.fps,
                vcodec=args.vcodec,
                crf=args.crf,
                robot_type=args.robot_type,
                chunks_size=args.chunks_size,
                data_file_mb=args.data_file_mb,
                video_file_mb=args.video_file_mb,
                overwrite=args.overwrite,
            )
            print(f"wrote {out}")
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
