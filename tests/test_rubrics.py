"""Tests for rlrf_nb.rubrics: the shipped rubric set, validation errors, versioning, task aspects."""

import shutil

import pytest
import yaml

from rlrf_nb.paths import PROJECT_ROOT
from rlrf_nb.rubrics import (
    TASK_ASPECTS,
    RubricError,
    RubricSet,
    aspects_for_tags,
    load_rubric,
    load_rubric_set,
)

SHIPPED = PROJECT_ROOT / "data" / "rubrics"
TITLES = {
    "logical_correctness": "logical correctness",
    "factuality": "factuality",
    "completeness": "completeness",
    "readability": "readability",
    "harmlessness": "harmlessness",
    "insightfulness": "insightfulness",
    "helpfulness": "helpfulness",
    "clarity": "clarity",
    "depth": "depth",
    "engagement": "engagement",
    "safety": "safety",
}


@pytest.fixture
def rubric_dir(tmp_path):
    """A writable copy of the shipped rubrics."""
    return shutil.copytree(SHIPPED, tmp_path / "rubrics")


def _good() -> dict:
    return yaml.safe_load((SHIPPED / "completeness.yaml").read_text())


def test_shipped_set_is_complete_and_valid():
    rs = load_rubric_set()
    assert set(TITLES) <= set(rs.names())
    for name, title in TITLES.items():
        r = rs[name]
        assert r.title == title
        assert (r.min_score, r.max_score) == (1, 5)
        assert sorted(r.levels) == [1, 2, 3, 4, 5]
        assert all(len(d) > 40 for d in r.levels.values()), name
        assert len(set(r.levels.values())) == 5, f"{name}: levels must differ"
        assert r.definition and r.critique_must and r.source
        assert rs.by_title(title) is r


def test_critique_requirements_point_to_specifics():
    rs = load_rubric_set()
    assert "first wrong step" in rs["logical_correctness"].critique_must
    assert "correct value" in rs["logical_correctness"].critique_must
    assert "unsupported or contradicted claim" in rs["factuality"].critique_must
    assert "true value" in rs["factuality"].critique_must
    assert "missing" in rs["completeness"].critique_must


def test_task_aspects_exist_in_shipped_set():
    names = set(load_rubric_set().names())
    assert {a for aspects in TASK_ASPECTS.values() for a in aspects} <= names


def test_relative_default_resolves_from_another_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_rubric_set().version == load_rubric_set(SHIPPED).version


def test_version_stable_and_content_sensitive(rubric_dir):
    v = load_rubric_set(SHIPPED).version
    assert len(v) == 12 and int(v, 16) >= 0
    assert load_rubric_set(SHIPPED).version == v
    assert load_rubric_set(rubric_dir).version == v

    path = rubric_dir / "factuality.yaml"
    data = yaml.safe_load(path.read_text())
    data["levels"][3] += " Edited."
    path.write_text(yaml.safe_dump(data))
    assert load_rubric_set(rubric_dir).version != v


def test_version_ignores_reformatting(rubric_dir):
    v = load_rubric_set(rubric_dir).version
    for path in rubric_dir.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        # different field order, line width and scalar style; same content
        path.write_text(yaml.safe_dump(data, sort_keys=True, width=50, default_style='"'))
    assert load_rubric_set(rubric_dir).version == v


def test_subset_has_its_own_version():
    rs = load_rubric_set()
    sub = rs.subset(["logical_correctness", "completeness"])
    assert sub.names() == ["completeness", "logical_correctness"]
    assert sub.version != rs.version
    assert sub.version == rs.subset(["completeness", "logical_correctness"]).version
    assert RubricSet(dict(rs.rubrics)).version == rs.version


def test_unknown_aspect_suggests_close_name():
    rs = load_rubric_set()
    with pytest.raises(KeyError, match="did you mean 'logical_correctness'.*available: clarity"):
        rs["logical_corectness"]
    with pytest.raises(KeyError, match="did you mean 'logical correctness'"):
        rs.by_title("logical corectness")


def test_render_contains_every_level():
    r = load_rubric_set()["logical_correctness"]
    text = r.render()
    assert text.startswith("Aspect: logical correctness\n")
    assert r.definition in text
    for k, descriptor in r.levels.items():
        assert f"{k}: {descriptor}" in text
    assert f"The critique must: {r.critique_must}" in text


def test_table_has_one_row_per_aspect():
    rs = load_rubric_set()
    df = rs.table()
    assert list(df.index) == rs.names()
    assert list(df.columns) == ["title", "source", "scale", "definition", "critique_must"]
    assert df.loc["safety", "scale"] == "1-5"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("definition"), "missing field 'definition'"),
        (lambda d: d["levels"].pop(3), "field 'levels' has no descriptor for level 3"),
        (lambda d: d["levels"].update({6: "extra"}), "field 'levels' has key 6"),
        (lambda d: d["levels"].update({3: "  "}), "field 'levels.3' must be a non-empty string"),
        (lambda d: d.update(scale={"min": 1, "max": 1}), r"field 'scale.max' must be an int > scale.min"),
        (lambda d: d.update(scale={"min": 1, "max": "5"}), r"field 'scale.max' must be an int > scale.min"),
        (lambda d: d.update(scale={"min": 1.5, "max": 5}), r"field 'scale.min' must be an int"),
        (lambda d: d.update(name="foo"), "field 'name' is 'foo' but the file is named 'completeness.yaml'"),
        (lambda d: d.update(descriptoin="typo"), "unknown field 'descriptoin'"),
        (lambda d: d.update(title=""), "field 'title' must be a non-empty string"),
    ],
)
@pytest.mark.bad_input("invalid rubric (a missing level included)")
def test_invalid_rubric_names_file_and_field(tmp_path, edit, message):
    data = _good()
    edit(data)
    path = tmp_path / "completeness.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RubricError, match=message) as err:
        load_rubric(path)
    assert str(err.value).startswith(f"{path}: ")


def test_yaml_syntax_error_names_file(tmp_path):
    path = tmp_path / "clarity.yaml"
    path.write_text("name: clarity\nlevels:\n  1: [unclosed\n")
    with pytest.raises(RubricError, match=r"clarity\.yaml: YAML syntax error at line \d+"):
        load_rubric(path)


def test_set_rejects_duplicate_titles_and_empty_dir(rubric_dir, tmp_path):
    path = rubric_dir / "depth.yaml"
    data = yaml.safe_load(path.read_text())
    data["title"] = "clarity"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RubricError, match=r"depth\.yaml: field 'title' 'clarity' is also used by clarity\.yaml"):
        load_rubric_set(rubric_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RubricError, match="no \\*.yaml rubric files"):
        load_rubric_set(tmp_path / "empty")


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["math"], ["logical_correctness", "completeness"]),
        (["bios"], ["factuality", "completeness", "readability"]),
        (["math", "bios"], ["logical_correctness", "completeness", "factuality", "readability"]),
        (["general", "safety"], ["helpfulness", "clarity", "factuality", "depth", "engagement", "safety"]),
        (["unknown", "safety"], ["safety"]),
        (["unknown"], None),
        ([], None),
    ],
)
def test_aspects_for_tags(tags, expected):
    assert aspects_for_tags(tags) == expected
