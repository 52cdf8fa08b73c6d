"""Tests for rlrf_nb.config: recipe loading, validation errors, overrides, round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from rlrf_nb.config import (
    SECTIONS,
    ConfigError,
    Recipe,
    RunConfig,
    load_recipe,
    parse_override,
    recipe_to_dict,
)


def dump_recipe(recipe: Recipe, path) -> None:
    """Write ``recipe`` as a YAML recipe that ``load_recipe`` reads back equal (moved here from rlrf_nb.config
    unchanged: only this test used it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True), encoding="utf-8")


@dataclass
class DemoConfig:
    """A section with every supported field type, registered per test via monkeypatch."""

    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    flag: bool = field(default=False, metadata={"help": "a switch"})
    limit: int | None = field(default=None, metadata={"help": "optional cap"})
    tags: list[str] = field(default_factory=list, metadata={"help": "tags"})
    weights: list[float] = field(default_factory=lambda: [1.0], metadata={"help": "weights"})
    extra: dict = field(default_factory=dict, metadata={"help": "free-form"})


@pytest.fixture
def demo_section(monkeypatch):
    monkeypatch.setitem(SECTIONS, "demo", DemoConfig)


def write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_recipe_reads_values(tmp_path):
    path = write(tmp_path, "run: {name: demo, seed: 7, runs_dir: out}\n")
    recipe = load_recipe(path)
    assert recipe.run == RunConfig(name="demo", seed=7, runs_dir="out")


def test_missing_section_and_empty_file_get_defaults(tmp_path):
    assert load_recipe(write(tmp_path, "run: {seed: 1}\n")).run.name == "tiny"
    assert load_recipe(write(tmp_path, "", "empty.yaml")) == Recipe()
    assert Recipe().run == RunConfig()


@pytest.mark.bad_input("recipe unknown key: file")
def test_unknown_key_names_file_dotted_key_and_suggestion(tmp_path):
    path = write(tmp_path, "run: {sed: 3}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert str(path) in msg
    assert "unknown key 'run.sed'" in msg
    assert "did you mean 'seed'?" in msg


def test_unknown_section_names_file_and_suggestion(tmp_path):
    path = write(tmp_path, "runn: {seed: 3}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: unknown section 'runn' \(did you mean 'run'\?\)"):
        load_recipe(path)


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("run: {seed: abc}", "field 'run.seed' expects int, got str ('abc')"),
        ("run: {seed: true}", "field 'run.seed' expects int, got bool (True)"),
        ("run: {seed: 1.5}", "field 'run.seed' expects int, got float (1.5)"),
        ("run: {name: [a]}", "field 'run.name' expects str, got list (['a'])"),
        ("run: [1, 2]", "section 'run' must be a mapping, got list"),
    ],
)
@pytest.mark.bad_input("recipe bad type: test_config cases")
def test_bad_type_names_file_and_field(tmp_path, yaml_text, expected):
    path = write(tmp_path, yaml_text + "\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    assert str(e.value) == f"{path}: {expected}"


def test_out_of_range_names_file_and_field(tmp_path):
    path = write(tmp_path, "run: {seed: -1}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    assert str(e.value) == f"{path}: run.seed must be >= 0, got -1"
    with pytest.raises(ConfigError, match=r"run\.name must match"):
        load_recipe(write(tmp_path, "run: {name: 'a b'}\n"))


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError, match=r"^run\.seed must be >= 0, got -2$"):
        RunConfig(seed=-2)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "run:\n  seed: 1\n  name: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    assert str(e.value).startswith(f"{path}:")
    assert "invalid YAML" in str(e.value)


def test_non_mapping_top_level_names_file(tmp_path):
    path = write(tmp_path, "- run\n- world\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: expected a mapping of sections at the top level, got list"):
        load_recipe(path)


def test_overrides_dotted_and_string_parsed(tmp_path):
    path = write(tmp_path, "run: {name: demo, seed: 0}\n")
    assert load_recipe(path, {"run.seed": 3}).run.seed == 3
    key, value = parse_override("run.seed=5")
    assert (key, value) == ("run.seed", "5")
    recipe = load_recipe(path, {key: value})
    assert recipe.run.seed == 5
    # A str field keeps the text as typed: "007" is not turned into the int 7.
    assert load_recipe(path, dict([parse_override("run.name=007")])).run.name == "007"
    # Overrides also fill a section the file does not have.
    assert load_recipe(write(tmp_path, "", "e.yaml"), {"run.seed": "2"}).run.seed == 2


def test_parse_override_splits_on_first_equals_and_rejects_no_equals():
    assert parse_override("run.runs_dir=a=b") == ("run.runs_dir", "a=b")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("run.seed")


@pytest.mark.bad_input("recipe unknown key: override")
def test_unknown_override_names_the_override(tmp_path):
    path = write(tmp_path, "run: {seed: 0}\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(path, {"run.sed": 3})
    msg = str(e.value)
    assert str(path) in msg and "override 'run.sed'" in msg and "did you mean 'seed'?" in msg
    with pytest.raises(ConfigError, match="override 'rn.seed': unknown section 'rn'"):
        load_recipe(path, {"rn.seed": 3})


def test_bad_override_value_is_reported(tmp_path):
    path = write(tmp_path, "run: {seed: 0}\n")
    with pytest.raises(ConfigError, match=r"with overrides run\.seed\): field 'run\.seed' expects int"):
        load_recipe(path, {"run.seed": "abc"})
    with pytest.raises(ConfigError, match=r"run\.seed must be >= 0, got -4"):
        load_recipe(path, {"run.seed": "-4"})


def test_round_trip_dict_and_yaml(tmp_path):
    recipe = load_recipe(write(tmp_path, "run: {name: rt, seed: 11}\n"))
    d = recipe_to_dict(recipe)
    assert set(d) == set(SECTIONS)
    assert d["run"] == {"name": "rt", "seed": 11, "runs_dir": "runs", "device": "auto", "dtype": "auto"}
    assert Recipe.from_dict(d) == recipe
    out = tmp_path / "sub" / "dumped.yaml"
    dump_recipe(recipe, out)
    assert load_recipe(out) == recipe


def test_from_dict_uses_same_validation_with_source():
    with pytest.raises(ConfigError, match=r"^<dict>: unknown key 'run\.seeds' \(did you mean 'seed'\?\)$"):
        Recipe.from_dict({"run": {"seeds": 1}})
    with pytest.raises(ConfigError, match=r"^cli: run\.seed must be >= 0"):
        Recipe.from_dict({"run": {"seed": -1}}, source="cli")


def test_new_section_appears_from_sections_with_types_checked(tmp_path, demo_section):
    assert Recipe().demo == DemoConfig()  # one SECTIONS line is all a new stage needs
    recipe = load_recipe(write(tmp_path, "demo: {lr: 1, flag: true, limit: 5, tags: [a], weights: [1, 0.5]}\n"))
    assert recipe.demo.lr == 1.0 and isinstance(recipe.demo.lr, float)  # int accepted for float
    assert recipe.demo.weights == [1.0, 0.5] and isinstance(recipe.demo.weights[0], float)
    assert (recipe.demo.flag, recipe.demo.limit, recipe.demo.tags) == (True, 5, ["a"])
    assert load_recipe(write(tmp_path, "demo: {limit: null}\n", "n.yaml")).demo.limit is None
    assert load_recipe(write(tmp_path, "", "e.yaml"), {"demo.tags": "[x, y]"}).demo.tags == ["x", "y"]
    assert Recipe.from_dict(recipe_to_dict(recipe)) == recipe


@pytest.mark.parametrize(
    "yaml_text, expected",
    [
        ("demo: {lr: true}", "field 'demo.lr' expects float, got bool (True)"),
        ("demo: {lr: '0.1'}", "field 'demo.lr' expects float, got str ('0.1')"),
        ("demo: {flag: 1}", "field 'demo.flag' expects bool, got int (1)"),
        ("demo: {limit: x}", "field 'demo.limit' expects int | None, got str ('x')"),
        ("demo: {tags: a}", "field 'demo.tags' expects list[str], got str ('a')"),
        ("demo: {weights: [1, b]}", "field 'demo.weights[1]' expects float, got str ('b')"),
        ("demo: {extra: [1]}", "field 'demo.extra' expects dict, got list ([1])"),
    ],
)
def test_every_annotation_kind_is_type_checked(tmp_path, demo_section, yaml_text, expected):
    path = write(tmp_path, yaml_text + "\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(path)
    assert str(e.value) == f"{path}: {expected}"


def test_scientific_notation_is_a_float_in_files_and_overrides(tmp_path):
    """PyYAML reads `1e-3` as a string (YAML 1.1); float fields accept it, other text is still an error."""
    p = tmp_path / "r.yaml"
    p.write_text("dpo:\n  learning_rate: 1e-3\n")
    assert load_recipe(p).dpo.learning_rate == 1e-3
    assert load_recipe(p, {"dpo.learning_rate": "5E-6"}).dpo.learning_rate == 5e-6
    with pytest.raises(ConfigError, match="'dpo.beta' expects float, got str"):
        load_recipe(p, {"dpo.beta": "e-3"})


@pytest.mark.parametrize("name", ["tiny.yaml", "tiny-smoke.yaml", "real-example.yaml"])
def test_shipped_recipes_load(name):
    from pathlib import Path

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / name)
    assert recipe.reflection.n_samples + recipe.reflection.top_k * recipe.reflection.m_refinements >= 7


def test_non_utf8_recipe_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"run:\n  name: ok\n  seed: 1 # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: not valid UTF-8 \(byte 0xe9\)"):
        load_recipe(p)
