"""Per-candidate seeded sampling: a candidate's tokens do not depend on which other prompts share its batch.

`generate(do_sample=True)` draws every row from one RNG stream, so a candidate changes with the batch plan (how many
prompts, in which order, after an out-of-memory split or on another process). Here sampling is the Gumbel-max trick
with counter-based noise: at step t the row of (pair key, candidate) picks argmax(logits / T + G), with G a Gumbel
variate hashed from (row key, t, token id). That is an exact draw from softmax(logits / T) after top-k / top-p, and
the noise is a pure function of the row, so a candidate is the same in any batch (up to float rounding of the
logits). Only the top-k tokens get noise (the paper's top-k 40), so the cost per step is tiny next to the model.

`generate` keeps `do_sample=True` (greedy decoding refuses `num_return_sequences`), with these processors first:
repetition penalty, no-repeat n-gram, temperature, top-k, top-p, then the draw, which leaves each row a single finite
logit; the sampling step after them can then only take that token, whatever the global RNG holds.

The recipe's settings are the only ones that apply. `generate` fills every setting it is not given from the model's
own `generation_config` (a checkpoint's `repetition_penalty: 1.2`, `temperature: 0.2`, ...) and puts the processors it
builds from them *before* ours, so each sampling setting is passed to it explicitly at its neutral value (`NEUTRAL`):
it builds none, and ours are the whole distribution. The penalties see the prompt and the candidate's tokens, as
transformers' own do, but never the left padding, so a candidate still does not depend on its batch.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import LogitsProcessor, LogitsProcessorList

_MASK32 = 0xFFFFFFFF


def row_key(seed: int, key: str, candidate: int) -> int:
    """A 32-bit key of one candidate row: the run seed, the pair's key and the candidate index."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}:{candidate}".encode()).digest()[:4], "little")


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """(x * constant) mod 2**32 for x < 2**32 in int64, in 16-bit halves so no product overflows."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (Wellons' lowbias32) on int64 tensors holding values below 2**32."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def gumbel_noise(keys: torch.Tensor, step: int, tokens: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise for rows `keys` (B,) at `step` on token ids `tokens` (B, k); a pure function of the three."""
    row = hash32(hash32(keys) ^ (step & _MASK32))
    bits = hash32(row[:, None] ^ tokens)
    uniform = (bits.double() + 0.5) / 2.0**32  # in (0, 1), never 0 or 1
    return -torch.log(-torch.log(uniform))


class GumbelMaxSampler(LogitsProcessor):
    """Keeps one token per row, drawn with the row's own noise; `generate`'s own sampling then can only take it."""

    def __init__(self, keys: list[int], prompt_width: int, top_k: int | None):
        self.keys = torch.tensor(keys, dtype=torch.long)
        self.prompt_width, self.top_k = prompt_width, top_k

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width
        k = min(self.top_k or scores.shape[-1], scores.shape[-1])
        values, tokens = scores.float().topk(k, dim=-1)
        noise = gumbel_noise(self.keys.to(scores.device), step, tokens).to(values.dtype)
        picked = tokens.gather(-1, (values + noise).argmax(-1, keepdim=True))
        return torch.full_like(scores, float("-inf")).scatter_(-1, picked, 0.0)


# Passed to `generate` so that the model's `generation_config` fills in none of these: at these values, `generate`
# builds no processor of its own (the recipe's are ours, in `seeded_sampling`). Warpers it may still build from the
# model's config (`min_p`) come after the draw, which has left one finite logit: they cannot change the token.
NEUTRAL = {
    "temperature": 1.0,
    "top_k": 0,
    "top_p": 1.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_new_tokens": 0,
}
SETTINGS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size")


class Unpadded(LogitsProcessor):
    """Shows a processor that reads the token history (n-gram blocking) each row without its left padding, so a
    padded row sees what it would see alone."""

    def __init__(self, processor: LogitsProcessor, pad_lengths: list[int]):
        self.processor, self.pad_lengths = processor, pad_lengths

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return torch.cat(
            [
                self.processor(input_ids[row : row + 1, pad:], scores[row : row + 1])
                for row, pad in enumerate(self.pad_lengths)
            ]
        )


def repetition_processors(generation_kwargs: dict, pad_lengths: list[int] | None = None) -> list[LogitsProcessor]:
    """transformers' repetition penalty and no-repeat n-gram processors for the recipe's values (none when neutral).
    `pad_lengths`: left-padding tokens of each row, which neither may count."""
    from transformers import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

    processors: list[LogitsProcessor] = []
    penalty = generation_kwargs.get("repetition_penalty")
    size = generation_kwargs.get("no_repeat_ngram_size")
    ignore = torch.tensor(pad_lengths, dtype=torch.long) if pad_lengths and any(pad_lengths) else None
    if penalty is not None and float(penalty) != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(float(penalty), prompt_ignore_length=ignore))
    if size:
        ngram = NoRepeatNGramLogitsProcessor(int(size))
        processors.append(Unpadded(ngram, pad_lengths) if ignore is not None else ngram)
    return processors


def seeded_sampling(
    generation_kwargs: dict, keys: list[int], prompt_width: int, pad_lengths: list[int] | None = None
) -> tuple[dict, LogitsProcessorList]:
    """`generate` kwargs and the processors that make its sampling the recipe's, seeded per candidate row.

    The recipe's settings (`SETTINGS`) become processors here; `generate` gets the `NEUTRAL` values, except those
    the caller passes itself, and the caller's other kwargs (`max_new_tokens`, `suppress_tokens`, ...).
    """
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    kwargs = {**NEUTRAL, **{k: v for k, v in generation_kwargs.items() if k not in (*SETTINGS, "logits_processor")}}
    processors = LogitsProcessorList(generation_kwargs.get("logits_processor") or [])  # the caller's come first
    processors.extend(repetition_processors(generation_kwargs, pad_lengths))
    if not generation_kwargs.get("do_sample", True):  # greedy asked for: nothing to seed
        return {**kwargs, "do_sample": False}, processors
    temperature, top_k, top_p = (generation_kwargs.get(k) for k in ("temperature", "top_k", "top_p"))
    if temperature is not None and temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    processors.append(GumbelMaxSampler(keys, prompt_width, top_k))
    return {**kwargs, "do_sample": True}, processors
