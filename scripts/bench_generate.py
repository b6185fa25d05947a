"""Candidate generation throughput: spc_train's batched engine against a naive loop, measured in the same run.

Naive: one pair at a time, one `generate` call per candidate (what a first script would do).
Engine: prompts sorted by length, token-budget batches, left padding, each prompt's forward pass run once and its
key/value cache repeated for the n candidates (`prefill_once`). `--unshared_arm` also times the engine with
`num_return_sequences` (prompts repeated n times before the forward pass, as before prefix sharing).
`--backend continuous` times transformers' continuous batching (`generate_batch`, paged cache) as the engine instead
(its unshared arm turns the cache's prefix block sharing off).

Usage:
    python scripts/bench_generate.py                                  # tiny model, CPU (builds it if missing)
    python scripts/bench_generate.py --arch qwen2.5-1.5b --pairs 256 --candidates 4 --max_new_tokens 512  # GPU, bf16
    python scripts/bench_generate.py --arch qwen2.5-1.5b ... --backend continuous --batch_tokens 1048576

`--arch` builds that architecture from its config with random weights (no download): throughput does not depend on
the weights, but random weights never stop early, so every sequence runs to max_new_tokens in both arms.
The last line is `speedup vs naive: N.Nx` (candidates per second, engine / naive).
"""

from __future__ import annotations

import argparse
import time

ARCHS = {
    # Qwen/Qwen2.5-1.5B-Instruct config.json values
    "qwen2.5-1.5b": dict(
        model_type="qwen2",
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1e6,
        tie_word_embeddings=True,
    ),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-models/generator", help="Local model folder (tiny by default).")
    parser.add_argument("--arch", choices=sorted(ARCHS), help="Random-weight model of this architecture instead.")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--few_shot_examples", type=int, default=1, help="Paper: 5 (cut to fit the context).")
    parser.add_argument("--batch_tokens", type=int, default=1 << 17)
    parser.add_argument(
        "--naive_pairs", type=int, help="Pairs for the naive arm (default: all); rates are per second."
    )
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on GPU, float32 on CPU.")
    parser.add_argument("--backend", choices=("generate", "continuous"), default="generate", help="The engine arm.")
    parser.add_argument(
        "--unshared_arm", action="store_true", help="Also time the engine with each prompt encoded n times."
    )
    return parser


def load(args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from spc_train.tiny import build_tiny_models, default_seed_path, tiny_models_ready

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {
        "auto": torch.bfloat16 if device == "cuda" else torch.float32,
        "bfloat16": torch.bfloat16,
        "float32": torch.float32,
    }[args.dtype]
    tiny_dir = "tiny-models"
    if not tiny_models_ready(tiny_dir):
        build_tiny_models(tiny_dir, default_seed_path())
    tokenizer = AutoTokenizer.from_pretrained(args.model if not args.arch else f"{tiny_dir}/generator")
    tokenizer.padding_side = "left"
    if args.arch:
        spec = dict(ARCHS[args.arch])
        config = AutoConfig.for_model(spec.pop("model_type"), **spec)
        config.eos_token_id = tokenizer.eos_token_id
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    return model.to(device).eval(), tokenizer, device


def main() -> None:
    args = make_parser().parse_args()
    import torch

    from spc_train.data import read_seed
    from spc_train.generation.candidates import fit_prompt, pick_examples
    from spc_train.generation.continuous import sample_conversations_continuous
    from spc_train.generation.engine import sample_conversations, stop_token_ids
    from spc_train.tiny import default_seed_path

    model, tokenizer, device = load(args)
    records = read_seed(str(default_seed_path())).records
    pairs = [records[i % len(records)] | {"pair_id": f"pair-{i}"} for i in range(args.pairs)]
    context = model.config.max_position_embeddings
    budget = min(context, 4096) - args.max_new_tokens
    fitted = [fit_prompt(tokenizer, p, pick_examples(records, p, args.few_shot_examples, 0, 0), budget) for p in pairs]
    prompts = [prompt for prompt, _ in fitted]
    examples_kept = sum(kept for _, kept in fitted) / len(fitted)
    sampling = {"do_sample": True, "top_k": 40, "temperature": 0.7, "max_new_tokens": args.max_new_tokens}
    if args.arch and args.backend == "generate":  # continuous batching has no min-length processor
        sampling["min_new_tokens"] = args.max_new_tokens  # random weights: same length in both arms
    engine = sample_conversations_continuous if args.backend == "continuous" else sample_conversations
    keys = [p["pair_id"] for p in pairs]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    print(
        f"model: {args.arch or args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
        f"{next(model.parameters()).dtype}, {device}); {args.pairs} pairs x {args.candidates} candidates, "
        f"max_new_tokens {args.max_new_tokens}"
    )

    # Warm-up (kernels, allocator), not timed.
    engine(
        model,
        tokenizer,
        prompts[:2],
        keys[:2],
        n=2,
        generation_kwargs={**sampling, "max_new_tokens": 8},
        batch_tokens=args.batch_tokens,
        seed=0,
    )

    def timed(share_prefill: bool):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        results = engine(
            model,
            tokenizer,
            prompts,
            keys,
            n=args.candidates,
            generation_kwargs=sampling,
            batch_tokens=args.batch_tokens,
            seed=0,
            share_prefill=share_prefill,
        )
        sync()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        return results, seconds, peak

    results, engine_s, peak = timed(True)
    engine_tokens = sum(s.num_tokens for group in results for s in group)
    engine_candidates = sum(len(group) for group in results)
    unshared = timed(False) if args.unshared_arm else None

    stop_ids = stop_token_ids(model, tokenizer)
    naive_prompts = prompts[: args.naive_pairs or len(prompts)]
    naive_tokens = naive_candidates = 0
    sync()
    start = time.perf_counter()
    with torch.inference_mode():
        for prompt in naive_prompts:
            for _ in range(args.candidates):
                encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
                out = model.generate(**encoded, **sampling, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
                new = out[0, encoded["input_ids"].shape[1] :].tolist()
                naive_tokens += next((i for i, t in enumerate(new) if t in stop_ids), len(new))
                naive_candidates += 1
    sync()
    naive_s = time.perf_counter() - start

    rows = [
        ("naive", naive_candidates, naive_tokens, naive_s),
        (args.backend, engine_candidates, engine_tokens, engine_s),
    ]
    if unshared is not None:
        tokens = sum(s.num_tokens for group in unshared[0] for s in group)
        rows.insert(1, (f"{args.backend}, unshared", engine_candidates, tokens, unshared[1]))
    print(f"{'arm':<22}{'candidates':>12}{'tokens':>10}{'seconds':>10}{'cand/s':>10}{'tok/s':>10}")
    for name, candidates, tokens, seconds in rows:
        rates = f"{candidates / seconds:>10.2f}{tokens / seconds:>10.0f}"
        print(f"{name:<22}{candidates:>12}{tokens:>10}{seconds:>10.2f}{rates}")
    # Prompt tokens put through the model per candidate: every prompt in full per candidate without sharing; with
    # prefill-once, all but the last token once per prompt, and the last token once per candidate.
    prompt_tokens = sum(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]) / len(prompts)
    shared_tokens = (prompt_tokens - 1) / args.candidates + 1
    kept = f"few-shot examples kept: {examples_kept:.1f} of {args.few_shot_examples} on average"
    if args.backend == "generate":
        print(
            f"prompt tokens encoded per candidate: {prompt_tokens:.0f} before (naive, num_return_sequences), "
            f"{shared_tokens:.0f} after (prefill once; {kept})"
        )
    else:  # the paged cache shares whole 256-token blocks: what it saved is not counted here
        print(f"prompt tokens per candidate: {prompt_tokens:.0f} ({kept}); block sharing reuses whole cached blocks")
    if peak is not None:
        print(f"engine peak GPU memory (torch.cuda.max_memory_allocated): {peak:.2f} GiB")
    if unshared is not None and unshared[2] is not None:
        print(f"unshared engine peak GPU memory: {unshared[2]:.2f} GiB")
    speedup = (engine_candidates / engine_s) / (naive_candidates / naive_s)
    print(f"tokens/s ratio: {(engine_tokens / engine_s) / (naive_tokens / naive_s):.1f}x")
    print(f"speedup vs naive: {speedup:.1f}x")


if __name__ == "__main__":
    main()
