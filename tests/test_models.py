"""M0: tokenizer and chat template, a tiny pre-training run that learns, save/load as a Hub model would."""

import math as pymath

import pytest
import torch

from rlrf_nb import generation, models
from rlrf_nb.config import M0Config, WorldConfig
from rlrf_nb.prompts import chat
from rlrf_nb.tiny_world import build_world, training_mix

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


@pytest.mark.bad_input("missing checkpoint path: policy")
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

    from rlrf_nb.tiny_world import math_refinement_example

    world = build_world(WORLD)
    tok = models.build_tokenizer(world.web_docs[:50] + [e.reference for e in world.math["train"]], 400)
    item = math_refinement_example(random.Random(1), world.math["train"][0])
    enc = models.tokenize_item(item, tok, 1000, prompt_loss=True)
    trained = tok.decode([t for t in enc["labels"] if t != -100])
    assert trained == item["messages"][1]["content"] + "<|end|>"
    plain = models.tokenize_item({"messages": item["messages"]}, tok, 1000, prompt_loss=True)
    assert all(t != -100 for t in plain["labels"])  # ordinary chat items do train on the prompt


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """Two stand-in Hub models (tests/stand_in.py) in a Hugging Face cache layout, resolved offline."""
    from huggingface_hub import constants
    from stand_in import gsm8k_rows, save_hub_standin

    cache = tmp_path / "hub"
    corpus = [r["question"] + "\n" + r["answer"] for r in gsm8k_rows(20, seed=0)]
    save_hub_standin(cache, "Qwen/Qwen2.5-1.5B-Instruct", corpus, seed=0)
    save_hub_standin(cache, "Qwen/Qwen2.5-0.5B-Instruct", corpus, seed=0)  # same weights, another model id
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache, corpus


def test_hub_ids_get_fingerprints_from_id_revision_and_config(hub_cache):
    """Issue 15, item 5: a Hub id has no weights on disk to hash, and every Hub id got the same fingerprint
    (sha256 of nothing), so two models shared records, checkpoints and reference log-probs."""
    from stand_in import save_hub_standin

    from rlrf_nb.store import content_key

    cache, corpus = hub_cache
    big, small = models.model_fingerprint("Qwen/Qwen2.5-1.5B-Instruct"), models.model_fingerprint(
        "Qwen/Qwen2.5-0.5B-Instruct")
    assert big != small and len(big) == 16
    assert models.model_fingerprint("Qwen/Qwen2.5-1.5B-Instruct") == big  # stable
    # a store key built on each (as every sampling and evaluation record is) differs
    assert content_key({"model": big, "prompt": "p"}) != content_key({"model": small, "prompt": "p"})
    # a new revision of the same id (refs/main moves to another commit) is another model
    commit, snapshot = models.hub_revision("Qwen/Qwen2.5-1.5B-Instruct")
    assert snapshot.name == commit and len(commit) == 40
    save_hub_standin(cache, "Qwen/Qwen2.5-1.5B-Instruct", corpus, seed=1)
    assert models.hub_revision("Qwen/Qwen2.5-1.5B-Instruct")[0] != commit
    assert models.model_fingerprint("Qwen/Qwen2.5-1.5B-Instruct") != big
    with pytest.raises(FileNotFoundError, match="'Qwen/Qwen2.5-7B-Instruct' is not in the local Hugging Face cache"):
        models.model_fingerprint("Qwen/Qwen2.5-7B-Instruct")


def test_local_models_are_fingerprinted_by_their_weights(tmp_path):
    import hashlib
    import shutil

    from rlrf_nb.models import model_fingerprint
    from rlrf_nb.paths import PROJECT_ROOT

    m0 = PROJECT_ROOT / "data/tiny_world/m0"
    assert model_fingerprint is models.model_fingerprint
    assert models.model_fingerprint(m0) == hashlib.sha256((m0 / "model.safetensors").read_bytes()).hexdigest()[:16]
    copy = tmp_path / "copy"
    shutil.copytree(m0, copy)
    assert models.model_fingerprint(copy) == models.model_fingerprint(m0)  # same weights, same records
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        models.model_fingerprint(tmp_path)


def test_get_m0_by_hub_id_has_the_fingerprint_the_rounds_use(hub_cache, tmp_path):
    """Notebook 02 keys its search by get_m0's fingerprint and round 1 by model_fingerprint(M0's path): for a Hub
    id they were the id itself and sha256 of nothing, so round 1 redid notebook 02's search instead of sharing it."""
    from rlrf_nb.config import Recipe
    from rlrf_nb.store import RunStore
    from rlrf_nb.tiny_world import get_m0

    recipe = Recipe.from_dict({"m0": {"pretrained": "Qwen/Qwen2.5-0.5B-Instruct"}})
    model, tok, info = get_m0(recipe, RunStore(tmp_path / "run"))
    assert type(model).__name__ == "Qwen2ForCausalLM" and tok.eos_token == "<|im_end|>"
    assert info["fingerprint"] == models.model_fingerprint(info["path"]) == models.model_fingerprint(
        "Qwen/Qwen2.5-0.5B-Instruct")


def test_init_from_continues_a_checkpoint_and_keys_the_cache_by_its_weights(trained, tmp_path):
    """World v2's M0 is two phases: ``m0.init_from`` continues a checkpoint (its tokenizer and weights), and the
    retrain cache key follows those weights, not only their path."""
    import dataclasses

    from rlrf_nb.config import Recipe, RunConfig
    from rlrf_nb.store import RunStore
    from rlrf_nb.tiny_world import get_m0, m0_config_hash

    world, tok, _, _, _, path = trained
    phase2 = dataclasses.replace(TINY, init_from=str(path), n_math=20, n_math_refine=0, n_bio_refine=0, n_drills=0,
                                 web_epochs=0, bio_sft_epochs=0, epochs=1.0)
    recipe = Recipe(run=RunConfig(name="t", device="cpu"), world=WORLD, m0=phase2)
    model, tok2, info = get_m0(recipe, RunStore(tmp_path / "run"), world)
    assert tok2.get_vocab() == tok.get_vocab()  # the checkpoint's tokenizer, not a new one
    assert info["training"]["sequences"] == 20
    other = tmp_path / "other"
    models.save_policy(models.build_model(tok, dataclasses.replace(TINY, seed=5)), tok, other)
    assert m0_config_hash(WORLD, phase2) != m0_config_hash(WORLD, dataclasses.replace(phase2, init_from=str(other)))
    assert m0_config_hash(WORLD, phase2) != m0_config_hash(WORLD, TINY)
