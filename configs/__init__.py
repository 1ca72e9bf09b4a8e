"""The hydra config tree (train.yaml, eval.yaml, collect.yaml and their groups), shipped as package data.

This package holds YAML only, plus the two helpers every entry point needs: composing a config
in-process (benchmarks, tests) and naming an unknown command-line key before hydra runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent


def compose_config(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """configs/<config_name>.yaml composed with ``overrides`` (hydra's compose API, no run directory)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name, overrides=list(overrides))


def unknown_option(argv: Sequence[str], config_name: str) -> str | None:
    """One line naming the first command-line key that configs/<config_name>.yaml lacks, with the valid keys beside it.

    Hydra lists the valid choices of a config group but not the valid keys of a config node, so the
    entry points check dotted keys first: the config is composed with the command line's group
    choices (``policy=transformer`` changes which ``policy.*`` keys exist) and each key is looked up.
    """
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
    except OverrideParseException:
        return None  # hydra reports syntax errors itself
    is_choice = [not o.is_add() and (CONFIG_DIR / o.key_or_group).is_dir() for o in overrides]
    choices = [o.input_line for o, choice in zip(overrides, is_choice) if choice]
    try:
        cfg = compose_config(config_name, choices)
    except HydraException:
        return None  # hydra reports unknown group choices itself, with the valid ones
    for override, choice in zip(overrides, is_choice):
        key = override.key_or_group
        if choice or override.is_add() or key.startswith("hydra"):
            continue
        node, path = cfg, []
        for name in key.split("."):
            if node is None or (not path and name not in node.keys() and (CONFIG_DIR / name).is_dir()):
                break  # an unset group (e.g. eval's sampler): hydra explains it
            if not isinstance(node, DictConfig) or name not in node.keys():
                where = f" under {'.'.join(path)}" if path else ""
                valid = (
                    ", ".join(str(k) for k in node.keys())
                    if isinstance(node, DictConfig)
                    else "none (not a config node)"
                )
                return f"unknown option {key!r}; valid options{where}: {valid}"
            node, path = OmegaConf.select(node, name, throw_on_resolution_failure=False), [*path, name]
    return None
