"""The second generation backend: transformers' continuous batching (`generate_batch`), chosen with
`generation.backend: continuous`.

A paged KV cache and a scheduler that admits a request as soon as another finishes: no padding, and no batch waiting
for its longest conversation, which is where a GPU's throughput goes on long, uneven samples. It works with PEFT
adapters (the LoRA layers live inside the base model's modules, which `generate_batch` runs). Its sampler is its
own, seeded once per call, so the per-candidate noise of the `generate` backend does not apply: a candidate depends
on the other requests of its call. Each call is one shard, seeded by the shard's pair keys, so a shard regenerated
after a crash repeats the uninterrupted one where the device is deterministic (it is on CPU), and any process count
gives the same shards. Prompt prefixes are shared through the paged cache's block sharing (`allow_block_sharing`, on
by default in transformers and set explicitly here): a request whose prompt starts with complete cached blocks (256
tokens each) reuses them instead of encoding them again, and the n candidates of a prompt fork from one prefill. The
paged cache holds `batch_tokens` tokens; out of memory halves it and asks again (logged), so no row is lost.
"""

from __future__ import annotations

import logging

import torch

from .engine import Sample, decode_sample, stop_token_ids
from .sampling import row_key

logger = logging.getLogger(__name__)

PAGE_SIZE = 256  # tokens per cache block (transformers' default)
MAX_STEP_TOKENS = 8192  # transformers' default tokens per step, when the cache is larger


def _out_of_memory(error: BaseException | str | None) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error or "").lower()


@torch.inference_mode()
def sample_conversations_continuous(
    model,
    tokenizer,
    prompts: list[str],
    keys: list[str],
    *,
    n: int,
    generation_kwargs: dict,
    batch_tokens: int,
    seed: int,
    progress=None,
    share_prefill: bool = True,
) -> list[list[Sample]]:
    """n samples per rendered prompt, in the prompts' order, from one `generate_batch` call seeded by the keys.

    `batch_tokens` bounds the paged cache (tokens held at once, as it bounds a padded batch of the `generate`
    backend) and the tokens of one forward step (whose attention mask grows with it where no flash kernel runs).
    `share_prefill=False` turns the cache's prefix block sharing off (a baseline for the benchmark).
    """
    from transformers import ContinuousBatchingConfig, GenerationConfig

    if not prompts:
        return []
    if generation_kwargs.get("repetition_penalty", 1.0) != 1.0 or generation_kwargs.get("no_repeat_ngram_size"):
        # transformers' continuous batching drops these processors with a mere warning (`GenerationArguments` refuses
        # the combination at `check`; this guards other callers)
        raise ValueError("repetition_penalty and no_repeat_ngram_size need generation.backend `generate`.")
    stop_ids = stop_token_ids(model, tokenizer)
    config = GenerationConfig(
        **generation_kwargs, num_return_sequences=n, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id
    )
    inputs = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    while True:
        try:
            outputs = model.generate_batch(
                inputs,
                generation_config=config,
                continuous_batching_config=ContinuousBatchingConfig(
                    seed=row_key(seed, "|".join(keys), 0),
                    num_blocks=-(-batch_tokens // PAGE_SIZE),
                    page_size=PAGE_SIZE,
                    max_batch_tokens=min(batch_tokens, MAX_STEP_TOKENS),
                    allow_block_sharing=share_prefill,
                ),
                warmup=model.device.type == "cuda",  # captures CUDA graphs; nothing to capture elsewhere
            )
            error = next((o.error for o in outputs.values() if _out_of_memory(o.error)), None)
        except torch.OutOfMemoryError as raised:
            if batch_tokens <= PAGE_SIZE:
                raise
            error = raised
        if error is None or batch_tokens <= PAGE_SIZE:
            break
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        batch_tokens //= 2
        logger.warning("Out of memory in continuous batching: retrying the shard with batch_tokens %d.", batch_tokens)
    samples, failed = [], []
    for request, output in outputs.items():
        if output.error is not None:
            failed.append(f"{request}: {output.error}")
        samples.append(decode_sample(tokenizer, list(output.generated_tokens), stop_ids))
    if failed or len(samples) != len(prompts) * n:
        missing = len(prompts) * n - len(outputs)
        raise RuntimeError(
            f"Continuous batching returned {len(samples) - len(failed)} of {len(prompts) * n} candidates "
            f"({len(failed)} failed, {missing} missing; first: {failed[:1]}). Nothing of this shard was written: "
            "re-run to resume, or set generation.backend to `generate`."
        )
    if progress is not None:
        progress.update(len(prompts))
    # generate_batch orders each prompt's requests as its children #0..n-2, then the parent
    return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]
