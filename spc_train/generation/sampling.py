"""Per-candidate seeded sampling: a candidate's tokens do not depend on which other prompts share its batch.

`generate(do_sample=True)` draws every row from one RNG stream, so a candidate changes with the batch plan (how many
prompts, in which order, after an out-of-memory split or on another process). Here sampling is the Gumbel-max trick
with counter-based noise: at step t the row of (pair key, candidate) picks argmax(logits / T + G), with G a Gumbel
variate hashed from (row key, t, token id). That is an exact draw from softmax(logits / T) after top-k / top-p, and
the noise is a pure function of the row, so a candidate is the same in any batch (up to float rounding of the
logits). Only the top-k tokens get noise (the paper's top-k 40), so the cost per step is tiny next to the model.

`generate` keeps `do_sample=True` (greedy decoding refuses `num_return_sequences`), with these processors first:
temperature, top-k, top-p, then the draw, which leaves each row a single finite logit; the sampling step after them
can then only take that token, whatever the global RNG holds.
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


def seeded_sampling(generation_kwargs: dict, keys: list[int], prompt_width: int) -> tuple[dict, LogitsProcessorList]:
    """`generate` kwargs and the processors that make its sampling the recipe's, seeded per candidate row."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if not generation_kwargs.get("do_sample", True):  # greedy asked for: nothing to seed
        kwargs = {k: v for k, v in generation_kwargs.items() if k != "logits_processor"}
        return kwargs, LogitsProcessorList(generation_kwargs.get("logits_processor") or [])
    sampling = ("do_sample", "temperature", "top_k", "top_p", "logits_processor")
    kwargs = {k: v for k, v in generation_kwargs.items() if k not in sampling}
    processors = LogitsProcessorList(generation_kwargs.get("logits_processor") or [])  # the caller's come first
    temperature, top_k, top_p = (generation_kwargs.get(k) for k in ("temperature", "top_k", "top_p"))
    if temperature is not None and temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    processors.append(GumbelMaxSampler(keys, prompt_width, top_k))
    return {**kwargs, "do_sample": True}, processors
