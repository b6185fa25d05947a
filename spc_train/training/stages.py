"""The training room's stages: the iteration's SFT rows, then LoRA SFT with TRL that updates the generator."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ..runs import StageInputError, save_rows
from ..stage import Input, Stage, StageContext

logger = logging.getLogger(__name__)

# Over this many passes over the selection, LoRA SFT memorizes its few rows (SmolLM2, docs/real-models.md): the
# next iteration repeats their sentences in loops.
MANY_EPOCHS = 10

# What `models.load_tokenizer` reads of the generator's spec (seed replay counts tokens with it)
TOKENIZER_FIELDS = ("model.name_or_path", "model.revision", "model.gguf_file", "model.trust_remote_code")


def _data_inputs(selected, k: int) -> list[Input]:
    """`continue` trains on this iteration's selection; `fresh` on everything selected so far; seed replay reads the
    seed and the pairs (whose own conversations it leaves out)."""
    first = k if selected.loop.update == "continue" else 0
    replay = [Input("seed"), Input("pairs")] if selected.loop.replay_seed else []
    if replay and selected.referee.held_out_pairs:
        replay.append(Input("held-out"))  # the referee's pairs: their users are never replayed either
    return [Input("selected", j) for j in range(first, k + 1)] + replay


def sft_data(ctx: StageContext):
    from ..models import load_tokenizer
    from .data import replay_records, sft_rows

    config, k = ctx.config, ctx.iteration
    records = [row for i in ctx.inputs if i.name == "selected" for row in ctx.rows(i.name, i.iteration)]
    replayed = []
    if config.loop.replay_seed:
        replayed = replay_records(
            ctx.rows("seed"),
            ctx.rows("pairs") + (ctx.rows("held-out") if ctx.declares("held-out") else []),
            config.loop.replay_seed,
            tokenizer=load_tokenizer(config.model),
            max_new_tokens=config.loop.replay_max_tokens or config.generation.max_new_tokens,
            min_turns=config.generation.min_turns,
            rng_seed=f"{config.loop.seed}-{k}-replay",
        )
        if len(replayed) < config.loop.replay_seed:
            logger.warning(
                "Iteration %d: seed replay found %d of the %d conversations asked for (loop.replay_seed): seed "
                "conversations sharing no user with the run's (or the referee's) pairs, with %d turns "
                "(generation.min_turns) or more within loop.replay_max_tokens (or generation.max_new_tokens)."
                " A larger seed, or fewer pairs, may help.",
                k,
                len(replayed),
                config.loop.replay_seed,
                config.generation.min_turns,
            )

    def write(out: Path) -> dict:
        rows = sft_rows(records + replayed)
        save_rows(rows, out)
        return {"rows": len(rows), "selected_rows": len(records), "replayed_rows": len(replayed)}

    return write


def _train_inputs(selected, k: int) -> list[Input]:
    previous = [Input("adapter", k - 1)] if k and selected.loop.update == "continue" else []
    return [Input("train", k), *previous]


def train(ctx: StageContext):
    """LoRA SFT. Every process trains (DDP/FSDP/ZeRO under `accelerate launch`); checkpoints go to a scratch folder
    of this fingerprint, so a killed run resumes from its last checkpoint; the main process saves."""
    from datasets import load_from_disk

    from .sft import train_adapter

    k = ctx.iteration
    init = next((str(ctx.input("adapter", i.iteration)) for i in ctx.inputs if i.name == "adapter"), None)
    init_label = next((f"iter-{i.iteration:02d}/adapter" for i in ctx.inputs if i.name == "adapter"), None)
    scratch = ctx.scratch("checkpoints")
    rows = load_from_disk(str(ctx.input("train", k)), keep_in_memory=True)  # no cache files in the run
    if len(rows) == 0:
        raise StageInputError(
            f"No conversation passed the critic at iteration {k}, so there is nothing to train on "
            f"(see {ctx.run.stage_dir('selected', k)}/stage.json). Lower the critic thresholds, "
            "sample more candidates, or set loop.train: false."
        )
    args = ctx.config.sft_config(output_dir=str(scratch), seed=ctx.config.loop.seed + k)
    stats: dict[str, Any] = train_adapter(rows, ctx.config.model, args, scratch / "final", init_adapter=init)

    def write(out: Path) -> dict:
        if stats.get("epochs", 0) > MANY_EPOCHS:
            logger.warning(
                "Iteration %d: LoRA SFT made %d steps over %d rows, %.0f epochs, so the adapter may memorize them and "
                "the next iteration loop on their sentences. Fewer epochs (training.num_train_epochs, with "
                "training.max_steps: -1 so the steps follow the selection's size) or more rows may help.",
                k,
                stats["steps"],
                stats["rows"],
                stats["epochs"],
            )
        for path in (scratch / "final").iterdir():
            if path.name != "training_args.bin":  # a pickle of this run's paths; the recipe has the values
                shutil.move(str(path), out / path.name)
        shutil.rmtree(scratch)
        write_card(out, k, ctx.config, {**stats, "init_adapter": init_label})
        return stats

    return write


def _said_rows(summary: dict) -> str:
    replayed = summary.get("replayed_rows")
    return f"{summary['rows']} prompt-completion rows" + (f" ({replayed} replayed from the seed)" if replayed else "")


def _said_train(summary: dict) -> str:
    return f"LoRA adapter, {summary['steps']} steps, train loss {summary['train_loss']:.3f}"


def write_card(adapter_dir: Path, k: int, config, stats: dict[str, Any]) -> None:
    """The adapter's model card (`hub_cards.local_model_card`) in place of PEFT's empty template: base model, data,
    training settings and losses. Written before the stage lists its files, and deterministic (no time, no run
    path): it counts in the stage's output hash, which `spc-train reproduce` compares."""
    from ..hub_cards import local_model_card

    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    training = {**config.section("training"), "seed": config.loop.seed + k}  # as the stage trains: its seed,
    if training.get("completion_only_loss") is None:  # and the loss on completions unless the recipe says otherwise
        training["completion_only_loss"] = True
    card = local_model_card(k, adapter_config, training, stats, config.loop.update)
    (adapter_dir / "README.md").write_text(card, encoding="utf-8")


SFT_DATA = Stage(
    name="train",
    command="sft-data",
    reads=(
        "loop.update",
        "loop.replay_seed",  # with what it reads: the seed for the draw, and the generator's tokenizer and budget
        "loop.replay_max_tokens",
        "referee.held_out_pairs",
        "loop.seed",
        *TOKENIZER_FIELDS,
        "generation.max_new_tokens",
        "generation.min_turns",
    ),
    work=sft_data,
    inputs=_data_inputs,
    per_iteration=True,
    describe=_said_rows,
)
TRAIN = Stage(
    name="adapter",
    command="train",
    reads=("training", "model", "loop.seed", "loop.update"),
    work=train,
    inputs=_train_inputs,
    roles=("generator",),
    per_iteration=True,
    describe=_said_train,
)
