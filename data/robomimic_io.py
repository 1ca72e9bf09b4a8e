"""Convert between robomimic's hdf5 demonstration layout and our zarr ``ReplayBuffer``.

robomimic layout::

    data/                 attrs: total, env_args (JSON)
      demo_<i>/           attrs: num_samples[, ep_meta (JSON; "lang": the demo's instruction, as robocasa writes)]
        obs/<key>         (T, ...)
        next_obs/<key>    (T, ...)
        actions           (T, Da)
        rewards, dones    (T,)
    mask/<filter>         names of the demos in a filter key, e.g. "train", "valid"

Import keeps demos in numeric order (demo_2 before demo_10), renames or concatenates
observation keys (``key_map``), optionally keeps only one filter key, and records
``meta/robomimic_demo`` (the demo number) and one boolean ``meta/mask_<filter>`` per filter
key, and ``meta/instruction`` from each demo's ``ep_meta["lang"]`` when the file has one (robocasa's language
instructions; then every demo must). Export writes every field robomimic's ``SequenceDataset`` reads, and a
store's ``meta/instruction`` back as each demo's ``ep_meta`` {"lang": ...}. Both write to a
temporary path and rename it at the end, so an interrupted conversion leaves nothing behind.
The input is never the output, and ``--overwrite`` replaces only what the command writes (a zarr
store for import, an hdf5 file for export), never another file or directory.

CLI::

    python -m data.robomimic_io import IN.hdf5 OUT.zarr [--key agent_pos=robot0_eef_pos,robot0_gripper_qpos]
                                                        [--filter train] [--overwrite]
    python -m data.robomimic_io export IN.zarr OUT.hdf5 [--val-ratio 0.1] [--seed 0] [--overwrite]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from data.atomic import atomic_path, check_output
from data.replay_buffer import ReplayBuffer, ReplayBufferError, is_zarr_store
from data.sampler import split_episodes

_DEMO = re.compile(r"^demo_(\d+)$")


class RobomimicFormatError(ValueError):
    """An hdf5 file that does not follow robomimic's layout."""


def _sorted_demos(names: Sequence[str], where: str) -> list[str]:
    """Demo names sorted by their number; anything else is an error."""
    bad = [n for n in names if not _DEMO.match(n)]
    if bad:
        raise RobomimicFormatError(f"{where}: entries {bad[:3]} are not named demo_<number>")
    return sorted(names, key=lambda n: int(_DEMO.match(n).group(1)))


def import_hdf5(
    hdf5_path: str | Path,
    zarr_path: str | Path,
    *,
    key_map: Mapping[str, str | Sequence[str]] | None = None,
    filter_key: str | None = None,
    attrs: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> ReplayBuffer:
    """Import a robomimic hdf5 into a new zarr store; ``key_map``: our key -> robomimic obs key(s)."""
    hdf5_path, zarr_path = Path(hdf5_path), Path(zarr_path)
    if not hdf5_path.is_file():
        raise FileNotFoundError(f"{hdf5_path}: no such hdf5 file")
    check_output(hdf5_path, zarr_path, overwrite, is_zarr_store, "a zarr store")
    try:
        f = h5py.File(hdf5_path, "r")
    except OSError as exc:
        raise RobomimicFormatError(f"{hdf5_path}: not an hdf5 file ({exc})") from None
    with f:
        if "data" not in f:
            raise RobomimicFormatError(f"{hdf5_path}: missing group 'data'; not a robomimic dataset")
        masks = {
            k: {n.decode() if isinstance(n, bytes) else str(n) for n in f[f"mask/{k}"][:]}
            for k in (f["mask"].keys() if "mask" in f else [])
        }
        demos = _sorted_demos(list(f["data"].keys()), f"{hdf5_path}:data")
        if filter_key is not None:
            if filter_key not in masks:
                raise RobomimicFormatError(f"{hdf5_path}: no filter key mask/{filter_key}; available: {sorted(masks)}")
            demos = [d for d in demos if d in masks[filter_key]]
        if not demos:
            raise RobomimicFormatError(f"{hdf5_path}: no demos to import")
        first_obs = f[f"data/{demos[0]}/obs"] if f"data/{demos[0]}/obs" in f else None
        if first_obs is None:
            raise RobomimicFormatError(f"{hdf5_path}: data/{demos[0]} has no 'obs' group")
        mapping = {k: [v] if isinstance(v, str) else list(v) for k, v in (key_map or {k: k for k in first_obs}).items()}
        env_args = f["data"].attrs.get("env_args", "{}")
        store_attrs = {"source": str(hdf5_path), "obs_keys": list(mapping), "robomimic_env_args": str(env_args)}
        store_attrs.update(dict(attrs or {}))
        with_lang = _instruction(f, demos[0]) is not None
        with ReplayBuffer.building(zarr_path, attrs=store_attrs, overwrite=overwrite) as buf:
            for name in tqdm(demos, desc=f"import {hdf5_path.name}", unit="demo"):
                meta = _demo_meta(name, masks)
                if with_lang:
                    meta["instruction"] = _instruction(f, name)
                    if meta["instruction"] is None:
                        raise RobomimicFormatError(
                            f"{hdf5_path}: data/{name} has no ep_meta 'lang' but data/{demos[0]} has; "
                            "give every demo its instruction or none"
                        )
                buf.add_episode(_read_demo(f, name, mapping), meta)
    return ReplayBuffer.open(zarr_path)


def _read_demo(f: h5py.File, name: str, mapping: Mapping[str, list[str]]) -> dict[str, np.ndarray]:
    """One demo as {our key: (T, ...)} plus ``action``."""
    grp = f[f"data/{name}"]
    if "actions" not in grp:
        raise RobomimicFormatError(f"{f.filename}: data/{name} has no 'actions'")
    episode = {"action": np.asarray(grp["actions"][:], dtype=np.float32)}
    for ours, theirs in mapping.items():
        parts = []
        for key in theirs:
            if f"obs/{key}" not in grp:
                raise RobomimicFormatError(
                    f"{f.filename}: data/{name}/obs has no key {key!r}; available: {sorted(grp['obs'].keys())}"
                )
            parts.append(np.asarray(grp[f"obs/{key}"][:]))
        if len(parts) == 1:
            episode[ours] = parts[0]
        else:
            episode[ours] = np.concatenate([p.reshape(p.shape[0], -1).astype(np.float32) for p in parts], axis=-1)
    return episode


def _instruction(f: h5py.File, name: str) -> str | None:
    """The demo's language instruction (``ep_meta`` JSON attr, key "lang"), or None if it has none."""
    raw = f[f"data/{name}"].attrs.get("ep_meta")
    if raw is None:
        return None
    try:
        lang = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw)).get("lang")
    except (json.JSONDecodeError, AttributeError):
        raise RobomimicFormatError(f"{f.filename}: data/{name} attr ep_meta is not a JSON object") from None
    return str(lang) if lang else None


def _demo_meta(name: str, masks: Mapping[str, set[str]]) -> dict[str, object]:
    """Per-episode meta: the demo number and membership of each filter key."""
    meta: dict[str, object] = {"robomimic_demo": int(_DEMO.match(name).group(1))}
    meta.update({f"mask_{k}": name in members for k, members in masks.items()})
    return meta


def export_hdf5(
    zarr_path: str | Path,
    hdf5_path: str | Path,
    *,
    action_key: str = "action",
    val_ratio: float = 0.0,
    seed: int = 0,
    env_args: Mapping[str, object] | None = None,
    overwrite: bool = False,
) -> Path:
    """Export a zarr store to robomimic's hdf5 layout (``mask/train``/``mask/valid`` if ``val_ratio``)."""
    hdf5_path = Path(hdf5_path)
    check_output(Path(zarr_path), hdf5_path, overwrite, lambda p: p.is_file() and h5py.is_hdf5(p), "an hdf5 file")
    buf = ReplayBuffer.open(zarr_path)
    if action_key not in buf:
        raise ReplayBufferError(f"{zarr_path}: no key {action_key!r} to export as actions; keys: {buf.keys()}")
    obs_keys = [k for k in buf.keys() if k not in (action_key, "reward")]
    task = buf.attrs.get("task", "unknown")
    args = dict(env_args or {"env_name": str(task), "type": 0, "env_kwargs": {}})
    instructions = buf.episode_meta("instruction").tolist() if "instruction" in buf.meta_keys() else None
    try:
        with atomic_path(hdf5_path) as tmp, h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            total = 0
            for i in tqdm(range(buf.n_episodes), desc=f"export {Path(zarr_path).name}", unit="demo"):
                ep = buf.get_episode(i)
                t = len(ep[action_key])
                grp = data.create_group(f"demo_{i}")
                grp.attrs["num_samples"] = t
                if instructions is not None:
                    grp.attrs["ep_meta"] = json.dumps({"lang": str(instructions[i])})
                grp.create_dataset("actions", data=ep[action_key].astype(np.float64))
                rewards = ep["reward"].astype(np.float64) if "reward" in ep else np.zeros(t)
                grp.create_dataset("rewards", data=rewards)
                dones = np.zeros(t, dtype=np.int64)
                dones[-1] = 1
                grp.create_dataset("dones", data=dones)
                for key in obs_keys:
                    grp.create_dataset(f"obs/{key}", data=ep[key])
                    grp.create_dataset(f"next_obs/{key}", data=np.concatenate([ep[key][1:], ep[key][-1:]]))
                total += t
            data.attrs["total"] = total
            data.attrs["env_args"] = json.dumps(args)
            if val_ratio > 0:
                train, val = split_episodes(buf.n_episodes, val_ratio=val_ratio, seed=seed)
                for name, mask in (("train", train), ("valid", val)):
                    f.create_dataset(
                        f"mask/{name}", data=np.array([f"demo_{i}" for i in np.flatnonzero(mask)], dtype="S")
                    )
    finally:
        buf.close()
    return hdf5_path


def _parse_key_map(items: Sequence[str]) -> dict[str, list[str]] | None:
    """Parse ``ours=theirs1,theirs2`` items."""
    if not items:
        return None
    out = {}
    for item in items:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise SystemExit(f"--key expects OURS=THEIRS[,THEIRS...], got {item!r}")
        out[ours] = theirs.split(",")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m data.robomimic_io", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import", help="robomimic hdf5 -> zarr store")
    imp.add_argument("src", help="input .hdf5")
    imp.add_argument("dst", help="output .zarr directory")
    imp.add_argument(
        "--key", action="append", default=[], help="OURS=THEIRS[,THEIRS...] (repeatable); default: keep all obs keys"
    )
    imp.add_argument("--filter", default=None, help="import only the demos of mask/<filter>")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing output")
    exp = sub.add_parser("export", help="zarr store -> robomimic hdf5")
    exp.add_argument("src", help="input .zarr store")
    exp.add_argument("dst", help="output .hdf5")
    exp.add_argument(
        "--val-ratio", type=float, default=0.0, help="write mask/train and mask/valid with this share held out"
    )
    exp.add_argument("--seed", type=int, default=0, help="seed of the train/valid split")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "import":
            buf = import_hdf5(
                args.src, args.dst, key_map=_parse_key_map(args.key), filter_key=args.filter, overwrite=args.overwrite
            )
            print(buf.summary())
        else:
            out = export_hdf5(args.src, args.dst, val_ratio=args.val_ratio, seed=args.seed, overwrite=args.overwrite)
            print(f"wrote {out}")
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
