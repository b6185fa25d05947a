"""Batched sampling with plain `transformers.generate`: no vLLM.

Prompts are sorted by length and packed into batches under a token budget (prompt + new tokens, all sequences), left
padded, and each prompt is encoded once and sampled `n` times: `prefill_once` runs the prompts' forward pass itself and
hands `generate` the key/value cache repeated for the n candidates (`num_return_sequences` would repeat the prompts
before the forward pass, encoding each n times; docs/prefix_sharing.md). Each candidate draws its
tokens with its own noise, keyed by (seed, prompt key, candidate index) (`sampling.py`), so a candidate does not depend
on the batch plan: resume, another process count or an out-of-memory split give the same candidates (up to float
rounding). The sampling settings are the caller's (the recipe's) alone: the model's `generation_config` cannot add
its own temperature, top-k / top-p or penalties (`sampling.NEUTRAL`). Out of memory halves the batch and retries; no
prompt is lost.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from functools import partial

import torch
from torch.nn.functional import pad
from tqdm.auto import tqdm

from .sampling import row_key, seeded_sampling

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (end-of-turn token) or "length" (max_new_tokens reached)
    # Whether the text ended with a line break before `text` was stripped: a cut that falls right after one leaves
    # its last turn finished.
    ends_line: bool = False


def stop_token_ids(model, tokenizer) -> list[int]:
    """End-of-turn ids: the generation config's eos ids, the tokenizer's eos, and a chat end marker if it has one."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if configured is not None:
        ids.update([configured] if isinstance(configured, int) else configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return sorted(ids)


def decode_sample(tokenizer, tokens: list[int], stop_ids: list[int]) -> Sample:
    """Generated ids up to the first end-of-turn id (or padding after it) as a Sample with its finish reason."""
    stop_at = next((i for i, token in enumerate(tokens) if token in stop_ids), None)
    kept = tokens if stop_at is None else tokens[:stop_at]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    finish_reason = "length" if stop_at is None else "stop"
    ends_line = text.rstrip(" \t").endswith("\n")
    return Sample(text=text.strip(), num_tokens=len(kept), finish_reason=finish_reason, ends_line=ends_line)


def plan_batches(lengths: list[int], max_new_tokens: int, n: int, batch_tokens: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, each within `batch_tokens` once padded and sampled n times."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = max([lengths[i] for i in current] + [lengths[index]]) + max_new_tokens
        if current and width * n * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def forward_parameters(model) -> set[str]:
    """Keyword names of the (base) model's forward; empty when they cannot be read."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def run_prefill(model, name: str, cache, extra: dict, **inputs):
    """The model's forward pass over prompt tokens, filling `cache` (passed under the forward's own keyword)."""
    output = model(use_cache=True, **{name: cache}, **extra, **inputs)
    return output.cache if name == "cache" else output.past_key_values


def static_prompt_cache(model, ids, mask, name: str, extra: dict, n: int, max_new_tokens: int | None):
    """Each prompt's cache from a forward pass of its own (no padding, so attention takes the causal kernel instead
    of a padding mask: less than half the prefill time on a CPU, BENCHMARKS.md), laid out left-padded n times in a
    `StaticCache` sized for the prompt and `max_new_tokens`: `generate` then writes each new position in place,
    where a `DynamicCache` concatenates the whole cache once per step. None where that does not apply: no length
    bound, a sliding-window layer (its cache is not the prompt's positions), or a config the static cache cannot
    read."""
    from transformers import DynamicCache, StaticCache

    if max_new_tokens is None:
        return None
    try:
        cache = StaticCache(config=model.config, max_cache_len=ids.shape[1] + max_new_tokens)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if any(layer.is_sliding for layer in cache.layers):
        return None
    width = ids.shape[1] - 1  # all but the last prompt token
    prompts = [
        run_prefill(model, name, DynamicCache(config=model.config), extra, input_ids=row[keep][None, :-1])
        for row, keep in zip(ids, mask.bool())
    ]
    for index in range(len(cache.layers)):
        keys, values = (
            torch.cat([pad(getattr(p.layers[index], part), (0, 0, width - p.get_seq_length(), 0)) for p in prompts])
            for part in ("keys", "values")
        )
        cache.update(keys.repeat_interleave(n, 0), values.repeat_interleave(n, 0), index)
    return cache


def prefill_once(model, encoded: dict, n: int, max_new_tokens: int | None = None) -> dict | None:
    """`generate` inputs for n candidates per prompt whose prompts are encoded once: all but the last prompt token
    go through the model here, and the cache is repeated n times (`generate` encodes only what the cache lacks: the
    last token). With `max_new_tokens`, each prompt alone into a static cache (`static_prompt_cache`); otherwise the
    left-padded batch in one pass, with the positions `generate` gives padded rows. None when the model's cache
    cannot be passed in (no cache keyword, or prompts of one token)."""
    from transformers import DynamicCache

    parameters = forward_parameters(model)
    name = next((name for name in ("cache", "past_key_values") if name in parameters), None)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    if name is None or ids.shape[1] < 2:
        return None
    extra = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    cache = static_prompt_cache(model, ids, mask, name, extra, n, max_new_tokens)
    if cache is None:
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        cache = run_prefill(
            model,
            name,
            DynamicCache(config=model.config),
            extra,
            input_ids=ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
        )
        cache.batch_repeat_interleave(n)
    return {"input_ids": ids.repeat_interleave(n, 0), "attention_mask": mask.repeat_interleave(n, 0), name: cache}


@torch.inference_mode()
def _generate(
    model,
    tokenizer,
    prompts: list[str],
    n: int,
    generation_kwargs: dict,
    stop_ids: list[int],
    row_keys: list[int],
    share_prefill: bool = True,
):
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    pad_lengths = (encoded["attention_mask"] == 0).sum(-1).repeat_interleave(n).tolist()  # one per candidate row
    kwargs, processors = seeded_sampling(generation_kwargs, row_keys, encoded["input_ids"].shape[1], pad_lengths)
    max_new_tokens = generation_kwargs.get("max_new_tokens")
    inputs = prefill_once(model, encoded, n, max_new_tokens) if share_prefill and n > 1 else None
    output = model.generate(
        **(inputs or encoded),
        disable_compile=True,  # a static cache would otherwise compile the forward on a GPU, once per batch shape
        num_return_sequences=1 if inputs else n,
        eos_token_id=stop_ids,
        pad_token_id=tokenizer.pad_token_id,
        logits_processor=processors,
        **kwargs,
    )
    new_tokens = output[:, encoded["input_ids"].shape[1] :]
    samples = [decode_sample(tokenizer, row, stop_ids) for row in new_tokens.tolist()]
    return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]


def sample_conversations(
    model,
    tokenizer,
    prompts: list[str],
    keys: list[str],
    *,
    n: int,
    generation_kwargs: dict,
    batch_tokens: int,
    seed: int,
    progress: tqdm | None = None,
    share_prefill: bool = True,
) -> list[list[Sample]]:
    """n samples per rendered prompt, in the prompts' order. `keys` name the prompts (pair ids): with `seed`, they
    key each candidate's sampling noise. `share_prefill=False` leaves the n copies to `num_return_sequences` (the
    same candidates, up to float rounding, each prompt encoded n times)."""
    tokenizer.padding_side = "left"
    stop_ids = stop_token_ids(model, tokenizer)
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    max_new = generation_kwargs.get("max_new_tokens", 256)
    results: list[list[Sample] | None] = [None] * len(prompts)
    pending = plan_batches(lengths, max_new, n, batch_tokens)
    generate = _generate if share_prefill else partial(_generate, share_prefill=False)
    while pending:
        batch = pending.pop(0)
        rows = [
            row_key(seed, keys[i], candidate) for i in batch for candidate in range(n)
        ]  # num_return_sequences order
        try:
            outputs = generate(model, tokenizer, [prompts[i] for i in batch], n, generation_kwargs, stop_ids, rows)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(batch) // 2
            logger.warning(
                "Out of memory on a batch of %d prompts: retrying as %d + %d.", len(batch), half, len(batch) - half
            )
            pending[:0] = [batch[:half], batch[half:]]
            continue
        for index, samples in zip(batch, outputs):
            results[index] = samples
        if progress is not None:
            progress.update(len(batch))
    return results  # type: ignore[return-value]
