"""The Makefile's run targets: every ``rlrf-nb`` command they expand to names a recipe that loads with its overrides
and notebook parameters the chosen stages declare, so a typo in a target fails here, not an hour into a sweep."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from rlrf_nb.config import load_recipe
from rlrf_nb.runner import _select, parse_grid, resolve_grid_key, split_params, validate_params

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["demo", "demo-v1", "diagnose", "reproduce", "reproduce-v1", "reproduce-1000", "reproduce-rs",
           "reproduce-rs-ablations", "reproduce-judge"]


def _commands(target: str) -> list[list[str]]:
    """The ``rlrf-nb`` command lines ``make -n target`` prints (sub-makes included), as argument lists."""
    out = subprocess.run(["make", "-n", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    cmds = []
    for line in out.replace("\\\n", " ").splitlines():
        args = shlex.split(line)
        at = [i for i, a in enumerate(args) if a.endswith("rlrf-nb")]
        if at:
            cmds.append(args[at[0] + 1:])
    return cmds


def _options(args: list[str]) -> dict[str, list[str]]:
    opts: dict[str, list[str]] = {}
    key = None
    for a in args[1:]:
        if a.startswith("-"):
            key = a
            opts.setdefault(key, [])
        elif key is not None:
            opts[key].append(a)
    return opts


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("target", TARGETS)
def test_every_make_target_runs_a_recipe_with_valid_overrides_and_parameters(target):
    cmds = _commands(target)
    assert cmds, f"make -n {target} runs no rlrf-nb command"
    for args in cmds:
        sub, opts = args[0], _options(args)
        if sub == "collate":
            assert re.fullmatch(r"runs/[A-Za-z0-9._-]+\.sweep\.json", args[1]), args
            continue
        assert sub in ("demo", "run", "sweep", "diagnose"), args
        recipe = ROOT / opts["--recipe"][0]
        ovr, nb_params = split_params(opts.get("-p", []))
        ovr.update(split_params(opts.get("--set", []))[0])
        for key, values in parse_grid(opts.get("--grid", [])):  # the grid's first point
            ovr.update({field: values[0] for field in resolve_grid_key(key)})
        load_recipe(recipe, ovr)  # raises ConfigError naming the field
        if sub != "diagnose":
            validate_params(nb_params, _select(opts.get("--stages")))
