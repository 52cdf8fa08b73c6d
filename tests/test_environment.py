"""environment.yml must mirror pyproject.toml: same packages, same pins, torch first."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# name, optional [extras], then the version specifier (PEP 508 without markers, all we use)
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*")


def _parse(requirement: str) -> tuple[str, str, str]:
    """``'transformers[serving]==5.23.0'`` → ``('transformers', '[serving]', '==5.23.0')``, name per PEP 503."""
    m = _REQUIREMENT.fullmatch(requirement)
    assert m, f"cannot parse requirement {requirement!r}"
    name, extras, spec = m.groups()
    return re.sub(r"[-_.]+", "-", name).lower(), extras or "", spec.replace(" ", "")


def _pyproject_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def _environment() -> tuple[list, list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    deps = env["dependencies"]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, f"environment.yml: expected one 'pip:' section, found {len(pip_sections)}"
    return deps, pip_sections[0]


def _by_name(requirements: list[str]) -> dict[str, tuple[str, str]]:
    parsed = [_parse(r) for r in requirements]
    names = [name for name, _, _ in parsed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"listed more than once: {dupes}"
    return {name: (extras, spec) for name, extras, spec in parsed}


def test_environment_header():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert env["name"] == "rlrf_nb"
    assert env["channels"] == ["conda-forge"]
    deps, pip = _environment()
    assert "python=3.11" in deps, f"environment.yml: expected 'python=3.11' in dependencies, got {deps}"
    assert "pip" in deps, "environment.yml: 'pip' must be a conda dependency when there is a pip: section"
    assert pip[-1] == "-e .", f"environment.yml: the last pip entry must be '-e .', got {pip[-1]!r}"


def test_torch_first_and_pinned():
    _, pip = _environment()
    assert _parse(pip[0]) == ("torch", "", "==2.13.0"), f"first pip entry must be torch==2.13.0, got {pip[0]!r}"
    assert _by_name(_pyproject_requirements())["torch"] == ("", "==2.13.0")


def test_same_packages_as_pyproject():
    _, pip = _environment()
    want = _by_name(_pyproject_requirements())
    have = _by_name([p for p in pip if p != "-e ."])
    only_pyproject = sorted(want.keys() - have.keys())
    only_env = sorted(have.keys() - want.keys())
    assert not only_pyproject and not only_env, (
        f"package sets differ: only in pyproject.toml {only_pyproject}, only in environment.yml {only_env}"
    )


def test_same_pins_as_pyproject():
    _, pip = _environment()
    want = _by_name(_pyproject_requirements())
    have = _by_name([p for p in pip if p != "-e ."])
    differ = {name: {"pyproject.toml": want[name], "environment.yml": have[name]}
              for name in sorted(want.keys() & have.keys()) if want[name] != have[name]}
    assert not differ, f"pins or extras differ: {differ}"


def test_installed_torch_is_the_pinned_cpu_build():
    """Only torch==2.13.0 is installed as torch, and no CUDA wheels came along with it."""
    import importlib.metadata as md

    import torch

    assert torch.__version__.startswith("2.13.0"), torch.__version__
    nvidia = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].lower().startswith("nvidia"))
    assert not nvidia, f"CUDA wheels installed: {nvidia}"


def test_network_is_blocked_in_tests():
    import socket

    import pytest

    with pytest.raises(OSError, match="may not reach the network"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
