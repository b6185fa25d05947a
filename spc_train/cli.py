"""The `spc-train` command: one subcommand per stage, plus loop, check, report, reproduce, push, export, import-seed
and make-tiny.

Usage:
    spc-train loop --config recipes/tiny/loop.yaml --run_dir runs/demo [--section.field value ...]
    spc-train check --config recipes/qwen2.5-1.5b-instruct/loop.yaml
    spc-train generate --config RECIPE --run_dir RUN --iteration 0
    spc-train select --run_dir RUN --iteration 0 --critic.faithfulness_threshold 0.3
    spc-train report --run_dir RUN
    spc-train reproduce --run_dir RUN --iteration 1
    spc-train push RUN --repo_id ORG/NAME [--public] [--include_candidates]
    spc-train export RUN --output spc.csv [--iteration K|all] [--what selected|candidates|sft]
    spc-train import-seed --input data.csv --output seed_ds [--format spc-csv] [--strict]
    spc-train make-tiny --output_dir tiny-models

Stage commands read the recipe from `--config`, or from `RUN/recipe.yaml` when a run already exists; every recipe
field can be overridden as `--section.field value`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("spc_train")

# `export --what` -> the stage folder it reads in each iteration.
EXPORTS = {"selected": "selected", "candidates": "candidates", "sft": "train"}

# Stage subcommands: name -> (Loop method, whether it takes --iteration).
STAGES = {
    "seed": ("stage_seed", False),
    "expand-personas": ("stage_personas", False),
    "build-profiles": ("stage_profiles", False),
    "pair-users": ("stage_pairs", False),
    "generate": ("stage_generate", True),
    "critique": ("stage_critique", True),
    "select": ("stage_select", True),
    "sft-data": ("stage_sft_data", True),
    "train": ("stage_train", True),
    "evaluate-seed": ("stage_evaluate_seed", False),
    "evaluate": ("stage_evaluate", True),
    "report": ("stage_report", False),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spc-train", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    loop = commands.add_parser("loop", help="Run (or resume) the whole Generator-Critic loop.")
    loop.add_argument("--config", required=True, help="Recipe YAML, e.g. recipes/tiny/loop.yaml.")
    loop.add_argument("--run_dir", required=True, help="Run directory (created, or resumed if it exists).")

    check = commands.add_parser("check", help="Check a recipe before a run: models, answer options, seed; no writes.")
    check.add_argument("--config", required=True, help="Recipe YAML.")

    for name, (_, iterated) in STAGES.items():
        stage = commands.add_parser(name, help=f"Run the `{name}` stage alone on a run directory.")
        stage.add_argument("--run_dir", required=True)
        stage.add_argument("--config", help="Recipe YAML (default: RUN/recipe.yaml).")
        if iterated:
            stage.add_argument("--iteration", type=int, required=True)

    push = commands.add_parser("push", help="Upload a run's selected data and adapters to the Hugging Face Hub.")
    push.add_argument("run_dir", help="Run directory.")
    push.add_argument("--repo_id", required=True, help="ORG/NAME: the dataset repo and the adapter (model) repo.")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True, help="Private (default).")
    visibility.add_argument("--public", dest="private", action="store_false", help="Public repos.")
    push.add_argument("--include_candidates", action="store_true", help="Also upload every candidate with its scores.")

    export = commands.add_parser("export", help="Write a run's selected conversations (or candidates, SFT rows) out.")
    export.add_argument("run_dir", help="Run directory.")
    export.add_argument("--output", required=True, help="SPC CSV (.csv), JSON Lines (.jsonl[.gz]) or a folder.")
    export.add_argument("--iteration", default="last", help="An iteration number, `last` (default) or `all`.")
    export.add_argument(
        "--what",
        choices=sorted(EXPORTS),
        default="selected",
        help="selected: the best conversation per pair; candidates: every candidate with its scores; sft: the "
        "prompt-completion rows the generator was trained on (JSON Lines or a folder).",
    )

    again = commands.add_parser("reproduce", help="Re-run an iteration offline and compare it stage by stage.")
    again.add_argument("--run_dir", required=True)
    again.add_argument("--iteration", type=int, required=True)
    again.add_argument("--work_dir", help="Where the re-run goes (default: a new temporary folder).")

    seed = commands.add_parser(
        "import-seed", help="Read seed conversations into canonical records (a datasets folder)."
    )
    seed.add_argument(
        "--input", required=True, help="SPC CSV, Persona-Chat txt, JSONL(.gz), datasets folder or Hub id."
    )
    seed.add_argument("--output", required=True, help="Output: a folder (datasets), or a .csv / .jsonl(.gz) file.")
    seed.add_argument("--format", choices=["spc-csv", "personachat", "jsonl", "dataset", "hub"])
    seed.add_argument("--split", help="Split of a DatasetDict folder or Hub dataset.")
    seed.add_argument("--limit", type=int, help="Keep the first N well-formed conversations.")
    seed.add_argument("--strict", action="store_true", help="Fail on any malformed row.")
    seed.add_argument("--normalize_names", action="store_true", help="Unify name placeholders like [user 1's name].")

    tiny = commands.add_parser("make-tiny", help="Build the tiny offline generator, NLI and toxicity models.")
    tiny.add_argument("--output_dir", required=True)
    tiny.add_argument("--seed_path", help="Seed conversations (default: the SPC sample shipped in the package).")
    tiny.add_argument("--warm_start_steps", type=int, default=150)
    tiny.add_argument("--seed", type=int, default=0)
    return parser


def _setup_logging() -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _recipe(args, overrides: list[str]):
    from .configs import parse_recipe

    config = args.config
    if config is None:
        config = Path(args.run_dir) / "recipe.yaml"
        if not config.exists():
            raise SystemExit(f"No --config given and {config} does not exist: pass --config RECIPE.")
    return parse_recipe(config, overrides)


def import_seed(args) -> int:
    from .data import export_records, read_seed

    result = read_seed(
        args.input,
        args.format,
        strict=args.strict,
        split=args.split,
        limit=args.limit,
        normalize_names=args.normalize_names,
    )
    export_records(result.records, args.output)
    print(result.summary())
    print(f"rows read: {result.rows_read}, kept: {len(result.records)}, malformed: {len(result.malformed)}")
    print(f"wrote {len(result.records)} records to {args.output}")
    return 0


def make_tiny(args) -> int:
    from .tiny import build_tiny_models

    report = build_tiny_models(args.output_dir, args.seed_path, warm_start_steps=args.warm_start_steps, seed=args.seed)
    print(f"tiny models in {args.output_dir} ({report['seconds']}s)")
    print(f"  generator: {report['generator_parameters']:,} parameters, vocabulary {report['vocab_size']}")
    print(f"  parse rate of one-shot samples after warm-start: {report['parse_rate']:.0%}")
    for name, accuracy in report["classifier_train_accuracy"].items():
        print(f"  {name} classifier training accuracy: {accuracy:.0%}")
    return 0


def export(args) -> int:
    """A finished stage's rows of one iteration (or all) as SPC CSV, JSON Lines or a datasets folder."""
    from .data import export_records
    from .runs import RunDir, StageInputError, load_rows, save_rows

    run, stage = RunDir(args.run_dir), EXPORTS[args.what]
    finished = run.finished(stage)
    if not finished:
        raise StageInputError(
            f"{run.root} has no finished `{stage}` stage to export: run `spc-train loop` on it first."
        )
    if args.iteration in ("last", "all"):
        chosen = finished[-1:] if args.iteration == "last" else finished
    elif args.iteration.isdigit() and int(args.iteration) in finished:
        chosen = [int(args.iteration)]
    else:
        raise StageInputError(
            f"--iteration {args.iteration}: {run.root} has finished `{stage}` in iterations {finished}; "
            "give one of them, `last` or `all`."
        )
    rows = [row for k in chosen for row in load_rows(run.stage_dir(stage, k))]
    name = str(args.output).lower()
    if args.what == "sft" and name.endswith(".csv"):
        raise StageInputError("SFT rows are prompt-completion pairs, not conversations: export .jsonl or a folder.")
    if args.what == "sft" and ".json" not in name:  # a plain folder: the conversation record features do not apply
        save_rows(rows, Path(args.output))
    else:
        export_records(rows, args.output)
    iterations = ", ".join(f"iter-{k:02d}" for k in chosen)
    print(f"wrote {len(rows)} {args.what} rows of {iterations} to {args.output}")
    return 0


def reproduce(args) -> int:
    from .reproduce import format_results, reproduce

    results = reproduce(args.run_dir, args.iteration, args.work_dir)
    print(format_results(results))
    return 0 if all(r["fingerprint"] and r["output"] and r["on_disk"] for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args, overrides = make_parser().parse_known_args(argv)
    if args.command == "reproduce":  # before any Hugging Face library reads the setting
        os.environ["HF_HUB_OFFLINE"] = "1"
    _setup_logging()
    from .configs import RecipeError
    from .data import SeedDataError
    from .hub import HubOfflineError, PushError
    from .judge import JudgeError
    from .models import ModelNotFoundError
    from .nli import NliError
    from .personas import ProfileConstructionError
    from .runs import StageInputError

    try:
        if args.command == "import-seed":
            return import_seed(args)
        if args.command == "make-tiny":
            return make_tiny(args)
        if args.command == "reproduce":
            return reproduce(args)
        if args.command == "export":
            return export(args)
        if args.command == "push":
            from .hub import push_run

            result = push_run(
                args.run_dir, args.repo_id, private=args.private, include_candidates=args.include_candidates
            )
            print(result.summary())
            return 0
        from .evaluation.summary import format_summary
        from .loop import Loop

        if args.command == "check":
            from .preflight import check_recipe

            lines = check_recipe(_recipe(args, overrides))
            print("\n".join(["recipe checked:", *(f"  {line}" for line in lines)]))
            return 0
        loop = Loop(_recipe(args, overrides), args.run_dir)
        if args.command == "loop":
            loop.run_all()
            from accelerate import PartialState

            if PartialState().is_main_process:
                print(format_summary(loop.run))
            return 0
        method, iterated = STAGES[args.command]
        loop.prepare()
        getattr(loop, method)(*([args.iteration] if iterated else []))
        return 0
    except (
        RecipeError,
        SeedDataError,
        StageInputError,
        ModelNotFoundError,
        NliError,
        JudgeError,
        ProfileConstructionError,
        HubOfflineError,
        PushError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
