"""LoRA (or QLoRA) fine-tuning of the generator with TRL's `SFTTrainer`.

Two update modes (recipe `loop.update`): `continue` trains the previous iteration's adapter further on the new
selection; `fresh` trains a new adapter from the base on everything selected so far. The saved adapter is an ordinary
PEFT folder: `PeftModel.from_pretrained(base, path)` loads it with no help from this package.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# `Trainer._save_checkpoint` writes the trainer state last: a checkpoint without a readable one was cut short.
TRAINER_STATE = "trainer_state.json"


def complete_checkpoint(output_dir: str | Path) -> str | None:
    """The last checkpoint in `output_dir` that was written to the end; incomplete ones (a full disk, a kill while
    saving) are set aside as `incomplete-checkpoint-N` with a warning, so training resumes from the one before, or
    from the start."""
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(output_dir)
    while output_dir.is_dir() and (last := get_last_checkpoint(str(output_dir))):
        try:
            json.loads((Path(last) / TRAINER_STATE).read_text())
            return last
        except (OSError, ValueError):
            aside = Path(last).with_name(f"incomplete-{Path(last).name}")
            os.replace(last, aside)
            logger.warning("%s is incomplete (no readable %s): set aside as %s.", last, TRAINER_STATE, aside.name)
    return None


def _loss_sum_before(state, step: int) -> float:
    """The summed per-step loss of steps 1..`step`, from the log history a checkpoint restores (`LogAtSave` makes
    the logged intervals cover every step up to each checkpoint)."""
    total, previous = 0.0, 0
    for entry in state.log_history:
        if "loss" in entry and entry["step"] <= step:
            total += entry["loss"] * (entry["step"] - previous)
            previous = entry["step"]
    return total


def _log_at_save():
    from transformers import TrainerCallback

    class LogAtSave(TrainerCallback):
        """Log the loss at every checkpoint, so a resumed run can report the loss over all steps, not only its own."""

        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save:
                control.should_log = True
            return control

    return LogAtSave()


def make_portable(adapter_dir: Path, base: str) -> None:
    """`adapter_config.json` as the same run writes it on any machine: the base as the recipe's Hub id or an absolute
    path (a relative one only resolves from the run's working directory), and sorted `target_modules` (PEFT keeps
    a set, whose order changes between processes)."""
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    local = Path(base).expanduser()
    config["base_model_name_or_path"] = str(local.resolve()) if local.exists() else base
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def lora_config(model_args):
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
        task_type="CAUSAL_LM",
    )


def quiet_trainer(trainer) -> None:
    """The Trainer's step bar on a terminal only, and its log lines with `--verbose` only: the loss is in the
    stage's line and `stage.json` (`console.py`)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from ..console import library_bars_enabled, on_terminal

    if not on_terminal():
        trainer.remove_callback(ProgressCallback)
    if not library_bars_enabled():
        trainer.remove_callback(PrinterCallback)
    elif not on_terminal():
        trainer.remove_callback(PrinterCallback)  # at most one
        trainer.add_callback(PrinterCallback)


def train_adapter(rows, model_args, args, output_dir: Path, *, init_adapter: str | None = None) -> dict:
    """Train on `rows` (a `datasets.Dataset` of prompt/completion) and save the adapter to `output_dir`.

    `args` is the run's `SFTConfig`; its `output_dir` holds checkpoints, and training resumes from the last one found
    there. Loss is on the completion only unless the recipe says otherwise.
    """
    from trl import SFTTrainer

    from ..models import load_causal_lm, load_tokenizer

    if args.completion_only_loss is None:
        args.completion_only_loss = True
    tokenizer = load_tokenizer(model_args, padding_side="right")
    model = load_causal_lm(model_args, adapter=init_adapter, trainable=True)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=rows.select_columns(["prompt", "completion"]),
        processing_class=tokenizer,
        peft_config=None if init_adapter else lora_config(model_args),
        callbacks=[_log_at_save()],
    )
    quiet_trainer(trainer)
    last = complete_checkpoint(args.output_dir)
    if last:
        logger.info("Resuming training from %s.", last)
    result = trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(output_dir))  # the adapter and tokenizer, written by the main process only
    if trainer.is_world_process_zero():
        make_portable(Path(output_dir), model_args.name_or_path)
    # `training_loss` averages the steps of this call only; a resumed run adds those before its checkpoint.
    steps, resumed_at = trainer.state.global_step, int(Path(last).name.rsplit("-", 1)[1]) if last else 0
    done_here = result.training_loss * (steps - resumed_at)
    train_loss = (done_here + _loss_sum_before(trainer.state, resumed_at)) / max(steps, 1)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "train_loss": round(train_loss, 6),
        "final_loss": losses[-1] if losses else result.training_loss,
        "steps": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0.0, 2),
        "rows": len(rows),
        "init_adapter": init_adapter,
        "resumed_from": Path(last).name if last else None,
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "loss_is_finite": math.isfinite(train_loss),
    }
