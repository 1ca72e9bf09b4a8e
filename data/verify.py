"""Check whole demonstration stores and say exactly what is damaged: python -m data.verify STORE [STORE ...]

Opens each store as a reader does (layout, metadata, ``episode_ends``, array lengths), then decodes every
chunk of every array inside the committed rows, which checks each chunk's crc32c checksum, and lists the
chunks that are missing. Prints one line per problem (store, key, chunk) or one ``ok`` line with what was
checked; arrays without checksums (Diffusion Policy's stores, stores written before checksums) are
named, since only a decoding failure shows there. Exits 1 if any store is damaged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from data.replay_buffer import ReplayBuffer, ReplayBufferError


def verify_store(path: str) -> list[str]:
    """The report lines for one store; the first word is ``ok`` or ``damaged``."""
    try:
        buf = ReplayBuffer.open(path, check_chunks=False)
    except ReplayBufferError as exc:
        return [f"damaged: {exc}"]
    try:
        report = buf.verify()
    finally:
        buf.close()
    if report.problems:
        return [f"damaged: {line}" for line in report.problems]
    unchecked = f"; no checksums in {', '.join(report.unchecked)} (decoded only)" if report.unchecked else ""
    return [f"ok: {path}: {buf.n_episodes} episodes, {buf.n_steps} steps, {report.chunks} chunks read{unchecked}"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 if every store is intact, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m data.verify", description=__doc__.split("\n")[0])
    parser.add_argument("stores", nargs="+", help="store paths (.zarr directories or .zarr.zip files)")
    args = parser.parse_args(argv)
    damaged = False
    for path in args.stores:
        for line in verify_store(path):
            damaged |= line.startswith("damaged")
            print(line, file=sys.stderr if line.startswith("damaged") else sys.stdout)
    return 1 if damaged else 0


if __name__ == "__main__":
    sys.exit(main())
