"""Batched generation with ``transformers``: chat-templated, length-bucketed, with the KV cache.

Works for any ``AutoModelForCausalLM`` whose tokenizer has a chat template. On a GPU a :class:`VLLMPolicy`
(``load_vllm``) can stand in for the model anywhere a policy samples: vLLM is imported only when one is loaded, and the
process keeps one engine (:class:`VLLMEngine`), asleep while TRL trains (:func:`release_vllm`).
:class:`SamplingProcesses` runs whole batches in worker processes. How :func:`generate` is fast is in
docs/performance.md, "How the fast paths work".

Why one module of this size (issue 17): the sampler, the batch cutting, the KV layout and the decode loop share one
invariant, that a row's sample never depends on its batch, its engine or its process, and a reader checks that invariant
in one place. The ``getattr`` calls below read the configs of arbitrary transformers models (which fields exist depends
on the family), never the kit's own types.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import itertools
import logging
import multiprocessing
import os
import socket
from pathlib import Path

import psutil
import torch
from tqdm.auto import tqdm

from rlrf_nb.prompts import chat
from rlrf_nb.store import content_key

log = logging.getLogger(__name__)

#: Share of the free memory a batch may plan to use (KV cache + activations, estimated).
MEMORY_FRACTION = 0.5


def render_prompts(tokenizer, conversations: list[list[dict]]) -> list[str]:
    if not tokenizer.chat_template:
        raise ValueError(f"tokenizer of '{tokenizer.name_or_path}' has no chat template; set one "
                         "(tokenizer.chat_template = ...) or use a chat/instruct model")
    return [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]


# ---------------------------------------------------------------------------------------------------------------
# Sampling: one random stream per output row
# ---------------------------------------------------------------------------------------------------------------


def _mix(*parts) -> int:
    """A stable 63-bit seed from ``parts`` (independent of Python's hash randomisation)."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def row_seeds(n_inputs: int, num_return_sequences: int, seed: int | None = None,
              seeds: list[int] | None = None) -> list[int]:
    """The seed of each output row, input-major (row ``i * num_return_sequences + r``). From ``seeds`` (one per
    input) if given, else from ``seed`` and the input index; with neither, from torch's global generator (so
    ``torch.manual_seed`` still makes a call reproducible)."""
    if seeds is not None:
        if len(seeds) != n_inputs:
            raise ValueError(f"seeds needs one seed per conversation ({n_inputs}), got {len(seeds)}")
        base = [_mix("row", s) for s in seeds]
    else:
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        base = [_mix("input", seed, i) for i in range(n_inputs)]
    return [_mix(b, r) for b in base for r in range(num_return_sequences)]


def _warpers(temperature: float, top_p: float, generation_config=None):
    """transformers' own warpers for the sampling parameters (temperature, then top-k / min-p from the model's
    generation config, then top-p), in the order ``model.generate`` applies them."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    out = LogitsProcessorList()
    if temperature is not None and temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    top_k = getattr(generation_config, "top_k", None)
    if top_k:
        out.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        out.append(TopPLogitsWarper(top_p))
    min_p = getattr(generation_config, "min_p", None)
    if min_p:
        out.append(MinPLogitsWarper(min_p))
    return out


class RowSampler:
    """Samples each row's next token by inverse CDF of the warped distribution at that row's own uniforms, drawn up
    front from a ``torch.Generator`` seeded with ``seeds[row]``: exactly multinomial sampling as in ``model.generate``
    (greedy without ``do_sample``).
    """

    def __init__(self, seeds: list[int] | None, max_new_tokens: int, *, do_sample: bool, temperature: float = 1.0,
                 top_p: float = 1.0, generation_config=None, device=None):
        self.do_sample = do_sample
        self.warpers = _warpers(temperature, top_p, generation_config) if do_sample else None
        self.uniforms = None if not do_sample else torch.stack([
            torch.rand(max_new_tokens, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds
        ]).to(device)

    def pick(self, logits: torch.Tensor, rows: torch.Tensor | None, step: int) -> torch.Tensor:
        """Next token for each row of ``logits`` ([batch, vocab]); ``rows`` maps them to sampler rows."""
        if not self.do_sample:
            return logits.argmax(dim=-1)
        scores = self.warpers(None, logits.float())
        cdf = torch.softmax(scores, dim=-1, dtype=torch.float64).cumsum(dim=-1)
        u = self.uniforms[:, step] if rows is None else self.uniforms[rows, step]
        x = (u * cdf[:, -1]).unsqueeze(-1)
        return torch.searchsorted(cdf, x, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


# ---------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------


def free_memory(device) -> int:
    """Bytes free for tensors on ``device``: the accelerator's free memory, or the system's available memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(psutil.virtual_memory().available)  # Linux: /proc/meminfo's MemAvailable


def bytes_per_row(model, prompt_len: int, max_new_tokens: int) -> int:
    """Estimated peak bytes one sequence needs while generating: its KV cache at full length plus the prefill's
    activations and one row of logits."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    layers = getattr(cfg, "num_hidden_layers", 1)
    hidden = getattr(cfg, "hidden_size", 1024)
    heads = getattr(cfg, "num_attention_heads", 1)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // max(1, heads)
    width = next(model.parameters()).element_size()
    total = prompt_len + max_new_tokens
    kv = 2 * layers * kv_heads * head_dim * total * width
    acts = prompt_len * (4 * hidden + 2 * getattr(cfg, "intermediate_size", 4 * hidden)) * width
    acts += heads * prompt_len * prompt_len * width  # attention scores of the prefill (eager worst case)
    return kv + acts + 2 * getattr(cfg, "vocab_size", 32000) * 4


def check_batch_memory(model, prompt_len: int, max_new_tokens: int, rows: int,
                       fraction: float = MEMORY_FRACTION) -> None:
    """Warn when ``rows`` sequences are estimated to need more than ``fraction`` of the free memory. It never changes
    the batch: free memory depends on what else the machine runs, and a batch whose size followed it would make a
    run's outputs depend on the load (issue 15, E). Lower ``batch_size`` in the recipe instead."""
    free = free_memory(next(model.parameters()).device)
    need = rows * bytes_per_row(model, prompt_len, max_new_tokens)
    if need > free * fraction:
        log.warning("generate: a batch of %d sequences (prompts up to %d tokens + %d new) needs about %.1f GiB, more "
                    "than %.0f%% of the %.1f GiB free; lower batch_size if it runs out of memory (an out-of-memory "
                    "batch is halved and retried)", rows, prompt_len, max_new_tokens, need / 2**30, 100 * fraction,
                    free / 2**30)


# ---------------------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------------------

_UNSUPPORTED = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
                "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "suppress_tokens": None,
                "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                "sequence_bias": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
                "min_new_tokens": None, "exponential_decay_length_penalty": None, "renormalize_logits": False,
                "guidance_scale": None, "watermarking_config": None}


def fast_engine_ok(model) -> bool:
    """The lean decode loop applies: a decoder-only transformers model whose generation config asks for no
    logits processor beyond temperature / top-k / top-p / min-p (else ``model.generate`` runs, same sampler)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False) or not hasattr(model, "generate"):
        return False
    gc = getattr(model, "generation_config", None)
    for name, neutral in _UNSUPPORTED.items():
        value = getattr(gc, name, None)
        if value is not None and value != neutral and not (neutral is None and not value):
            return False
    return True


def _eos_ids(model, tokenizer) -> list[int]:
    ids = tokenizer.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    gc_ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [gc_ids] if isinstance(gc_ids, int) else list(gc_ids or [])
    return sorted(set(ids))


def _left_pad(prompts: list[list[int]], pad_id: int, device):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[b, width - len(p):] = 1
    return ids.to(device), mask.to(device)


#: Model families whose attention :class:`_BlockKV` computes as their own does: they call transformers' attention
#: interface with (query, key, value) after RoPE and pass ``**kwargs`` through, and their full-attention layers
#: have no soft-capping, sinks or sliding window. Other models keep transformers' cache and attention.
BLOCK_KV_MODELS = ("llama", "qwen2", "qwen3", "mistral")

#: Families whose decoder layer is exactly Llama's (pre-norm attention with RoPE, then pre-norm MLP): their decode
#: steps run :meth:`_BlockKV._lean_forward`.
LEAN_MODELS = ("llama", "qwen2", "mistral")

#: The keys/values of a decode batch grow in blocks of this many positions (one copy per block, not per token).
KV_BLOCK = 32

#: Finished rows are dropped from the batch once they are at least this share of it (a compaction copies the
#: cache, so doing it at every EOS costs more than computing a few finished rows).
COMPACT_FRACTION = 0.125


def _block_kv_ok(model) -> bool:
    """The decode steps can use :class:`_BlockKV`: a transformers model of a family in :data:`BLOCK_KV_MODELS`
    whose cache is plain full-attention layers (no sliding window)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if not type(model).__module__.startswith("transformers.models."):
        return False  # remote code may attend in its own way
    if getattr(model.config, "model_type", None) not in BLOCK_KV_MODELS:
        return False
    layers = getattr(DynamicCache(config=model.config), "layers", None)
    return isinstance(layers, list) and bool(layers) and all(type(x) is DynamicLayer for x in layers)


def _blocks(n: int) -> int:
    return -(-n // KV_BLOCK) * KV_BLOCK


class _BlockKV:
    """Keys and values of the decode loop, and its attention (docs/performance.md, issue 21).

    Per layer, keys (values alike) are one contiguous ``[rows, kv_heads, width, head_dim]`` tensor: the prompt's
    prefill copied to each of its rows, then one column per generated token, written in place; the width grows by
    :data:`KV_BLOCK` and attention reads the whole tensor under an additive mask. Growing and dropping finished rows
    copy into a spare buffer allocated once per batch (fresh allocations page-fault, which cost a third of the time)."""

    NAME = "rlrf_block_kv"

    def __init__(self, cache, pad_mask: torch.Tensor, prompt_of_row: torch.Tensor, max_new_tokens: int):
        keys, values = [x.keys for x in cache.layers], [x.values for x in cache.layers]
        _, self.hkv, prompt_len, self.d = keys[0].shape
        self.rows, self.length = len(prompt_of_row), prompt_len
        self.width = _blocks(prompt_len + 1)
        wmax = _blocks(prompt_len + max_new_tokens)
        size = self.rows * self.hkv * wmax * self.d
        # [current, spare] flat buffers per layer, for keys and for values
        self.k = [[k.new_empty(size), k.new_empty(size)] for k in keys]
        self.v = [[v.new_empty(size), v.new_empty(size)] for v in values]
        for bufs, prefill in ((self.k, keys), (self.v, values)):
            for pair, x in zip(bufs, prefill):
                cur = self._view(pair[0], self.rows, self.width)
                torch.index_select(x, 0, prompt_of_row, out=cur[:, :, :prompt_len])
                cur[:, :, prompt_len:].zero_()  # unfilled columns must be finite: masked scores still multiply V
        self.mask = [torch.full((self.rows, wmax), -float("inf"), dtype=torch.float32, device=pad_mask.device)
                     for _ in range(2)]
        self.mask[0][:, :prompt_len].masked_fill_(pad_mask[prompt_of_row].bool(), 0.0)
        self.calls = 0  # attention calls in the current step: one per layer, else the model bypassed us

    def _view(self, flat: torch.Tensor, rows: int, width: int) -> torch.Tensor:
        return flat[:rows * self.hkv * width * self.d].view(rows, self.hkv, width, self.d)

    def _rewrite(self, fill):
        """Write every buffer's next contents into its spare (``fill(current view, spare flat)``) and swap."""
        for bufs in (self.k, self.v):
            for pair in bufs:
                fill(self._view(pair[0], self.rows, self.width), pair[1])
                pair.reverse()

    def select(self, keep: torch.Tensor):
        """Keep only rows ``keep`` (the decode loop drops finished rows)."""
        n = len(keep)
        self._rewrite(lambda cur, spare: torch.index_select(cur, 0, keep, out=self._view(spare, n, self.width)))
        torch.index_select(self.mask[0], 0, keep, out=self.mask[1][:n])
        self.mask.reverse()
        self.rows = n

    def _grow(self):
        width = self.width + KV_BLOCK

        def fill(cur, spare):
            new = self._view(spare, self.rows, width)
            new[:, :, :self.width].copy_(cur)
            new[:, :, self.width:].zero_()

        self._rewrite(fill)
        self.width = width

    @contextlib.contextmanager
    def attention(self, model):
        """Route the model's attention through :meth:`attend` for the decode steps; its own setting is restored."""
        from transformers import AttentionInterface

        AttentionInterface.register(self.NAME, _block_kv_attention)
        current = model.config._attn_implementation
        model.set_attn_implementation(self.NAME)
        try:
            yield
        finally:
            model.set_attn_implementation(current)

    def step(self, model, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Logits of every row's next token after feeding ``tok`` at positions ``pos``."""
        if self.length == self.width:
            self._grow()
        self.mask[0][:self.rows, self.length] = 0.0
        self.calls = 0
        if getattr(model.config, "model_type", None) in LEAN_MODELS:
            logits = self._lean_forward(model, tok, pos)
        else:
            logits = model(input_ids=tok.unsqueeze(-1), position_ids=pos.unsqueeze(-1), use_cache=False,
                           block_kv=self).logits[:, -1]
        if self.calls != len(self.k):
            raise RuntimeError(f"{type(model).__name__} ran the block-KV attention {self.calls} times for "
                               f"{len(self.k)} layers; use engine='hf' for this model")
        self.length += 1
        return logits

    def _lean_forward(self, model, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """A decode step through the model's own modules in its forward's order, without the per-call plumbing
        (module hooks, mask building, output classes): the same kernels on the same tensors, so the same logits
        bit for bit (``tests/test_perf.py``), about 7% faster at the bench's 160 rows (docs/performance.md)."""
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        inner, r = model.model, tok.shape[0]
        x = inner.embed_tokens(tok[:, None])
        cos, sin = inner.rotary_emb(x, pos[:, None])
        for i, layer in enumerate(inner.layers):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q, k, v = (proj(h).view(r, 1, -1, a.head_dim).transpose(1, 2) for proj in (a.q_proj, a.k_proj, a.v_proj))
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            x = x + a.o_proj(self.attend(i, q, k, v, a.scaling)[0].reshape(r, 1, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return model.lm_head(inner.norm(x))[:, -1]

    def attend(self, layer: int, query, key, value, scaling: float):
        """One layer's attention for one new token per row: query ``[R, H, 1, D]``, key/value ``[R, Hkv, 1, D]``
        (RoPE applied) are written at column ``length``; returns ``[R, 1, H, D]``."""
        self.calls += 1
        r, h, _, d = query.shape
        keys = self._view(self.k[layer][0], r, self.width)
        values = self._view(self.v[layer][0], r, self.width)
        keys[:, :, self.length] = key[:, :, 0]
        values[:, :, self.length] = value[:, :, 0]
        q = (query * scaling).view(r, self.hkv, h // self.hkv, d)
        scores = torch.matmul(q, keys.transpose(-1, -2))  # [R, Hkv, rep, width]
        scores += self.mask[0][:r, None, None, :self.width]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
        return torch.matmul(probs, values).view(r, 1, h, d), None


def _block_kv_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The attention function registered with transformers for the decode steps (:meth:`_BlockKV.attend`)."""
    for name in ("sliding_window", "softcap", "s_aux"):
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"the lean decode loop does not support {name}; use engine='hf'")
    return kwargs["block_kv"].attend(module.layer_idx, query, key, value,
                                     module.scaling if scaling is None else scaling)


class _TransformersKV:
    """The decode loop's state for other models: transformers' ``DynamicCache`` (each prompt's rows copied to its
    output rows) and a 2D padding mask, with the model's own attention."""

    def __init__(self, cache, pad_mask: torch.Tensor, prompt_of_row: torch.Tensor):
        cache.batch_select_indices(prompt_of_row)
        self.cache, self.valid = cache, pad_mask[prompt_of_row].long()

    def select(self, keep: torch.Tensor):
        self.cache.batch_select_indices(keep)
        self.valid = self.valid[keep]

    @contextlib.contextmanager
    def attention(self, model):
        yield

    def step(self, model, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        self.valid = torch.cat([self.valid, self.valid.new_ones((self.valid.shape[0], 1))], dim=1)
        return model(input_ids=tok.unsqueeze(-1), attention_mask=self.valid, position_ids=pos.unsqueeze(-1),
                     past_key_values=self.cache, use_cache=True).logits[:, -1]


def _decode_fast(model, prompts: list[list[int]], rows: list[list[int]], sampler: RowSampler, max_new_tokens: int,
                 eos: list[int], pad_id: int) -> dict[int, list[int]]:
    """One batch with the lean loop: ``prompts[j]`` is prefilled once (the model's own forward and attention) and
    continued by its ``rows[j]`` (global row ids). Returns each row's generated token ids (EOS included if
    reached)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    ids, pad_mask = _left_pad(prompts, pad_id, device)
    pos = (pad_mask.cumsum(-1) - 1).clamp_(min=0)
    cache = DynamicCache(config=model.config)
    kw = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    logits = model(input_ids=ids, attention_mask=pad_mask, position_ids=pos, past_key_values=cache, use_cache=True,
                   **kw).logits[:, -1]
    src = torch.repeat_interleave(torch.arange(len(prompts), device=device),
                                  torch.tensor([len(r) for r in rows], device=device))
    kv = (_BlockKV(cache, pad_mask, src, max_new_tokens) if _block_kv_ok(model)
          else _TransformersKV(cache, pad_mask, src))
    del cache
    with kv.attention(model):
        return _decode_steps(model, rows, sampler, max_new_tokens, eos, pad_id, kv, logits[src],
                             pad_mask.sum(-1)[src])


def _decode_steps(model, rows, sampler, max_new_tokens, eos, pad_id, kv, logits, next_pos):
    """The decode loop after the prefill: sample a token per row and step; rows that reached EOS leave the batch
    once they are :data:`COMPACT_FRACTION` of it."""
    device = logits.device
    flat = [r for rs in rows for r in rs]
    n_rows = len(flat)
    active = torch.tensor(flat, device=device)  # batch row -> sampler row
    where = torch.arange(n_rows, device=device)  # batch row -> row of ``out``
    alive = torch.ones(n_rows, dtype=torch.bool, device=device)
    eos_t = torch.tensor(eos, device=device)
    buf = torch.full((n_rows, max_new_tokens), pad_id, dtype=torch.long, device=device)  # per batch row
    out = torch.empty_like(buf)  # per row of the batch as it started; filled as rows leave
    length = torch.full((n_rows,), max_new_tokens, dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        tok = sampler.pick(logits, active, step)
        buf[:, step] = tok
        done = alive & torch.isin(tok, eos_t)
        if step == max_new_tokens - 1:
            break
        if bool(done.any()):
            length[where[done]] = step + 1
            alive &= ~done
            n_alive = int(alive.sum())
            if n_alive == 0:
                break
            if len(alive) - n_alive >= max(1, COMPACT_FRACTION * len(alive)):
                gone = (~alive).nonzero().squeeze(-1)
                out[where[gone]] = buf[gone]
                keep = alive.nonzero().squeeze(-1)
                kv.select(keep)
                tok, next_pos, active, where, alive = tok[keep], next_pos[keep], active[keep], where[keep], alive[keep]
                buf = buf[keep]
        logits = kv.step(model, tok, next_pos)
        next_pos = next_pos + 1
    out[where] = buf
    out, length = out.tolist(), length.tolist()
    return {r: out[b][:length[b]] for b, r in enumerate(flat)}


def _decode_hf(model, prompts: list[list[int]], rows: list[list[int]], sampler: RowSampler, max_new_tokens: int,
               eos: list[int], pad_id: int) -> dict[int, list[int]]:
    """One batch through ``model.generate``, a row per output row: greedy over scores that are 0 at the sampler's
    token and -inf elsewhere."""
    from transformers.generation.logits_process import LogitsProcessorList

    device = next(model.parameters()).device
    flat = [r for rs in rows for r in rs]
    ids, mask = _left_pad([p for p, rs in zip(prompts, rows) for _ in rs], pad_id, device)
    active = torch.tensor(flat, device=device)  # batch row -> sampler row

    def one_hot(input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        tok = sampler.pick(scores, active, input_ids.shape[1] - ids.shape[1])
        return torch.full_like(scores, -float("inf")).scatter_(1, tok.unsqueeze(-1), 0.0)

    gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         logits_processor=LogitsProcessorList([one_hot]), pad_token_id=pad_id,
                         eos_token_id=eos, temperature=None, top_p=None, top_k=None)
    gen = gen[:, ids.shape[1]:].tolist()
    return {r: g[:next((k + 1 for k, t in enumerate(g) if t in eos), len(g))] for r, g in zip(flat, gen)}


def _batches(items: list[tuple[int, list[int]]], cap: int) -> list[list[tuple[int, list[int]]]]:
    """Cut ``(prompt, rows)`` items, in order, into batches of at most ``cap`` rows; a prompt with more rows than
    ``cap`` is split across batches (each part is prefilled on its own)."""
    batches, cur, n = [], [], 0
    for j, rows in items:
        for s in range(0, len(rows), cap):
            chunk = rows[s:s + cap]
            if n + len(chunk) > cap and cur:
                batches.append(cur)
                cur, n = [], 0
            cur.append((j, chunk))
            n += len(chunk)
    if cur:
        batches.append(cur)
    return batches


@torch.inference_mode()
def generate_ids(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 128,
                 batch_size: int = 64, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 num_return_sequences: int = 1, seed: int | None = None, seeds: list[int] | None = None,
                 bucket: bool = True, engine: str = "auto", max_batch_rows: int | None = None,
                 progress: bool = False) -> list[list[list[int]]]:
    """The generated token ids (EOS included where reached) of :func:`generate`, per conversation and return
    sequence; the arguments are :func:`generate`'s."""
    if engine not in ("auto", "fast", "hf"):
        raise ValueError(f"unknown engine {engine!r}; choose auto, fast or hf")
    if not conversations:
        return []
    nrs = num_return_sequences
    texts = render_prompts(tokenizer, conversations)
    distinct: dict[str, list[int]] = {}  # identical prompts share one prefill
    for i, text in enumerate(texts):
        distinct.setdefault(text, []).extend(range(i * nrs, (i + 1) * nrs))
    rows_of = list(distinct.values())
    prompts = tokenizer(list(distinct), add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda j: len(prompts[j])) if bucket else list(range(len(prompts)))
    device = next(model.parameters()).device
    sampler = RowSampler(row_seeds(len(texts), nrs, seed, seeds) if do_sample else None, max_new_tokens,
                         do_sample=do_sample, temperature=temperature, top_p=top_p,
                         generation_config=getattr(model, "generation_config", None), device=device)
    decode = _decode_fast if engine == "fast" or (engine == "auto" and fast_engine_ok(model)) else _decode_hf
    eos = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    cap = max_batch_rows or max(1, batch_size) * nrs  # from the arguments only, never from the free memory
    check_batch_memory(model, max(len(p) for p in prompts), max_new_tokens, cap)
    todo = _batches([(j, rows_of[j]) for j in order], cap)
    out: dict[int, list[int]] = {}
    bar = tqdm(total=len(texts) * nrs, desc="generate", disable=not progress)
    while todo:
        batch = todo.pop(0)
        try:
            got = decode(model, [prompts[j] for j, _ in batch], [rs for _, rs in batch], sampler, max_new_tokens,
                         eos, pad_id)
        except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError; other allocators say so in words
            n = sum(len(rs) for _, rs in batch)
            if not (isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()) or n <= 1:
                raise
            del err
            cap = max(1, n // 2)
            log.warning("generate: out of memory on a batch of %d sequences; retrying that batch (and running the "
                        "rest) with batch size %d", n, cap)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            todo = _batches(batch, cap) + [b for rest in todo for b in _batches(rest, cap)]
            continue
        out.update(got)
        bar.update(len(got))
    bar.close()
    return [[out[i * nrs + r] for r in range(nrs)] for i in range(len(texts))]


def generate(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 128,
             batch_size: int = 64, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             num_return_sequences: int = 1, seed: int | None = None, progress: bool = True,
             seeds: list[int] | None = None, bucket: bool = True, engine: str = "auto",
             max_batch_rows: int | None = None) -> list[list[str]]:
    """Responses for each conversation (``num_return_sequences`` each), decoded without special tokens.

    ``batch_size`` conversations (times ``num_return_sequences`` rows; ``max_batch_rows`` caps the rows instead) make
    a batch whatever memory is free, so outputs do not depend on the machine's load; an out-of-memory error halves
    that batch and retries only it. ``bucket`` sorts the distinct prompts by token length first (less padding); results
    come back in input order. Sampling uses one random stream per output row, from ``seed`` and the conversation's
    index, or from ``seeds`` (one per conversation, e.g. the record's content key): samples do not depend on batching,
    bucketing, retries or the engine. ``engine``: ``fast`` (the lean KV-cache loop), ``hf`` (``model.generate`` with
    the same sampler) or ``auto`` (fast unless the model's generation config asks for other logits processors).
    ``model`` may be a :class:`VLLMPolicy`: ``tokenizer`` is unused, vLLM batches by itself, and it seeds a request,
    not a row (one seed is derived from all ``seeds``), so there a row's sample depends on its whole call. See
    docs/performance.md.
    """
    if isinstance(model, VLLMPolicy):
        if seed is None and seeds is not None:  # vLLM seeds a request, not a row: derive one from the rows'
            seed = _mix("vllm", *seeds) % 2**31
        return model.generate(conversations, max_new_tokens=max_new_tokens, do_sample=do_sample,
                              temperature=temperature, top_p=top_p, num_return_sequences=num_return_sequences,
                              seed=seed)
    ids = generate_ids(model, tokenizer, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       do_sample=do_sample, temperature=temperature, top_p=top_p,
                       num_return_sequences=num_return_sequences, seed=seed, seeds=seeds, bucket=bucket,
                       engine=engine, max_batch_rows=max_batch_rows, progress=progress)
    flat = tokenizer.batch_decode([g for gs in ids for g in gs], skip_special_tokens=True)
    nrs = num_return_sequences
    return [flat[i * nrs:(i + 1) * nrs] for i in range(len(ids))]


# ---------------------------------------------------------------------------------------------------------------
# vLLM: one engine per process, asleep while TRL trains
# ---------------------------------------------------------------------------------------------------------------

#: Share of the GPU's memory the vLLM engine takes while awake (weights + KV cache). It leaves room for a policy
#: that notebook 02 or a round holds on the same GPU for evaluation; while TRL trains the engine sleeps and holds
#: (almost) nothing.
VLLM_GPU_MEMORY_UTILIZATION = 0.5


def checkpoint_tensors(path: str):
    """``(name, tensor)`` of every weight in a checkpoint's ``*.safetensors`` (a local directory, or a Hub id's
    snapshot in the local cache), the names as ``save_pretrained`` wrote them: what vLLM's ``load_weights`` takes."""
    from safetensors import safe_open

    from rlrf_nb.models import hub_revision, is_hub_id

    directory = hub_revision(path)[1] if is_hub_id(path) else Path(path)
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():
                yield name, fh.get_tensor(name)


class VLLMEngine:
    """The process's one ``vllm.LLM`` (``enable_sleep_mode=True``), serving one checkpoint at a time.

    TRL trains in the same process on the same GPU, so the engine sleeps (level 2: weights and KV cache freed) while
    it does, as in TRL's colocated vLLM; :meth:`serve` wakes the weights alone first, loads the checkpoint in place,
    then wakes the KV cache (vLLM's advice for weight updates: a lower peak).
    """

    def __init__(self, llm, path: str):
        self.llm, self.path, self.asleep = llm, str(path), False
        self.loads = 0  # checkpoints loaded in place after the first (a test reads it)

    def _model(self):
        # the in-process worker's model (TRL's colocate mode reaches it the same way; distributed_executor_backend
        # "external_launcher" keeps the worker in this process)
        return self.llm.llm_engine.model_executor.driver_worker.model_runner.model

    def serve(self, path: str) -> None:
        """Make the engine serve ``path``, loading its weights in place when they are not the ones it holds."""
        path = str(path)
        if path == self.path and not self.asleep:
            return
        if not self.asleep:
            self.llm.sleep(level=2)  # drop the old weights and KV cache first: one model's memory at a time
        self.llm.wake_up(tags=["weights"])
        self._model().load_weights(checkpoint_tensors(path))
        self.llm.wake_up(tags=["kv_cache"])
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        self.path, self.asleep = path, False
        self.loads += 1

    def sleep(self) -> None:
        """Free the engine's GPU memory (weights and KV cache) until :meth:`serve` is called again."""
        if not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True


_ENGINE: VLLMEngine | None = None


def vllm_engine(path: str, dtype=None) -> VLLMEngine:
    """The process's engine, serving ``path``: built on the first call (``vllm.LLM`` with sleep mode on), and on
    later calls the same engine, switched to ``path`` (:meth:`VLLMEngine.serve`)."""
    global _ENGINE
    if _ENGINE is None:
        try:
            from vllm import LLM
        except ImportError:
            raise ImportError("reflection.backend='vllm' needs vLLM, which is not installed: `pip install vllm` on "
                              "a CUDA machine, or use backend='transformers'") from None
        with socket.socket() as sock:  # a free port for the one-rank process group
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        # one process, one rank: the in-process executor TRL's colocate mode uses needs these set
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                           ("MASTER_PORT", str(port))):
            os.environ.setdefault(key, value)
        kw = {"dtype": str(dtype).removeprefix("torch.")} if dtype is not None else {}
        llm = LLM(model=str(path), enable_sleep_mode=True, gpu_memory_utilization=VLLM_GPU_MEMORY_UTILIZATION,
                  distributed_executor_backend="external_launcher", seed=0, **kw)
        _ENGINE = VLLMEngine(llm, str(path))
    else:
        _ENGINE.serve(path)
    return _ENGINE


def release_vllm() -> None:
    """Put the process's vLLM engine to sleep, if there is one: call before TRL trains on the same GPU."""
    if _ENGINE is not None:
        _ENGINE.sleep()


class VLLMPolicy:
    """A checkpoint served by the process's vLLM engine for fast sampling (GPU). Same chat template, same decode
    parameters. Each call makes the engine serve this policy's checkpoint first (:meth:`VLLMEngine.serve`)."""

    def __init__(self, engine: VLLMEngine, path: str):
        self.engine, self.path = engine, str(path)

    def generate(self, conversations, *, max_new_tokens, do_sample, temperature, top_p, num_return_sequences,
                 seed) -> list[list[str]]:
        from vllm import SamplingParams

        self.engine.serve(self.path)
        params = SamplingParams(n=num_return_sequences, max_tokens=max_new_tokens,
                                temperature=temperature if do_sample else 0.0, top_p=top_p if do_sample else 1.0,
                                seed=seed)
        outs = self.engine.llm.chat(conversations, params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outs]


def load_vllm(path: str, dtype=None) -> VLLMPolicy:
    """A :class:`VLLMPolicy` for the checkpoint or Hub id ``path``, on the process's one engine."""
    return VLLMPolicy(vllm_engine(str(path), dtype), str(path))


def load_sampler(backend: str, model, path: str | None = None, dtype=None):
    """The sampler for ``backend``: ``model`` itself for transformers, a :class:`VLLMPolicy` of ``path`` for vllm."""
    if backend == "transformers":
        return model
    if backend == "vllm":
        if path is None:
            raise ValueError("backend='vllm' needs the policy's checkpoint path or Hub id")
        return load_vllm(path, dtype)
    raise ValueError(f"unknown sampling backend {backend!r}; choose transformers or vllm")


def load_searcher(backend: str, path: str, place=None):
    """``(sampler, tokenizer)`` of the checkpoint ``path`` for a round's search: the transformers model on
    ``place``, or (vllm) the process's vLLM engine serving it and the tokenizer alone (no second copy of the
    weights on the GPU)."""
    from transformers import AutoTokenizer

    from rlrf_nb.models import load_policy

    if backend == "transformers":
        return load_policy(path, place=place)
    sampler = load_sampler(backend, None, path, place.dtype if place is not None else None)  # vllm, or an error
    return sampler, AutoTokenizer.from_pretrained(path)


def _init_worker(model, tokenizer) -> None:
    torch.set_num_threads(1)
    global _WORKER_POLICY
    _WORKER_POLICY = (model, tokenizer)


def _worker_run(fn, job: tuple[list, dict]):
    conversations, kwargs = job
    model, tokenizer = _WORKER_POLICY
    return fn(model, tokenizer, conversations, **kwargs)


class SamplingProcesses:
    """Processes that each hold a copy of the policy and run :func:`generate` on whole batches, one thread each (on a
    CPU a second process beats a second thread; a batch's outputs do not depend on the process count). Use as a
    context manager; ``imap`` keeps batch order."""

    def __init__(self, model, tokenizer, processes: int):
        self.model, self.tokenizer, self.processes = model, tokenizer, processes
        self.pool = None  # started by the first batch to compute: a rerun that finds every record starts none

    def imap(self, jobs: list[tuple[list, dict]], fn=None):
        """``fn(model, tokenizer, conversations, **kwargs)`` (:func:`generate` by default, or another module-level
        function such as :func:`generate_ids`) for each ``(conversations, kwargs)`` job, in order."""
        if not jobs:
            return iter(())
        if self.pool is None:
            # fork (as torch's DataLoader workers): a worker inherits the loaded policy, and does not re-run the
            # caller's script as spawn does (a script without a __main__ guard would start its search again);
            # the worker sets one thread before its first op, so the parent's OpenMP pool is never used there
            self.pool = multiprocessing.get_context("fork").Pool(self.processes, initializer=_init_worker,
                                                                 initargs=(self.model, self.tokenizer))
        return self.pool.imap(functools.partial(_worker_run, fn or generate), jobs)

    def __enter__(self) -> SamplingProcesses:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate() if exc[0] is not None else self.pool.close()
            self.pool.join()


def sampling_processes(model, tokenizer, processes: int):
    """A :class:`SamplingProcesses` for ``processes`` > 1 (``transformers`` models on the CPU only: a GPU is one
    device, and CUDA does not survive a fork), else a null context."""
    if (processes <= 1 or not isinstance(model, torch.nn.Module)
            or any(p.device.type != "cpu" for p in itertools.islice(model.parameters(), 1))):
        return contextlib.nullcontext(None)
    return SamplingProcesses(model, tokenizer, processes)


def store_imap(model, tokenizer, job, workers: SamplingProcesses | None = None):
    """An ``imap`` for :meth:`rlrf_nb.store.RunStore.map_batches`: ``job(batch)`` gives a batch's ``(conversations,
    generate kwargs)``, which :func:`generate` runs here or, with ``workers`` (:func:`sampling_processes`), in those
    processes with the same outputs; the store's ``fn(batch, outputs)`` then makes the batch's records. A lone batch
    runs here, on the caller's threads: one worker would leave the other core idle and start a pool for nothing."""
    def imap(fn, batches):
        jobs = [job(b) for b in batches]
        outs = (workers.imap(jobs) if workers is not None and len(jobs) > 1
                else (generate(model, tokenizer, convs, **kw) for convs, kw in jobs))
        return (fn(b, o) for b, o in zip(batches, outs))
    return imap


def generate_to_store(store, name: str, model, tokenizer, fingerprint: str, items: list[dict], *, n: int,
                      temperature: float, top_p: float, max_new_tokens: int, seed: int, batch_size: int = 32,
                      policy_id: str = "M0", tag: str = "s", workers: SamplingProcesses | None = None,
                      on_batch=None) -> list[dict]:
    """``n`` sampled responses per item (``{"id", "prompt"}``) into artifact ``name``, one record each
    (``response_id`` = ``<id>/<tag><i>``, ``source_id``, ``policy``, ``decode``, ``text``); returns the records.

    Records are keyed by model fingerprint, prompt, decode params and sample index, so a rerun generates nothing twice,
    and each record's random stream is seeded by its key, so a resumed run recomputes exactly what an uninterrupted one
    has. One :func:`generate` call takes ``batch_size`` prompts. With ``workers`` (:func:`sampling_processes`) batches
    run in those processes, later ones while earlier ones are stored; ``on_batch(records)`` is called with each newly
    computed batch's records (the search judges them meanwhile)."""
    decode = {"do_sample": True, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
              "seed": seed}
    todo = [(it, i) for it in items for i in range(n)]

    def key(pair):
        return content_key({"model": fingerprint, "prompt": pair[0]["prompt"], "decode": decode, "index": pair[1]})

    def job(batch):
        return [chat(it["prompt"]) for it, _ in batch], {
            "batch_size": len(batch), "do_sample": True, "temperature": temperature, "top_p": top_p,
            "max_new_tokens": max_new_tokens, "seeds": [int(key(pair), 16) for pair in batch], "progress": False}

    def records(batch, outs):
        recs = [{"response_id": f"{it['id']}/{tag}{i}", "source_id": it["id"], "policy": policy_id,
                 "decode": decode, "text": o[0]} for (it, i), o in zip(batch, outs)]
        if on_batch is not None:
            on_batch(recs)
        return recs

    return store.map_batches(name, todo, key, records, batch_size=max(1, batch_size) * n,
                             desc=f"{name} ({policy_id})", imap=store_imap(model, tokenizer, job, workers))


def sample_to_store(store, name: str, model, tokenizer, fingerprint: str, examples: list, **kw) -> list[dict]:
    """``n`` samples per example (``samples.jsonl``): :func:`generate_to_store` (which takes ``kw``: ``n``,
    ``temperature``, ``seed`` ...) over the examples' prompts, each record with its ``example_id``."""
    items = [{"id": ex.id, "prompt": ex.prompt} for ex in examples]
    recs = generate_to_store(store, name, model, tokenizer, fingerprint, items, **kw)
    return [{**r, "example_id": r["source_id"]} for r in recs]
