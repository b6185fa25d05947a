"""LoRA (or QLoRA) fine-tuning of the generator with TRL's `SFTTrainer`.

Two update modes (recipe `loop.update`): `continue` trains the previous iteration's adapter further on the new
selection; `fresh` trains a new adapter from the base on everything selected so far. The saved adapter is an ordinary
PEFT folder: `PeftModel.from_pretrained(base, path)` loads it with no help from this package.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

logger = logging.getLogger(__name__)


def lora_config(model_args):
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
        task_type="CAUSAL_LM",
    )


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
    )
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    if last:
        logger.info("Resuming training from %s.", last)
    result = trainer.train(resume_from_checkpoint=last)
    trainer.save_model(str(output_dir))  # the adapter and tokenizer, written by the main process only
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "train_loss": round(result.training_loss, 6),
        "final_loss": losses[-1] if losses else result.training_loss,
        "steps": trainer.state.global_step,
        "rows": len(rows),
        "init_adapter": init_adapter,
        "resumed_from": Path(last).name if last else None,
        "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "loss_is_finite": math.isfinite(result.training_loss),
    }
