"""LoRA SFT throughput with and without packing: real (non-padding) training tokens per second, same run, same rows.

Both arms train a fresh LoRA adapter the way the loop does: seed conversations -> `sft_rows` (conversational
prompt/completion rows) -> `spc_train.training.sft.train_adapter` (TRL `SFTTrainer`, completion-only loss) with the
recipe's `SFTConfig`, for one epoch over the same rows (so the same real tokens in both arms):
- naive: `packing=False, padding_free=False`: random batches of `per_device_train_batch_size` rows, right-padded to
  the longest row of the batch, with an attention mask;
- packed: `packing=True` with TRL's default `packing_strategy="bfd"` (best-fit decreasing into `max_length` bins; a
  row longer than `max_length` is truncated, as in the naive arm). TRL 1.x then switches padding-free on by itself:
  a batch is one flat row of the concatenated sequences, `position_ids` restart at 0 for each, no attention mask.
  TRL does not require FlashAttention for it: with `flash_attention_2` (`--attn`, needs the `flash-attn` package)
  the varlen kernel keeps each sequence to itself; with SDPA or eager (used on CPU), transformers builds a
  block-diagonal causal mask from the `position_ids`, which is exact but computes attention over the whole flat row
  (quadratic in batch x max_length, against batch x longest-row squared when padded).
`trl.SFTTrainer` is swapped, for the call, for a subclass that only measures: a callback takes the time at every
optimizer step end (the first `--warmup` steps of each arm are not timed), and `compute_loss` counts each micro-batch:
fed = `input_ids` positions (padding included), real = the attention mask's sum (naive) or the flat row's length
(packed), the same count as TRL's `num_tokens` metric (checked against it). Padding share = 1 - real / fed.
The ratio is packed real tokens/s / naive real tokens/s (wall clock); with `--repeats N` the arms alternate N times
and the best rate of each arm is kept. The process's CPU time is printed too, a steadier measure on a shared machine.

Model FLOPs utilisation (GPU only), for LoRA on frozen weights:
    MFU = (4 * N_body * real_tokens + 4 * N_head * loss_tokens) / seconds / (peak_tflops * 1e12)
N_body = the weights of the decoder's linear layers (frozen base plus LoRA), N_head = the LM head (vocab x hidden).
4 = forward (2) + backward to the activations (2): frozen weights get no weight gradient, so the usual 6N is 4N
(LoRA's own weight gradients are under 1% of N). TRL's fused LM head projects only the positions with a label, so the
head counts on loss (completion) tokens only. Not counted: attention scores, and the forward recomputation that
activation checkpointing adds (so MFU is below the hardware's utilisation when the recipe checkpoints).

Usage:
    python scripts/bench_sft.py                             # tiny model, CPU, recipes/tiny/loop.yaml, 64 rows
    OMP_NUM_THREADS=1 python scripts/bench_sft.py --repeats 3   # shared CPU: one thread avoids oversubscription
    python scripts/bench_sft.py --training.max_length 2048  # any --section.field recipe override
    python scripts/bench_sft.py --arch qwen2.5-1.5b --rows 1024 --attn flash_attention_2   # GPU, bf16, random weights

The tiny models are built in tiny-models/ if missing. `--arch` builds that architecture (bench_generate.py ARCHS)
from its config with random weights (no download), saves it with the tiny tokenizer to a temporary folder that
`train_adapter` loads, and defaults to its recipe (recipes/qwen2.5-1.5b-instruct/loop.yaml: bf16, LoRA r 16 on all
linear layers, batch 4 x 4 accumulation, max_length 4096, activation checkpointing). On a GPU it also reports peak
memory per arm (`torch.cuda.max_memory_allocated`, weights included) and MFU against `--peak_tflops` (H100 SXM dense
bf16: 989). The last line is `speedup vs naive: N.Nx` (real tokens per second, packed / naive).
"""

from __future__ import annotations

import argparse
import time

RECIPES = {None: "recipes/tiny/loop.yaml", "qwen2.5-1.5b": "recipes/qwen2.5-1.5b-instruct/loop.yaml"}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Other arguments are recipe overrides, e.g. --training.max_length 1024 --model.lora_r 8.",
    )
    parser.add_argument("--recipe", help="Recipe YAML (default: tiny, or the --arch model's recipe).")
    parser.add_argument("--arch", help="Random-weight model of this architecture (see bench_generate.py ARCHS).")
    parser.add_argument("--rows", type=int, help="SFT rows, cycling the seed sample (default: 64; 1024 with --arch).")
    parser.add_argument("--warmup", type=int, default=2, help="Optimizer steps per arm not timed.")
    parser.add_argument("--repeats", type=int, default=1, help="Run the arms this many times, alternating; best kept.")
    parser.add_argument("--max_steps", type=int, default=-1, help="Cap each arm's steps (default: one epoch).")
    parser.add_argument("--attn", help="Attention implementation (default: the recipe's; --arch: FA2 if installed).")
    parser.add_argument(
        "--peak_tflops", type=float, default=989.0, help="Peak dense bf16 TFLOP/s of the GPU, for MFU."
    )
    return parser


def save_random_model(arch: str, tokenizer_dir: str, out_dir: str, device: str) -> None:
    """The architecture with random weights, in bf16, plus the tiny tokenizer: a folder `train_adapter` can load."""
    import torch
    from bench_generate import ARCHS
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    spec = dict(ARCHS[arch])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


class Meter:
    """Token counts per micro-batch (from `compute_loss`) and a (time, counts) mark at every optimizer step end."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.counts = {"fed": 0, "real": 0, "loss": 0, "sequences": 0}
        self.marks: list[tuple[float, float, dict]] = []  # (wall clock, process CPU time, counts)
        self.peak_gib: float | None = None
        self.log_history: list[dict] = []
        self.info: dict = {}

    def count(self, inputs: dict) -> None:
        input_ids = inputs["input_ids"]
        self.counts["fed"] += input_ids.numel()
        if "attention_mask" in inputs:  # padded batch
            self.counts["real"] += int(inputs["attention_mask"].sum())
            self.counts["sequences"] += input_ids.shape[0]
        else:  # padding-free: one flat row, positions restart at 0 for each sequence
            self.counts["real"] += inputs["position_ids"].shape[1]
            self.counts["sequences"] += int((inputs["position_ids"] == 0).sum())
        self.counts["loss"] += int((inputs["labels"][:, 1:] != -100).sum())

    def callback(self):
        import torch
        from transformers import TrainerCallback

        meter = self

        class StepClock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                if meter.cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()

            def on_step_end(self, args, state, control, **kwargs):
                if meter.cuda:
                    torch.cuda.synchronize()
                meter.marks.append((time.perf_counter(), time.process_time(), dict(meter.counts)))

            def on_train_end(self, args, state, control, **kwargs):
                meter.log_history = list(state.log_history)
                if meter.cuda:
                    meter.peak_gib = torch.cuda.max_memory_allocated() / 2**30

        return StepClock()

    def summary(self, warmup: int, peak_tflops: float) -> dict:
        """The timed steps (after `warmup`): tokens, padding share, seconds, rates, MFU (GPU)."""
        (t0, p0, c0), (t1, p1, c1) = self.marks[warmup - 1], self.marks[-1]
        window = {k: c1[k] - c0[k] for k in c1}
        steps = len(self.marks) - warmup
        logged = [entry["num_tokens"] for entry in self.log_history if "num_tokens" in entry]
        out = {
            "steps": f"{steps}/{len(self.marks)}",
            "seqs_per_step": window["sequences"] / steps,
            "real": window["real"],
            "padding": 1 - window["real"] / window["fed"],
            "seconds": t1 - t0,
            "cpu_seconds": p1 - p0,
            "rate": window["real"] / (t1 - t0),
            "trl_num_tokens_ok": bool(logged) and logged[-1] == self.counts["real"],
        }
        if self.cuda:
            flops = 4 * self.info["n_body"] * window["real"] + 4 * self.info["n_head"] * window["loss"]
            out["mfu"] = flops / (t1 - t0) / (peak_tflops * 1e12)
            out["peak_gib"] = self.peak_gib
        return out


def run_arm(rows, model_spec, sft_args, output_dir, meter: Meter) -> dict:
    """`train_adapter` as the loop calls it, with `trl.SFTTrainer` swapped for a subclass that only measures."""
    from unittest import mock

    import torch
    import trl
    from transformers.trainer_callback import PrinterCallback

    from spc_train.training.sft import train_adapter

    class MeasuredSFTTrainer(trl.SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.remove_callback(PrinterCallback)  # disable_tqdm would print every log line
            self.add_callback(meter.callback())
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            head = base.get_output_embeddings()
            linears = [m for m in base.modules() if isinstance(m, torch.nn.Linear) and m is not head]
            meter.info = {
                "padding_free": self.padding_free,
                "attn": base.config._attn_implementation,
                "n_body": sum(m.weight.numel() for m in linears),
                "n_head": head.weight.numel(),
                "n_params": sum(p.numel() for p in base.parameters()),
                "dtype": str(next(base.parameters()).dtype).removeprefix("torch."),
            }

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                meter.count(inputs)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    with mock.patch.object(trl, "SFTTrainer", MeasuredSFTTrainer):
        stats = train_adapter(rows, model_spec, sft_args, output_dir)
    return stats


def main() -> None:
    parser = make_parser()
    args, overrides = parser.parse_known_args()
    import dataclasses
    import gc
    import logging
    import tempfile
    from pathlib import Path

    import torch
    from datasets import Dataset

    from spc_train.configs import parse_recipe
    from spc_train.data import read_seed
    from spc_train.tiny import build_tiny_models, default_seed_path, tiny_models_ready
    from spc_train.training.data import sft_rows

    logging.getLogger("transformers").setLevel(logging.ERROR)
    if args.arch:
        from bench_generate import ARCHS

        if args.arch not in ARCHS:
            raise SystemExit(f"--arch must be one of {sorted(ARCHS)}")
    tiny_dir = "tiny-models"
    if not tiny_models_ready(tiny_dir):
        build_tiny_models(tiny_dir, default_seed_path())
    recipe = parse_recipe(args.recipe or RECIPES.get(args.arch, RECIPES["qwen2.5-1.5b"]), overrides)
    cuda = torch.cuda.is_available() and not recipe.training.get("use_cpu", False)
    if args.warmup < 1:
        raise SystemExit("--warmup must be at least 1: the clock starts at the end of a step.")

    records = read_seed(str(default_seed_path())).records
    n_rows = args.rows or (1024 if args.arch else 64)
    rows = Dataset.from_list(sft_rows([records[i % len(records)] | {"pair_id": f"row-{i}"} for i in range(n_rows)]))

    with tempfile.TemporaryDirectory(prefix="bench_sft_") as tmp:
        model_spec = recipe.model
        if args.arch:
            save_random_model(args.arch, f"{tiny_dir}/generator", f"{tmp}/model", "cuda" if cuda else "cpu")
            model_spec = dataclasses.replace(model_spec, name_or_path=f"{tmp}/model", adapter=None)
            if args.attn is None:
                import importlib.util

                args.attn = "flash_attention_2" if cuda and importlib.util.find_spec("flash_attn") else None
        if args.attn:
            model_spec = dataclasses.replace(model_spec, attn_implementation=args.attn)

        runs = []  # (arm, repeat, summary)
        for repeat in range(args.repeats):
            for arm in ("naive", "packed"):
                sft_args = recipe.sft_config(
                    output_dir=f"{tmp}/{arm}-{repeat}",
                    packing=arm == "packed",
                    padding_free=False,  # packed: TRL's bfd strategy turns it on by itself
                    num_train_epochs=1,
                    max_steps=args.max_steps,
                    logging_steps=1,
                    save_strategy="no",
                    report_to="none",
                    disable_tqdm=True,
                    seed=recipe.loop.seed,
                )
                meter = Meter(cuda=sft_args.device.type == "cuda")
                stats = run_arm(rows, model_spec, sft_args, Path(f"{tmp}/{arm}-{repeat}/final"), meter)
                if len(meter.marks) <= args.warmup:
                    raise SystemExit(
                        f"{arm}: {len(meter.marks)} steps, not more than --warmup {args.warmup}: more --rows."
                    )
                runs.append((arm, repeat, meter.summary(args.warmup, args.peak_tflops)))
                if arm == "packed":
                    packed_info = (sft_args.packing_strategy, meter.info["padding_free"])
                else:
                    info, first, trainable = meter.info, sft_args, stats["trainable_parameters"]
                gc.collect()
                if meter.cuda:
                    torch.cuda.empty_cache()

    cuda = "mfu" in runs[0][2]
    length = "1 epoch" if args.max_steps < 0 else f"at most {args.max_steps} steps"
    print(
        f"model: {args.arch or recipe.model.name_or_path} ({info['n_params'] / 1e6:.1f}M params, {info['dtype']}, "
        f"attn {info['attn']}, {'cuda' if cuda else 'cpu'}); LoRA r {recipe.model.lora_r} ({trainable / 1e6:.2f}M "
        f"trainable); {n_rows} rows, {length}; batch {first.per_device_train_batch_size} x "
        f"{first.gradient_accumulation_steps} accumulation, max_length {first.max_length}, activation checkpointing "
        f"{bool(first.activation_checkpointing)}; packed: strategy {packed_info[0]}, padding_free {packed_info[1]}; "
        f"first {args.warmup} steps not timed"
    )
    header = f"{'arm':<10}{'steps':>8}{'seqs/step':>11}{'real tokens':>13}{'padding':>9}{'seconds':>9}{'CPU s':>9}"
    print(header + f"{'real tok/s':>12}" + (f"{'MFU':>8}{'peak GiB':>10}" if cuda else ""))
    for arm, repeat, r in runs:
        name = arm if args.repeats == 1 else f"{arm} {repeat + 1}"
        line = (
            f"{name:<10}{r['steps']:>8}{r['seqs_per_step']:>11.1f}{r['real']:>13}{r['padding']:>9.1%}"
            f"{r['seconds']:>9.2f}{r['cpu_seconds']:>9.2f}{r['rate']:>12.0f}"
        )
        if cuda:
            line += f"{r['mfu']:>8.1%}{r['peak_gib']:>10.1f}"
        print(line)
    print(
        "steps: timed/total optimizer steps; tokens, padding, seconds: timed steps only; CPU s: this process's CPU "
        f"time; real tokens = TRL's num_tokens: {all(r['trl_num_tokens_ok'] for _, _, r in runs)}"
    )
    if cuda:
        print(
            f"MFU = (4 x {info['n_body'] / 1e6:.0f}M body x real tokens + 4 x {info['n_head'] / 1e6:.0f}M head x "
            f"loss tokens) / s / {args.peak_tflops:.0f} TFLOP/s (LoRA: no weight gradients for frozen weights)"
        )
    best = {arm: max(r["rate"] for a, _, r in runs if a == arm) for arm in ("naive", "packed")}
    cpu = {arm: min(r["cpu_seconds"] / r["real"] for a, _, r in runs if a == arm) for arm in ("naive", "packed")}
    which = "" if args.repeats == 1 else f", best of {args.repeats} each"
    print(f"CPU time per real token, naive / packed: {cpu['naive'] / cpu['packed']:.2f}x{which}")
    print(f"speedup vs naive: {best['packed'] / best['naive']:.1f}x")


if __name__ == "__main__":
    main()
