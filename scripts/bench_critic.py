"""Critic throughput: next-token-probability experts against a judge that generates an answer and parses it.

Both arms ask the same judge model the same questions: faithfulness (Yes/No, after its in-context examples) and
toxicity (Yes/No) for every candidate, and each FED policy (1/2) for every ordered pair of a user pair's candidates.
The full critic reads the answer options' probabilities in batched forward passes, encoding what prompts share once
(the faithfulness examples, a FED pair's conversations across its five policies: `Judge.share_prefixes`,
docs/prefix_sharing.md); the naive judge generates up to `--answer_tokens` tokens per question, one question at a
time, and parses "Yes"/"No"/"1"/"2" from the text (counting answers it cannot parse). `--unshared_arm` also times the
critic with every prompt encoded in full.

Usage:
    python scripts/bench_critic.py                                   # tiny judge, CPU (builds it if missing)
    python scripts/bench_critic.py --arch qwen2.5-1.5b --pairs 64    # GPU, random weights, bf16
    python scripts/bench_critic.py --model models/smollm2-135m-instruct \
        --gguf_file SmolLM2-135M-Instruct.Q4_1.gguf --pairs 1 --candidates 2   # a real judge (slow on CPU)

The last line is `speedup vs naive: N.Nx` (candidates judged per second, critic / naive).
"""

from __future__ import annotations

import argparse
import re
import time


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-models/generator", help="Judge model folder (tiny by default).")
    parser.add_argument("--gguf_file", help="A .gguf file in --model, loaded (dequantized) by spc_train.models.")
    parser.add_argument("--arch", help="Random-weight judge of this architecture (see bench_generate.py ARCHS).")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--answer_tokens", type=int, default=16, help="Naive judge: tokens generated per answer.")
    parser.add_argument("--batch_tokens", type=int, default=1 << 16)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--faithfulness_examples", type=int, default=4, help="In-context examples of the faithfulness question."
    )
    parser.add_argument("--prefix_cache_tokens", type=int, default=65536, help="Judge.prefix_cache_tokens.")
    parser.add_argument("--unshared_arm", action="store_true", help="Also time the critic without prefix sharing.")
    return parser


def questions_for(candidates: list[dict], examples: list[tuple[str, str]]) -> list[tuple[str, list[str], list]]:
    """Every question the full critic asks (five FED policies, faithfulness, toxicity): options, examples shown."""
    from spc_train.critic.faithfulness import faithfulness_question
    from spc_train.critic.fed import POLICIES, pairwise_question
    from spc_train.critic.toxicity import QUESTION as TOXICITY
    from spc_train.data import format_conversation

    asked = []
    for c in candidates:
        asked.append((faithfulness_question(c), ["Yes", "No"], examples))
        asked.append((TOXICITY.format(conversation=format_conversation(c["turns"])), ["Yes", "No"], []))
    for policy in POLICIES:
        for a in candidates:
            for b in candidates:
                if a is not b and a["pair_id"] == b["pair_id"]:
                    asked.append((pairwise_question(policy, a, b), ["1", "2"], []))
    return asked


def load_gguf(args):
    """A GGUF judge through the package's loader (dequantized: float32 on CPU), on the device it picks."""
    from spc_train.configs import ModelSpec
    from spc_train.models import load_causal_lm, load_tokenizer

    spec = ModelSpec(name_or_path=args.model, gguf_file=args.gguf_file, dtype=args.dtype)
    model = load_causal_lm(spec).eval()
    return model, load_tokenizer(spec), model.device.type


def main() -> None:
    args = make_parser().parse_args()
    import torch
    from bench_generate import ARCHS, load

    from spc_train.critic.faithfulness import FaithfulnessExpert
    from spc_train.critic.fed import POLICIES, FedPolicyExpert
    from spc_train.critic.registry import critique
    from spc_train.critic.toxicity import ToxicityExpert
    from spc_train.data import read_seed
    from spc_train.judge import Judge
    from spc_train.tiny import default_seed_path

    if args.arch and args.arch not in ARCHS:
        raise SystemExit(f"--arch must be one of {sorted(ARCHS)}")
    model, tokenizer, device = load_gguf(args) if args.gguf_file else load(args)
    records = read_seed(str(default_seed_path())).records
    # Candidates: real SPC conversations (cut to 12 turns), grouped into pairs of n candidates.
    candidates = [
        {
            **records[i],
            "turns": records[i]["turns"][:12],
            "pair_id": f"pair-{i // args.candidates}",
            "candidate": i % args.candidates,
            "parsed": True,
        }
        for i in range(args.pairs * args.candidates)
    ]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def experts_of(judge: Judge) -> list:
        faithfulness = FaithfulnessExpert("faithfulness", judge, 0.5, examples=args.faithfulness_examples)
        return [faithfulness, ToxicityExpert("toxicity", 0.5, judge=judge)] + [
            FedPolicyExpert(policy, judge) for policy in POLICIES
        ]

    def timed(share: bool) -> tuple[float, Judge, float | None]:
        """Seconds of one critique of every candidate (after a warm-up on one pair), its judge, peak GiB."""
        judge = Judge(model, tokenizer, args.batch_tokens, share_prefixes=share)
        judge.prefix_cache_tokens = args.prefix_cache_tokens
        experts = experts_of(judge)
        critique(candidates[: args.candidates], experts)  # warm-up
        judge.clear_prefix_cache()
        judge.tokens_prompted = judge.tokens_encoded = 0
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        start = time.perf_counter()
        critique(candidates, experts)
        sync()
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        return time.perf_counter() - start, judge, peak

    judge = Judge(model, tokenizer, batch_tokens=args.batch_tokens)
    examples = experts_of(judge)[0].examples
    asked = questions_for(candidates, examples)
    print(
        f"judge: {args.arch or args.model} ({device}); {args.pairs} pairs x {args.candidates} candidates; "
        f"{len(asked)} questions (faithfulness with {len(examples)} examples, toxicity, "
        f"{len(POLICIES)} FED policies in both orders)"
    )

    critic_s, shared, peak = timed(True)
    unshared = timed(False) if args.unshared_arm else None

    unparsed = 0
    sync()
    start = time.perf_counter()
    with torch.inference_mode():
        for question, options, examples in asked:
            ids = judge.encode(question, examples)  # the same prompt, fitted to the context the same way
            encoded = {"input_ids": torch.tensor([ids], device=device)}
            encoded["attention_mask"] = torch.ones_like(encoded["input_ids"])
            out = model.generate(
                **encoded, max_new_tokens=args.answer_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            answer = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
            found = re.search(r"\b(" + "|".join(options) + r")\b", answer)
            unparsed += found is None
    sync()
    naive_s = time.perf_counter() - start

    n = len(candidates)
    print(f"{'arm':<24}{'seconds':>10}{'candidates/s':>14}{'questions/s':>13}{'unparsed':>10}")
    arms = [("generate+parse", naive_s, unparsed)]
    arms += [("option probs, unshared", unshared[0], 0)] if unshared else []
    arms += [("option probs", critic_s, 0)]
    for name, seconds, failed in arms:
        print(f"{name:<24}{seconds:>10.2f}{n / seconds:>14.2f}{len(asked) / seconds:>13.1f}{failed:>10}")
    print(
        f"prompt tokens encoded per candidate: {shared.tokens_prompted / n:.0f} before (every prompt in full, "
        f"both arms), {shared.tokens_encoded / n:.0f} after (prefixes shared)"
    )
    if peak is not None:
        print(f"critic peak GPU memory (torch.cuda.max_memory_allocated): {peak:.2f} GiB")
    if unshared and unshared[2] is not None:
        print(f"unshared critic peak GPU memory: {unshared[2]:.2f} GiB")
    print(f"speedup vs naive: {naive_s / critic_s:.1f}x")


if __name__ == "__main__":
    main()
