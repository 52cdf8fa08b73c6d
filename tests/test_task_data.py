"""Which examples each stage reads (rlrf_nb.task_data): in a real recipe GSM8K splits are kept apart (shots from
train, the benchmark from test, per-round evaluation from a held-out slice of train) and the tiny world is never
read (issue 15, items 6 and 7)."""

from pathlib import Path

import pytest
from stand_in import write_gsm8k

from rlrf_nb import task_data
from rlrf_nb.config import ConfigError, load_recipe

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def files(tmp_path):
    return write_gsm8k(tmp_path / "gsm8k", n_train=40, n_test=10)


def _recipe(train, test, **more):
    return load_recipe(ROOT / "recipes/tiny-smoke.yaml", {
        "reflection.prompt_source": str(train), "reflection.n_prompts": 6, "reflection.n_bios": 0,
        "eval.gsm8k_source": str(test), "eval.gsm8k_train_source": str(train), "eval.gsm8k_k": 2,
        "feedback.n_math": 5, "feedback.n_bios": 0, "rounds.prompts_per_round": 6, "rounds.n_rounds": 2,
        "rounds.eval_n_math": 8, "rounds.eval_n_bios": 0, **more})


def test_a_local_gsm8k_file_is_the_test_set_and_the_shots_come_from_the_train_file(files):
    """Item 6: a local GSM8K file was both train and test, so the 8 shots were drawn from the test questions."""
    train, test = files
    recipe = _recipe(train, test)
    tests = task_data.gsm8k_test(recipe, None, 10)
    shots = task_data.gsm8k_exemplars(recipe, None)
    assert [e.id for e in tests] == [f"gsm8k-test-{i:05d}" for i in range(10)]
    assert all(e.id.startswith("gsm8k-train-") for e in shots) and len(shots) == 40
    assert not {e.prompt for e in shots} & {e.prompt for e in tests}
    # a local test file without a train file for the shots is an error naming the field, before any run
    with pytest.raises(ConfigError, match="eval.gsm8k_train_source is needed: eval.gsm8k_source .* is a local file"):
        load_recipe(ROOT / "recipes/tiny-smoke.yaml", {"eval.gsm8k_source": str(test), "eval.gsm8k_k": 8})
    load_recipe(ROOT / "recipes/tiny-smoke.yaml", {"eval.gsm8k_source": str(test), "eval.gsm8k_k": 0})  # zero-shot


def test_a_hub_dataset_gives_its_train_split_for_the_shots():
    recipe = load_recipe(ROOT / "recipes/tiny-smoke.yaml", {"eval.gsm8k_source": "openai/gsm8k", "eval.gsm8k_k": 8})
    assert task_data.exemplar_source(recipe) == "openai/gsm8k" and task_data.is_real(recipe)
    assert task_data.load_world(recipe) is None


def test_real_recipe_dev_slice_is_the_tail_of_train_disjoint_from_search_and_shots(files):
    """Item 7: intermediate evaluation used the tiny world's dev problems whatever the recipe said."""
    train, test = files
    recipe = _recipe(train, test)
    assert task_data.is_real(recipe) and task_data.load_world(recipe) is None
    dev = task_data.dev_math(recipe, None, 8)
    assert [e.id for e in dev] == [f"gsm8k-train-{i:05d}" for i in range(32, 40)]  # the last max(5, 8) rows
    search = task_data.search_examples(recipe, None) + task_data.search_examples(
        recipe, None, n_math=6, offset_math=6)  # notebook 02 / round 1, then round 2
    shots = task_data.gsm8k_exemplars(recipe, None)[:2]
    assert not {e.id for e in dev} & {e.id for e in search + shots}
    assert task_data.dev_bios(recipe, None, 4) == [] and task_data.test_bios(recipe, None, 4) == []
    with pytest.raises(ValueError, match="bio prompts are the tiny world's"):
        task_data.search_examples(recipe, None, n_bios=1)
    crowded = _recipe(train, test, **{"rounds.n_rounds": 6})  # 36 search rows + an 8-row tail > 40
    with pytest.raises(ValueError, match="held-out dev slice .* would overlap the 36 rows"):
        task_data.dev_math(crowded, None, 8)


def test_evaluate_policy_of_a_real_recipe_reads_its_dev_slice(files, tmp_path):
    """The rounds' and notebook 03's evaluation (rounds.evaluate_policy) grades the recipe's own held-out problems
    by their final answer; no tiny-world problem (they carry step data) is evaluated."""
    from rlrf_nb.models import load_policy, model_fingerprint
    from rlrf_nb.rounds import evaluate_policy
    from rlrf_nb.store import RunStore

    train, test = files
    recipe = _recipe(train, test, **{"rounds.eval_n_math": 3, "feedback.n_math": 3, "eval.max_new_tokens": 8})
    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    store = RunStore(tmp_path / "run")
    out = evaluate_policy(model, tok, model_fingerprint(ROOT / "data/tiny_world/m0"), recipe, None, store, "M0")
    assert out["math_accuracy"]["n"] == 3 and "bio_precision" not in out
    ids = [r["id"] for r in store.artifact("eval/M0/math_dev").records()]
    assert ids == [f"gsm8k-train-{i:05d}" for i in range(37, 40)]
