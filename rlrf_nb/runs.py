"""Run plumbing every notebook starts with: :func:`open_run` opens ``runs/<name>/`` for a recipe and writes the resolved
``config.yaml`` and ``run.json`` (seed, package versions, git SHA); the stages' artifacts and ``results.json`` are
:class:`rlrf_nb.store.RunStore`'s.
"""

from __future__ import annotations

from pathlib import Path

from rlrf_nb.config import load_recipe, recipe_to_dict
from rlrf_nb.llm_judge import redact_url
from rlrf_nb.paths import resolve_path
from rlrf_nb.store import RunStore


def open_run(recipe_path: str | Path, run_name: str, overrides: dict | None = None):
    """``(recipe, store)``: the recipe loaded with ``run.name`` set (and ``overrides``), and ``runs/<name>/`` opened
    with its config, seed, versions and git SHA recorded."""
    recipe = load_recipe(resolve_path(recipe_path), {"run.name": run_name, **(overrides or {})})
    store = RunStore(resolve_path(recipe.run.runs_dir) / recipe.run.name)
    config = recipe_to_dict(recipe)
    config["feedback"]["judge_url"] = redact_url(config["feedback"]["judge_url"])  # no credentials in a file
    store.write_metadata(config, recipe.run.seed)
    return recipe, store
