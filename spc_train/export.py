"""`spc-train export`: a run's selection, candidates or SFT rows, shaped for the tools people already use.

Candidates come with their critiques (scores, pairwise, reasons, passed, selected); SFT rows go to a folder holding
`train.jsonl` and a dataset card, which `datasets.load_dataset(DIR)` and `trl sft --dataset_name DIR` both load.
"""

from __future__ import annotations

from pathlib import Path

from .data import export_records
from .data.writers import JSONL_SUFFIXES, write_jsonl
from .runs import RunDir, StageInputError, load_rows

# `--what` -> the stage folder it reads in each iteration.
EXPORTS = {"selected": "selected", "candidates": "critiques", "sft": "train"}


def choose_iterations(run: RunDir, stage: str, iteration: str) -> list[int]:
    finished = run.finished(stage)
    if not finished:
        raise StageInputError(
            f"{run.root} has no finished `{stage}` stage to export: run `spc-train loop` on it first."
        )
    if iteration in ("last", "all"):
        return finished[-1:] if iteration == "last" else finished
    if iteration.isdigit() and int(iteration) in finished:
        return [int(iteration)]
    raise StageInputError(
        f"--iteration {iteration}: {run.root} has finished `{stage}` in iterations {finished}; "
        "give one of them, `last` or `all`."
    )


def candidate_rows(run: RunDir, iteration: int, thresholds: dict[str, float] | None, grounding=None) -> list[dict]:
    """Every candidate of an iteration with its critique, whether it passed the filters (`thresholds`, the run's
    recipe; None without one) and whether the selection chose it."""
    from .critic.selection import passes

    chosen = {(row["pair_id"], row["candidate"]) for row in load_rows(run.stage_dir("selected", iteration))}
    rows = load_rows(run.stage_dir("critiques", iteration))
    for row in rows:
        row["passed"] = passes(row, thresholds, grounding) if thresholds is not None else None
        row["selected"] = (row["pair_id"], row["candidate"]) in chosen
    return rows


def sft_card(run: RunDir, iterations: list[int], rows: int) -> str:
    recipe = run.root / "recipe.yaml"
    return f"""---
task_categories: [text-generation]
tags: [synthetic-persona-chat, spc_train, sft]
---
# SFT rows of `{run.root.name}`

{rows} prompt-completion rows (conversational: `prompt` is the paper's zero-shot generator prompt with both user
profiles, `completion` the conversation the critic selected) from iterations {", ".join(map(str, iterations))} of an
spc_train run (the Generator-Critic loop of Synthetic-Persona-Chat). The run's recipe was `{recipe.name}`.

```bash
trl sft --model_name_or_path <base model> --dataset_name <this folder> --use_peft --output_dir sft-out
```

```python
from datasets import load_dataset
rows = load_dataset("<this folder>", split="train")
```
"""


def export_run(
    run_dir: str | Path,
    output: str | Path,
    *,
    what: str,
    iteration: str,
    current: dict | None = None,
    thresholds: dict[str, float] | None = None,
    grounding: tuple[str, float | None] | None = None,
) -> str:
    """Write the rows and return the lines to print (what was written, and what was left out and why).
    `current`, `thresholds` and `grounding` come from the run's recipe (`Loop.current_fingerprints` and the rest)."""
    run = RunDir(run_dir, current)
    chosen = choose_iterations(run, EXPORTS[what], iteration)
    name = str(output).lower()
    if what == "candidates":
        rows = [row for k in chosen for row in candidate_rows(run, k, thresholds, grounding)]
    else:
        rows = [row for k in chosen for row in load_rows(run.stage_dir(EXPORTS[what], k))]
    if what == "sft":
        if not name.endswith(JSONL_SUFFIXES) and Path(name).suffix:
            raise StageInputError(
                "SFT rows are prompt-completion pairs, not conversations: export .jsonl or a folder."
            )
        rows = [{"prompt": row["prompt"], "completion": row["completion"]} for row in rows]
        if name.endswith(JSONL_SUFFIXES):
            write_jsonl(rows, output)
        else:  # a folder that `load_dataset(DIR)` and `trl sft --dataset_name DIR` read, with its card
            Path(output).mkdir(parents=True, exist_ok=True)
            write_jsonl(rows, Path(output) / "train.jsonl")
            (Path(output) / "README.md").write_text(sft_card(run, chosen, len(rows)))
    else:
        try:
            export_records(rows, output)
        except ValueError as error:
            raise StageInputError(str(error)) from None
    lines = [f"wrote {len(rows)} {what} rows of {', '.join(f'iter-{k:02d}' for k in chosen)} to {output}"]
    lines += [f"left out {label}: {why}" for label, why in run.left_out.items()]
    return "\n".join(lines)
