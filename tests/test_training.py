"""The DPO stage through TRL: it learns (parameters change, loss on a fixed pair set falls), the RS-SFT baseline
likewise, LoRA and precomputed references work, the pre-flight check catches planted faults, and the
diagnostics read log histories correctly."""

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from rlrf_nb.config import DPOStageConfig, load_recipe
from rlrf_nb.models import load_policy
from rlrf_nb.pairs import Candidate, build_pairs
from rlrf_nb.preflight import PreflightError, preflight
from rlrf_nb.tasks import math
from rlrf_nb.tiny_world import build_world
from rlrf_nb.training import (
    build_dpo_trainer,
    device_precision,
    dpo_diagnostics,
    rs_sft_rows,
    stage_config_key,
    train_dpo,
    train_rs_sft,
)

ROOT = Path(__file__).resolve().parents[1]
CFG = DPOStageConfig(learning_rate=1e-3, epochs=3, batch_size=4, logging_steps=1, loss_type=["sigmoid"],
                     warmup_ratio=0.0)


@pytest.fixture(scope="module")
def pool():
    """A fixed pool: per problem, the right solution and one with an injected wrong step."""
    world = build_world(load_recipe(ROOT / "recipes/tiny-smoke.yaml").world)
    rng = random.Random(0)
    out = []
    for ex in world.math["dev"][:12]:
        bad, _ = math.corrupt_solution(rng, ex)
        out += [Candidate(f"{ex.id}/good", ex.id, ex.prompt, ex.reference, "sample", 1.0, {}, correct=True),
                Candidate(f"{ex.id}/bad", ex.id, ex.prompt, bad, "sample", 0.25, {},
                          correct=math.is_correct(bad, ex.answer))]
    return out


def _params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def _changed(before, model):
    after = dict(model.named_parameters())
    return sum(not torch.equal(v, after[k].detach()) for k, v in before.items())


def test_device_precision_is_fp32_on_cpu():
    assert device_precision() == {"use_cpu": True, "bf16": False, "fp16": False} or torch.cuda.is_available()


def test_dpo_changes_parameters_and_lowers_the_loss_on_a_fixed_pair_set(pool, tmp_path):
    pairs = build_pairs(pool, "best_vs_worst")
    assert len(pairs) == 12
    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    before = _params(model)
    res = train_dpo(model, tok, pairs, CFG, tmp_path, eval_pairs=pairs)
    assert _changed(before, res["model"]) == len(before)  # every trainable tensor moved
    ev = res["eval"]
    assert ev["after"]["eval_loss"] < ev["before"]["eval_loss"] - 0.05
    assert ev["after"]["eval_rewards/margins"] > ev["before"]["eval_rewards/margins"]
    assert res["preflight"]["pairs"] == 12 and res["preflight"]["max_tokens"] <= CFG.max_length
    d = dpo_diagnostics(res["history"], res["eval"])
    assert d["rewards/margins"]["last"] > d["rewards/margins"]["first"] and "probe" in d["source"]


def test_step_level_pairs_are_cut_after_the_first_token_where_chosen_and_rejected_differ(pool, tmp_path):
    """``dpo.pair_cut: first_difference``: TRL tokenizes each pair, then both sides stop at the token where they
    part, so DPO contrasts the wrong step and not the right arithmetic after it (nor an end of turn)."""
    pairs = build_pairs(pool, "best_vs_worst")
    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    whole = build_dpo_trainer(model, tok, pairs, CFG, tmp_path / "a").train_dataset
    cut_cfg = dataclasses.replace(CFG, pair_cut="first_difference")
    cut = build_dpo_trainer(model, tok, pairs, cut_cfg, tmp_path / "b").train_dataset
    for w, c in zip(whole, cut):
        n = len(c["chosen_ids"])
        assert c["prompt_ids"] == w["prompt_ids"] and len(c["rejected_ids"]) == n < len(w["chosen_ids"])
        assert c["chosen_ids"] == w["chosen_ids"][:n] and c["rejected_ids"] == w["rejected_ids"][:n]
        assert c["chosen_ids"][:-1] == c["rejected_ids"][:-1] and c["chosen_ids"][-1] != c["rejected_ids"][-1]
    assert "pair_cut" not in stage_config_key(CFG)  # off: checkpoints keep the keys they had before the field
    assert stage_config_key(cut_cfg)["pair_cut"] == "first_difference"
    # shared_prefix: the tokens both sides share move into the prompt; every token stays, and no loss sees them
    moved_cfg = dataclasses.replace(CFG, pair_cut="shared_prefix")
    moved = build_dpo_trainer(model, tok, pairs, moved_cfg, tmp_path / "c").train_dataset
    for w, m in zip(whole, moved):
        assert m["prompt_ids"] + m["chosen_ids"] == w["prompt_ids"] + w["chosen_ids"]
        assert m["prompt_ids"] + m["rejected_ids"] == w["prompt_ids"] + w["rejected_ids"]
        assert len(m["prompt_ids"]) > len(w["prompt_ids"]) and m["chosen_ids"][0] != m["rejected_ids"][0]
    assert stage_config_key(moved_cfg)["pair_cut"] == "shared_prefix"


def test_dpo_learning_rate_sets_dpo_s_step_size_and_its_key_only(pool, tmp_path):
    """``dpo.dpo_learning_rate``: DPO (the DPO variants, the gold-DPO control) trains at it while RS-SFT keeps
    ``learning_rate``; a checkpoint key holds the learning rate its method trained at, so an RS-SFT key does not
    change when it is set and a DPO key equals that of the same DPO at ``learning_rate``."""
    both = dataclasses.replace(CFG, learning_rate=3e-4, dpo_learning_rate=1e-4)
    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    trainer = build_dpo_trainer(model, tok, build_pairs(pool, "best_vs_worst"), both, tmp_path / "a")
    assert trainer.args.learning_rate == 1e-4
    rs = dataclasses.replace(both, method="rs_sft")
    assert stage_config_key(rs) == stage_config_key(dataclasses.replace(rs, dpo_learning_rate=None))
    assert stage_config_key(rs)["learning_rate"] == 3e-4 and "dpo_learning_rate" not in stage_config_key(rs)
    assert stage_config_key(both) == stage_config_key(dataclasses.replace(CFG, learning_rate=1e-4))
    assert "dpo_learning_rate" not in stage_config_key(CFG)  # unset: keys as before the field
    with pytest.raises(Exception, match="dpo.dpo_learning_rate"):
        dataclasses.replace(CFG, dpo_learning_rate=2.0)


def test_rs_sft_changes_parameters_and_lowers_the_loss(pool, tmp_path):
    rows = rs_sft_rows(pool)
    assert len(rows) == 12 and all(r["candidate_id"].endswith("/good") for r in rows)
    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    before = _params(model)
    res = train_rs_sft(model, tok, rows, CFG, tmp_path, eval_rows=rows)
    assert _changed(before, res["model"]) == len(before)
    assert res["eval"]["after"]["eval_loss"] < res["eval"]["before"]["eval_loss"]


def test_lora_and_precomputed_reference(pool, tmp_path):
    pairs = build_pairs(pool, "best_vs_worst")[:4]
    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    before = _params(model)
    lora = dataclasses.replace(CFG, lora=True, lora_r=4, epochs=2, batch_size=2)
    res = train_dpo(model, tok, pairs, lora, tmp_path / "lora")
    merged = res["model"]
    assert not hasattr(merged, "peft_config")  # the adapter is merged: a plain model to save and reload
    assert set(dict(merged.named_parameters())) == set(before) and _changed(before, merged) > 0
    model, tok = load_policy(ROOT / "data/tiny_world/m0")
    res = train_dpo(model, tok, pairs, dataclasses.replace(CFG, precompute_ref=True, epochs=1), tmp_path / "pre",
                    ref_model=load_policy(ROOT / "data/tiny_world/m0")[0])
    assert res["steps"] == 1


def test_preflight_catches_a_planted_doubled_eos_and_a_planted_truncation(pool):
    _, tok = load_policy(ROOT / "data/tiny_world/m0")
    pairs = build_pairs(pool, "best_vs_worst")
    assert preflight(pairs, tok, 384)["decoded"][0]["chosen"].count("<|end|>") == 2  # user turn + answer
    doubled = [dict(p, chosen=[{"role": "assistant", "content": p["chosen"][0]["content"] + "<|end|>"}])
               for p in pairs[:1]]
    with pytest.raises(PreflightError, match="doubled EOS in chosen"):
        preflight(doubled, tok, 384)
    long_prompt = pairs[1]["prompt"][0]["content"] + " Think carefully." * 40
    truncated = [dict(pairs[1], prompt=[{"role": "user", "content": long_prompt}])]
    with pytest.raises(PreflightError, match=r"tokens > max_length=160 \(truncated final answer in chosen"):
        preflight(truncated, tok, 160)
    same = [dict(pairs[2], rejected=[{"role": "assistant", "content": pairs[2]["chosen"][0]["content"] + " x"}])]
    with pytest.raises(PreflightError, match="chosen == rejected after truncation"):
        n = len(tok.apply_chat_template(same[0]["prompt"] + same[0]["chosen"], tokenize=True)["input_ids"])
        preflight(same, tok, n - 1)


def _chatml_pairs(n=3):
    q = "Weng earns $12 an hour for babysitting. Yesterday, she did 50 minutes of babysitting. How much did she earn?"
    good, bad = "That is 12/60*50 = <<12/60*50=10>>10 dollars.\n#### 10", "She earned 12 dollars.\n#### 12"
    return build_pairs([Candidate(f"c{i}", f"p{i}", q + " " * i, t, "sample", r, {}, correct=r > 0.5)
                        for i in range(n) for t, r in ((good, 1.0), (bad, 0.0))], "best_vs_worst")


def test_preflight_accepts_chatml_pairs_whose_turn_end_is_followed_by_a_newline():
    """Qwen2.5-Instruct's template closes a turn with <|im_end|> and then a newline, so a templated completion
    ends with a newline token, not EOS (issue 15, item 1): the check reads the turn end from the template."""
    from stand_in import chatml_tokenizer, gsm8k_rows

    from rlrf_nb.preflight import tokenize_pair

    tok = chatml_tokenizer([r["question"] + "\n" + r["answer"] for r in gsm8k_rows(40, seed=0)])
    pairs = _chatml_pairs()
    assert tok.convert_ids_to_tokens(tokenize_pair(tok, pairs[0])["chosen_ids"][-1]) == "Ċ"  # not EOS
    report = preflight(pairs, tok, 512)
    assert report["pairs"] == 3 and report["end_of_turn"] == "<|im_end|>\n"
    from rlrf_nb.preflight import end_of_turn_ids

    eot = end_of_turn_ids(tok)
    assert tok.convert_ids_to_tokens(eot)[0] == "<|im_end|>" and tok.decode(eot) == "<|im_end|>\n"
    doubled = [dict(pairs[0], chosen=[{"role": "assistant", "content": pairs[0]["chosen"][0]["content"]
                                       + "<|im_end|>"}])]
    with pytest.raises(PreflightError, match=r"doubled EOS in chosen \(2 x '<\|im_end\|>'"):
        preflight(doubled, tok, 512)
    # and M0's template still ends a turn with its EOS alone
    _, m0_tok = load_policy(ROOT / "data/tiny_world/m0")
    assert end_of_turn_ids(m0_tok) == [m0_tok.eos_token_id]


def test_preflight_tokenizes_chatml_pairs_exactly_as_trl_does(tmp_path):
    """The pre-flight's tokenization of a ChatML pair is TRL's own (DPOTrainer._prepare_dataset) token for token,
    so what it checks is what DPO trains on."""
    import copy

    from stand_in import chatml_tokenizer, gsm8k_rows
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import DPOConfig, DPOTrainer

    from rlrf_nb.pairs import to_dataset
    from rlrf_nb.preflight import tokenize_pair

    tok = chatml_tokenizer([r["question"] + "\n" + r["answer"] for r in gsm8k_rows(40, seed=0)])
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    pairs = _chatml_pairs()
    args = DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", max_length=512)
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=to_dataset(pairs),
                         processing_class=tok)
    for row, pair in zip(trainer._prepare_dataset(to_dataset(pairs), tok, args, "check"), pairs):
        ours = tokenize_pair(tok, pair)
        assert [row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")] == \
            [ours[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")]


def test_no_pairs_trains_nothing_and_reports_it(tmp_path):
    """Issue 15, item 4: with a judge that never parses there are no pairs; notebook 03 then hit an IndexError on
    the pre-flight report. Now the report says so and train_cached keeps the start policy."""
    from rlrf_nb.preflight import describe_preflight
    from rlrf_nb.store import RunStore
    from rlrf_nb.training import train_cached

    _, tok = load_policy(ROOT / "data/tiny_world/m0")
    assert "no pairs to check: nothing will be trained" in describe_preflight(preflight([], tok, 384))
    out = train_cached(RunStore(tmp_path), "dpo-M1", ROOT / "data/tiny_world/m0", [], [], CFG)
    assert not out["trained"] and out["path"] == ROOT / "data/tiny_world/m0"
    assert out["info"]["method"] == "none (no pairs)"
    assert out["info"]["diagnostics"]["notes"] and not (tmp_path / "checkpoints").exists()


def test_diagnostics_explain_a_falling_chosen_log_prob():
    def row(step, margin, acc, chosen, rejected):
        return {"loss": 0.7, "rewards/margins": margin, "rewards/accuracies": acc, "logps/chosen": chosen,
                "logps/rejected": rejected, "step": step}

    hist = [row(1, 0.0, 0.5, -7.0, -12.0), row(2, 0.5, 0.7, -10.0, -20.0), row(3, 0.9, 0.9, -15.0, -30.0)]
    d = dpo_diagnostics(hist)
    text = " ".join(d["notes"])
    assert "Both log-probs fell" in text and "WARNING" in text and d["chosen_logp_change"] == -8.0
    assert "training log" in d["source"]
    healthy = dpo_diagnostics(hist[:2] + [{**hist[2], "logps/chosen": -6.0}])
    assert "healthy direction" in " ".join(healthy["notes"]) and "WARNING" not in " ".join(healthy["notes"])
    assert "no trend" in dpo_diagnostics(hist[:2])["notes"][0]
    probe = {"before": {f"eval_{k}": v for k, v in hist[0].items()},
             "after": {f"eval_{k}": v for k, v in hist[2].items()}}
    p = dpo_diagnostics([], probe)
    assert p["chosen_logp_change"] == -8.0 and "probe" in p["source"] and p["rewards/margins"]["last"] == 0.9


def test_stage_diagnostics_give_notes_for_rs_sft_too():
    """Stop 51: notebook 03 with ``dpo.method: rs_sft`` crashed reading ``diagnostics["notes"]`` (None for RS-SFT).
    Every method now has notes: DPO's reading, or RS-SFT's training loss."""
    from rlrf_nb.training import stage_diagnostics

    hist = [{"loss": 0.9, "step": 1}, {"loss": 0.4, "step": 2}, {"train_runtime": 1.0, "step": 2}]
    d = stage_diagnostics({"method": "rs_sft", "history": hist, "steps": 2})
    assert "rs_sft" in d["notes"][0] and "0.900 -> 0.400 over 2 steps" in d["notes"][0]
    assert "no training loss" in stage_diagnostics({"method": "rs_sft", "history": [], "steps": 0})["notes"][0]
    dpo = [{"loss": 0.7, "rewards/margins": m, "rewards/accuracies": 0.5, "logps/chosen": -7.0,
            "logps/rejected": -9.0, "step": i} for i, m in enumerate((0.0, 0.5, 0.9), 1)]
    assert stage_diagnostics({"method": "dpo", "history": dpo}) == dpo_diagnostics(dpo)
