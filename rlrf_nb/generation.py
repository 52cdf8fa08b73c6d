"""Batched generation with ``transformers``: chat-templated, left-padded, with the KV cache.

Works for any ``AutoModelForCausalLM`` whose tokenizer has a chat template. On a GPU machine, a
:class:`VLLMPolicy` (``load_vllm``) can stand in for the model anywhere a policy samples: vLLM is imported
only when one is loaded.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def render_prompts(tokenizer, conversations: list[list[dict]]) -> list[str]:
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer of '{tokenizer.name_or_path}' has no chat template; set one "
                         "(tokenizer.chat_template = ...) or use a chat/instruct model")
    return [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]


@torch.inference_mode()
def generate(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 128,
             batch_size: int = 64, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             num_return_sequences: int = 1, seed: int | None = None, progress: bool = True) -> list[list[str]]:
    """Responses for each conversation (``num_return_sequences`` each), decoded without special tokens.

    Prompts are sorted by length before batching so padding is small; results come back in input order.
    ``model`` may be a :class:`VLLMPolicy` (then ``tokenizer`` is unused and vLLM batches by itself).
    """
    if isinstance(model, VLLMPolicy):
        return model.generate(conversations, max_new_tokens=max_new_tokens, do_sample=do_sample,
                              temperature=temperature, top_p=top_p, num_return_sequences=num_return_sequences,
                              seed=seed)
    texts = render_prompts(tokenizer, conversations)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if seed is not None:
        torch.manual_seed(seed)
    out: list[list[str] | None] = [None] * len(texts)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                 temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                                 num_return_sequences=num_return_sequences, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            gen = gen[:, enc["input_ids"].shape[1]:]
            decoded = tokenizer.batch_decode(gen, skip_special_tokens=True)
            for j, i in enumerate(idx):
                out[i] = decoded[j * num_return_sequences:(j + 1) * num_return_sequences]
    finally:
        tokenizer.padding_side = old_side
    return out


class VLLMPolicy:
    """A policy served by vLLM for fast sampling (GPU). Same chat template, same decode parameters."""

    def __init__(self, llm, path: str):
        self.llm, self.path = llm, path

    def generate(self, conversations, *, max_new_tokens, do_sample, temperature, top_p, num_return_sequences,
                 seed) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=num_return_sequences, max_tokens=max_new_tokens,
                                temperature=temperature if do_sample else 0.0, top_p=top_p if do_sample else 1.0,
                                seed=seed)
        outs = self.llm.chat(conversations, params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outs]


def load_vllm(path: str, **llm_kwargs) -> VLLMPolicy:
    """A :class:`VLLMPolicy` for the checkpoint or Hub id ``path`` (``llm_kwargs`` go to ``vllm.LLM``)."""
    try:
        from vllm import LLM
    except ImportError:
        raise ImportError("reflection.backend='vllm' needs vLLM, which is not installed: `pip install vllm` on a "
                          "CUDA machine, or use backend='transformers'") from None
    return VLLMPolicy(LLM(model=str(path), **llm_kwargs), str(path))


def load_sampler(backend: str, model, path: str | None = None):
    """The sampler for ``backend``: ``model`` itself for transformers, a :class:`VLLMPolicy` of ``path`` for vllm."""
    if backend == "transformers":
        return model
    if backend == "vllm":
        if path is None:
            raise ValueError("backend='vllm' needs the policy's checkpoint path or Hub id")
        return load_vllm(path)
    raise ValueError(f"unknown sampling backend {backend!r}; choose transformers or vllm")


def generate_to_store(store, name: str, model, tokenizer, fingerprint: str, items: list[dict], *, n: int,
                      temperature: float, top_p: float, max_new_tokens: int, seed: int, batch_size: int = 32,
                      policy_id: str = "M0", tag: str = "s") -> list[dict]:
    """``n`` sampled responses per item (``{"id", "prompt"}``) into artifact ``name``, one record each
    (``response_id`` = ``<id>/<tag><i>``, ``source_id``, policy id, decode params, text). Records are keyed by
    model fingerprint, prompt, decode params and sample index, so a rerun generates nothing twice."""
    from rlrf_nb.prompts import chat
    from rlrf_nb.store import content_key

    decode = {"do_sample": True, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
              "seed": seed}
    todo = [(it, i) for it in items for i in range(n)]

    def key(pair):
        return content_key({"model": fingerprint, "prompt": pair[0]["prompt"], "decode": decode, "index": pair[1]})

    def run(batch):
        outs = generate(model, tokenizer, [chat(it["prompt"]) for it, _ in batch], batch_size=len(batch),
                        do_sample=True, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                        seed=int(key(batch[0]), 16) % 2**31, progress=False)  # a batch's seed follows its content
        return [{"response_id": f"{it['id']}/{tag}{i}", "source_id": it["id"], "policy": policy_id,
                 "decode": decode, "text": o[0]} for (it, i), o in zip(batch, outs)]

    return store.map_batches(name, todo, key, run, batch_size=batch_size, desc=f"{name} ({policy_id})")


def sample_to_store(store, name: str, model, tokenizer, fingerprint: str, examples: list, *, n: int,
                    temperature: float, top_p: float, max_new_tokens: int, seed: int, batch_size: int = 32,
                    policy_id: str = "M0") -> list[dict]:
    """``n`` samples per example (``samples.jsonl``): :func:`generate_to_store` over the examples' prompts."""
    recs = generate_to_store(store, name, model, tokenizer, fingerprint,
                             [{"id": ex.id, "prompt": ex.prompt} for ex in examples], n=n, temperature=temperature,
                             top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
                             policy_id=policy_id)
    return [{**r, "example_id": r["source_id"]} for r in recs]
