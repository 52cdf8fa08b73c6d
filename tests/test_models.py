"""M0: tokenizer and chat template, a tiny pre-training run that learns, save/load as a Hub model would."""

import math as pymath

import pytest
import torch

from rlrf_nb import generation, models
from rlrf_nb.config import M0Config, WorldConfig
from rlrf_nb.prompts import chat
from rlrf_nb.tasks.world import build_world, training_mix

WORLD = WorldConfig(math_test=20, math_dev=10, math_rl=10, math_train=200, n_people=200, docs_per_person=1)
TINY = M0Config(retrain=True, vocab_size=400, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2,
                n_math=150, n_math_refine=30, n_bio_refine=10, web_epochs=1, bio_sft_epochs=1, batch_size=16,
                epochs=2.0, learning_rate=5e-3, warmup_steps=2, logging_steps=2, max_seconds=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    world = build_world(WORLD)
    items = training_mix(world, TINY, 0)
    tok = models.build_tokenizer([it.get("text") or it["messages"][-1]["content"] for it in items], TINY.vocab_size)
    model = models.build_model(tok, TINY)
    before = [p.detach().clone() for p in model.parameters()]
    summary = models.pretrain(model, tok, items, TINY, tmp_path_factory.mktemp("trainer"))
    path = models.save_policy(model, tok, tmp_path_factory.mktemp("m0") / "m0", summary)
    return world, tok, model, before, summary, path


def test_tokenizer_round_trips_and_splits_digits():
    tok = models.build_tokenizer(["Ava has 48 apples.\n#### 24"] * 20, 300)
    text = "Ava has 48 apples.\nShe gives 24=<<48/2=24>>24 away.\n#### 24"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert [t for t in tok.convert_ids_to_tokens(tok("1234", add_special_tokens=False)["input_ids"])] == \
        ["1", "2", "3", "4"]


def test_chat_template_matches_generation_prompt_and_masks_assistant():
    tok = models.build_tokenizer(["hello world"] * 5, 300)
    msgs = chat("What is 2+2?", "#### 4")
    full = tok.apply_chat_template(msgs, tokenize=False)
    prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert full.startswith(prompt) and full == prompt + "#### 4<|end|>"
    assert full.count("<|bos|>") == 1 and full.count("<|end|>") == 2
    item = models.tokenize_item({"messages": msgs}, tok, 100, prompt_loss=False)
    trained_ids = [t for t in item["labels"] if t != -100]
    assert tok.decode(trained_ids) == "#### 4<|end|>"


def test_pretraining_changes_parameters_and_lowers_loss(trained):
    _, _, model, before, summary, _ = trained
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    losses = [h["loss"] for h in summary["history"]]
    assert len(losses) >= 3 and pymath.isfinite(losses[-1])
    assert losses[-1] < losses[0] - 1.0, losses


def test_saved_policy_loads_with_auto_classes_and_generates(trained):
    world, tok, model, _, _, path = trained
    assert (path / "model.safetensors").exists() and (path / "training_log.json").exists()
    m2, t2 = models.load_policy(path)
    assert t2.chat_template == tok.chat_template and len(t2) == len(tok)
    for a, b in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    convs = [chat(e.prompt) for e in world.math["dev"][:5]]
    out1 = generation.generate(m2, t2, convs, max_new_tokens=20, batch_size=5, progress=False)
    out2 = generation.generate(m2, t2, convs[:1], max_new_tokens=20, batch_size=1, progress=False)
    assert len(out1) == 5 and all(len(o) == 1 for o in out1)
    assert out1[0] == out2[0]  # left padding in a batch does not change greedy output


def test_load_policy_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        models.load_policy(tmp_path / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="'data/no/m0' is not a directory, and not a Hub id"):
        models.load_policy("data/no/m0")


def test_generation_without_chat_template_is_a_clear_error(trained):
    _, tok, model, _, _, _ = trained
    tmpl = tok.chat_template
    tok.chat_template = None
    try:
        with pytest.raises(ValueError, match="no chat template"):
            generation.generate(model, tok, [chat("hi")], max_new_tokens=2, progress=False)
    finally:
        tok.chat_template = tmpl


def test_refinement_items_never_train_on_their_flawed_draft():
    """Training on the prompt of a refinement example would teach M0 to write the injected errors."""
    import random

    from rlrf_nb.tasks.world import math_refinement_example

    world = build_world(WORLD)
    tok = models.build_tokenizer(world.web_docs[:50] + [e.reference for e in world.math["train"]], 400)
    item = math_refinement_example(random.Random(1), world.math["train"][0])
    enc = models.tokenize_item(item, tok, 1000, prompt_loss=True)
    trained = tok.decode([t for t in enc["labels"] if t != -100])
    assert trained == item["messages"][1]["content"] + "<|end|>"
    plain = models.tokenize_item({"messages": item["messages"]}, tok, 1000, prompt_loss=True)
    assert all(t != -100 for t in plain["labels"])  # ordinary chat items do train on the prompt
