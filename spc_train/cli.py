"""The `spc-train` command: one subcommand per stage, plus loop, check, report, reproduce, push, export, import-seed
and make-tiny.

Usage:
    spc-train loop --config recipes/tiny/loop.yaml --run_dir runs/demo [--section.field value ...]
    spc-train check --config recipes/qwen2.5-1.5b-instruct/loop.yaml
    spc-train generate --config RECIPE --run_dir RUN --iteration 0
    spc-train select --run_dir RUN --iteration 0 --critic.faithfulness_threshold 0.3
    spc-train report --run_dir RUN
    spc-train status --run_dir RUN
    spc-train reproduce --run_dir RUN --iteration 1
    spc-train push --run_dir RUN --repo_id ORG/NAME [--public] [--include_candidates]
    spc-train export --run_dir RUN --output spc.csv [--iteration K|all] [--what selected|candidates|sft]
    spc-train import-seed --input data.csv --output seed_ds [--format spc-csv] [--strict]
    spc-train make-tiny --output_dir tiny-models
    spc-train recipe-help [SECTION]

Stage commands read the recipe from `--config`, or from `RUN/recipe.yaml` when a run already exists; every recipe
field can be overridden as `--section.field value`. Commands that write hold `RUN/.lock`: one writer per run. Faults
end in one line (exit 2: input, 1: environment or unexpected, 130: interrupted); `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from functools import partial
from pathlib import Path

from .configs import SECTIONS

logger = logging.getLogger("spc_train")

# Stage subcommands: name -> whether it takes --iteration (the stages themselves: `loop.STAGES`).
STAGES = {
    "seed": False,
    "expand-personas": False,
    "build-profiles": False,
    "pair-users": False,
    "held-out": False,
    "probe-judges": False,
    "generate": True,
    "critique": True,
    "select": True,
    "sft-data": True,
    "train": True,
    "held-out-generations": True,
    "referee": True,
    "evaluate-seed": False,
    "evaluate": True,
    "report": False,
}


OVERRIDES = (
    "Commands that read a recipe also take any recipe field as --section.field VALUE (or --field VALUE when the name "
    "is unique); `spc-train recipe-help [SECTION]` lists the sections and fields with their defaults."
)


def make_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="Show the traceback of a fault (default: one line).")
    common.add_argument(
        "--verbose",
        action="store_true",
        help="Also the libraries' progress bars and log lines, and each stage's detail lines (default: quiet).",
    )
    parser = argparse.ArgumentParser(prog="spc-train", description=__doc__.split("\n\n")[0], parents=[common])
    parser.add_argument("--version", action="version", version=f"spc-train {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add = partial(commands.add_parser, parents=[common], epilog=OVERRIDES)

    loop = add("loop", help="Run (or resume) the whole Generator-Critic loop.")
    loop.add_argument("--config", required=True, help="Recipe YAML, e.g. recipes/tiny/loop.yaml.")
    loop.add_argument(
        "--run_dir", "--run-dir", required=True, help="Run directory (created, or resumed if it exists)."
    )

    check = add("check", help="Check a recipe before a run: models, answer options, seed; no writes.")
    check.add_argument("--config", required=True, help="Recipe YAML.")
    check.add_argument(
        "--probe",
        action="store_true",
        help="Also probe the recipe's judges on questions with known answers and print the judge card (minutes).",
    )

    status = add("status", help="Each stage of the run's recipe: done, stale (another recipe or inputs) or missing.")
    status.add_argument("--run_dir", "--run-dir", required=True, help="Run directory.")
    status.add_argument("--config", help="Recipe YAML to compare with (default: RUN/recipe.yaml).")

    for name, iterated in STAGES.items():
        stage = add(name, help=f"Run the `{name}` stage alone on a run directory.")
        stage.add_argument("--run_dir", "--run-dir", required=True)
        stage.add_argument("--config", help="Recipe YAML (default: RUN/recipe.yaml).")
        stage.add_argument(
            "--allow_stale", action="store_true", help="Run on inputs that the recipe, as it stands, would remake."
        )
        if iterated:
            stage.add_argument("--iteration", type=int, required=True)

    push = add("push", help="Upload a run's selected data and adapters to the Hugging Face Hub.")
    push.add_argument("--run_dir", "--run-dir", required=True, help="Run directory.")
    push.add_argument("--repo_id", required=True, help="ORG/NAME: the dataset repo and the adapter (model) repo.")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True, help="Private (default).")
    visibility.add_argument("--public", dest="private", action="store_false", help="Public repos.")
    push.add_argument("--include_candidates", action="store_true", help="Also upload every candidate with its scores.")

    export = add("export", help="Write a run's selected conversations (or candidates, SFT rows) out.")
    export.add_argument("--run_dir", "--run-dir", required=True, help="Run directory.")
    export.add_argument(
        "--output", required=True, help="SPC CSV (.csv), JSON Lines (.jsonl[.gz]), parquet (.parquet) or a folder."
    )
    export.add_argument("--iteration", default="last", help="An iteration number, `last` (default) or `all`.")
    export.add_argument(
        "--what",
        choices=["candidates", "selected", "sft"],
        default="selected",
        help="selected: the best conversation per pair; candidates: every candidate with its critique (scores, "
        "pairwise, reasons, passed, selected); sft: the prompt-completion rows the generator was trained on (JSON "
        "Lines, or a folder with train.jsonl and a card that `trl sft --dataset_name DIR` loads).",
    )

    again = add("reproduce", help="Re-run an iteration offline and compare it stage by stage.")
    again.add_argument("--run_dir", "--run-dir", required=True)
    again.add_argument("--iteration", type=int, required=True)
    again.add_argument("--work_dir", help="Where the re-run goes (default: a new temporary folder).")

    seed = add("import-seed", help="Read seed conversations into canonical records (a datasets folder).")
    seed.add_argument(
        "--input", required=True, help="SPC CSV, Persona-Chat txt, JSONL(.gz), datasets folder or Hub id."
    )
    seed.add_argument("--output", required=True, help="Output: a folder (datasets), or a .csv / .jsonl(.gz) file.")
    seed.add_argument("--format", choices=["spc-csv", "personachat", "jsonl", "dataset", "hub"])
    seed.add_argument("--split", help="Split of a DatasetDict folder or Hub dataset.")
    seed.add_argument("--limit", type=int, help="Keep the first N well-formed conversations.")
    seed.add_argument("--strict", action="store_true", help="Fail on any malformed row.")
    seed.add_argument("--normalize_names", action="store_true", help="Unify name placeholders like [user 1's name].")

    fields = add("recipe-help", help="List the recipe's sections and fields with their defaults and help texts.")
    fields.add_argument("section", nargs="?", choices=list(SECTIONS), help="One section (default: all but training).")

    tiny = add("make-tiny", help="Build the tiny offline generator, NLI and toxicity models.")
    tiny.add_argument("--output_dir", required=True)
    tiny.add_argument("--seed_path", help="Seed conversations (default: the SPC sample shipped in the package).")
    tiny.add_argument("--warm_start_steps", type=int, default=150)
    tiny.add_argument("--seed", type=int, default=0)
    return parser


def _recipe(args, overrides: list[str]):
    from .configs import parse_recipe

    config = args.config
    if config is None:
        config = Path(args.run_dir) / "recipe.yaml"
        if not config.exists():
            from .runs import StageInputError

            raise StageInputError(f"No --config given and {config} does not exist: pass --config RECIPE.")
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
    """A finished stage's rows of one iteration (or all), shaped for SPC tools, datasets and TRL (`export.py`)."""
    from .export import export_run

    loop = _run_loop(args.run_dir)
    recipe = {}
    if loop:
        from .critic.selection import filter_thresholds, grounding_rule

        recipe = {
            "current": loop.current_fingerprints(),
            "thresholds": filter_thresholds(loop.recipe.critic),
            "grounding": grounding_rule(loop.recipe.critic),
        }
    print(export_run(args.run_dir, args.output, what=args.what, iteration=args.iteration, **recipe))
    return 0


def _run_loop(run_dir: str):
    """The run's own recipe (`RUN/recipe.yaml`) as a Loop, to ask which stages are current; None for a folder
    assembled by hand, whose finished stages are then taken as they are."""
    from .configs import parse_recipe
    from .loop import Loop

    recipe = Path(run_dir) / "recipe.yaml"
    if not recipe.exists():
        logger.warning("%s has no recipe.yaml: its finished stages are taken as they are.", run_dir)
        return None
    return Loop(parse_recipe(recipe), run_dir)


def _current(run_dir: str) -> dict[str, str] | None:
    """The fingerprints the run's recipe gives its stages now: what push trusts."""
    loop = _run_loop(run_dir)
    return loop.current_fingerprints() if loop else None


def status(args, overrides: list[str]) -> int:
    """Each stage the recipe runs, in loop order, and whether its folder is what the recipe would make now."""
    from .loop import Loop

    plan = Loop(_recipe(args, overrides), args.run_dir).plan()
    width = max(len(label) for label in plan)
    for label, entry in plan.items():
        print(f"{label:<{width}}  {entry['state']}")
    counts = {state: sum(e["state"] == state for e in plan.values()) for state in ("done", "stale", "damaged")}
    todo = len(plan) - counts["done"]
    print(f"{counts['done']} of {len(plan)} stages done" + (f"; `spc-train loop` would run {todo}" if todo else ""))
    return 0


def report_read_only(loop) -> int:
    """`report` on a run directory this user cannot write: build it in a temporary folder and print it."""
    import tempfile

    from .critic.selection import filter_thresholds
    from .evaluation.summary import write_run_report

    loop.run.current = loop.current_fingerprints()
    with tempfile.TemporaryDirectory(prefix="spc-train-report-") as out:
        write_run_report(loop.run, Path(out), filter_thresholds(loop.recipe.critic))
        print((Path(out) / "report.md").read_text())
    logger.warning("%s is read-only: the report was printed, not saved.", loop.run.root)
    return 0


def _writable(folder: Path) -> bool:
    """Whether a file can be created in `folder` (`os.access` says yes to root on a read-only mount)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _os_error(error: OSError) -> str:
    """An environment fault in one line that says what to do."""
    where = f" ({error.filename})" if error.filename else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"no space left to write{where}: free some space, then re-run the same command to resume."
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where}: {error.strerror}. Use a writable --run_dir, or fix the permissions."
    if error.errno == errno.ENOENT:
        return f"no such file or folder{where}."
    return f"{error.strerror or error}{where}."


def reproduce(args) -> int:
    from .reproduce import format_results, reproduce

    results = reproduce(args.run_dir, args.iteration, args.work_dir)
    print(format_results(results))
    return 0 if all(r["fingerprint"] and r["output"] and r["on_disk"] for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args, overrides = make_parser().parse_known_args(argv)
    if args.command == "reproduce":  # before any Hugging Face library reads the setting
        os.environ["HF_HUB_OFFLINE"] = "1"
    from .console import configure

    configure(verbose=args.verbose)
    from .configs import RecipeError
    from .data import SeedDataError
    from .hub import HubOfflineError, PushError
    from .judge import JudgeError
    from .models import ModelNotFoundError
    from .nli import NliError
    from .personas import ProfileConstructionError
    from .runs import StageInputError

    try:
        return run_command(args, overrides)
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
        if args.debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130
    except OSError as error:
        if args.debug:
            raise
        print(f"error: {_os_error(error)}", file=sys.stderr)
        return 1
    except Exception as error:  # a fault this package did not foresee: still one line, the traceback on request
        if args.debug:
            raise
        print(f"error: {type(error).__name__}: {error} (re-run with --debug for the traceback)", file=sys.stderr)
        return 1


def run_command(args, overrides: list[str]) -> int:
    if args.command == "import-seed":
        return import_seed(args)
    if args.command == "make-tiny":
        return make_tiny(args)
    if args.command == "recipe-help":
        from .recipe_help import recipe_help

        print(recipe_help(args.section))
        return 0
    if args.command == "reproduce":
        return reproduce(args)
    if args.command == "export":
        return export(args)
    if args.command == "status":
        return status(args, overrides)
    from accelerate import PartialState

    from .runs import RunDir

    if args.command == "push":
        from .hub import push_run

        with RunDir(args.run_dir).lock():
            result = push_run(
                args.run_dir,
                args.repo_id,
                private=args.private,
                include_candidates=args.include_candidates,
                current=_current(args.run_dir),
            )
        print(result.summary())
        return 0
    from .evaluation.summary import format_summary
    from .loop import Loop

    if args.command == "check":
        from .preflight import check_recipe

        recipe = _recipe(args, overrides)
        lines = check_recipe(recipe)
        print("\n".join(["recipe checked:", *(f"  {line}" for line in lines)]))
        if args.probe and lines[0].startswith("tiny models: not built"):
            logger.warning("Judges not probed: the tiny models are not built yet (`spc-train loop` builds them).")
        elif args.probe:
            from .health.card import render_card
            from .health.stages import probe_recipe

            print("\njudge card:\n" + render_card(probe_recipe(recipe)))
        return 0
    loop = Loop(_recipe(args, overrides), args.run_dir, allow_stale=getattr(args, "allow_stale", False))
    # After the recipe: parsing its training section sets up accelerate's state (CPU or GPU, one or more processes).
    main_process = PartialState().is_main_process
    if args.command == "report" and loop.run.root.is_dir() and not _writable(loop.run.root):
        return report_read_only(loop)
    with loop.run.lock(main_process):
        if args.command == "loop":
            loop.run_all()
            if main_process:
                loop.run.current = loop.current_fingerprints()  # the iterations of this recipe, as it stands, only
                print(format_summary(loop.run))
            return 0
        loop.refuse_stale_inputs()
        loop.prepare()
        loop.run_stage(args.command, args.iteration if STAGES[args.command] else None)
        return 0


if __name__ == "__main__":
    sys.exit(main())
