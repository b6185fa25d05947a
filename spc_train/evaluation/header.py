"""The report's header: what made the run (recipe, models, packages), when, and what changed across its iterations.

A report is shared without its run directory, so the header carries what a reader needs to trust or reproduce it:
the recipe's hash, each model's revision or weights hash, the package versions (all from `RUN/manifest.json`), and
three lines of the metrics that move most between the seed and the last iteration. Paths are shown relative to the
run directory, or by their last part when they lie elsewhere: the machine's folders say nothing to a reader.
The date is the last evaluation's, not today's, so the same run always gives the same report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from ..health.card import at_chance
from ..runs import RunDir, file_sha256, read_stage

KEY_PACKAGES = ("spc_train", "transformers", "trl", "peft", "torch", "datasets", "accelerate", "python")
# Models the recipe names that `manifest.json` may not identify: role -> (recipe section, field).
RECIPE_MODELS = {
    "embedder": ("personas", "embedder"),
    "critic embedder": ("critic", "embedder"),
    "critic nli": ("critic", "nli_model"),
}
# The "what changed" lines: (label, [(metric, name, format)]); a metric without values is left out.
CHANGES = [
    (
        "Loop",
        [
            ("parse_rate", "parse rate", "{:.0%}"),
            ("stopped_rate", "stopped", "{:.0%}"),
            ("complete_rate", "parsed and stopped", "{:.0%}"),
            ("pass_rate", "pass rate", "{:.0%}"),
            ("selected", "selected", "{:.0f}"),
            ("sft_loss", "SFT loss", "{:.3f}"),
        ],
    ),
    (
        "Persona",
        [
            ("persona_grounding_candidates_mean", "grounding", "{:.3f}"),
            ("faithfulness_mean", "P(contradiction)", "{:.3f}"),
            ("persona_embedding_coverage", "persona coverage", "{:.0%}"),
            ("extraction_precision", "extraction precision", "{:.2f}"),
        ],
    ),
    (
        "Data",
        [
            ("distinct_2", "distinct-2", "{:.3f}"),
            ("detection_lose", "AI-detected", "{:.0%}"),
            ("toxicity_mean", "P(toxic)", "{:.3f}"),
        ],
    ),
]


def shown_path(path: str | Path | None, root: Path) -> str:
    """`path` relative to the run directory; a relative path elsewhere as given; an absolute one by its name."""
    if not path:
        return "?"
    path = Path(path)
    for base in (root, root.resolve()):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            pass
    return f"…/{path.name}" if path.is_absolute() else path.as_posix()


def _identity_text(identity: dict | None, root: Path) -> str:
    """A `models.identity`: its name, then its GGUF file, revision, commit or weights hash."""
    if not identity:
        return "not used"
    parts = [f"`{identity.get('id') or shown_path(identity.get('path'), root)}`"]
    if identity.get("gguf_file"):
        parts.append(f"file `{identity['gguf_file']}`")
    if identity.get("revision") and identity.get("revision") != identity.get("commit"):
        parts.append(f"revision `{identity['revision']}`")
    if identity.get("commit"):
        parts.append(f"commit `{identity['commit'][:12]}`")
    if identity.get("sha256"):
        parts.append(f"sha256 `{identity['sha256'][:12]}`")
    if len(parts) == 1:
        parts.append("no revision or hash recorded")
    return " · ".join(parts)


def model_text(value: Any, root: Path) -> str:
    """A manifest model entry: a bare identity (classifiers), or a spec's (LLMs: plus adapter, dtype, 4-bit)."""
    if not (isinstance(value, dict) and "model" in value):
        return _identity_text(value, root)
    text = _identity_text(value["model"], root)
    if value.get("adapter"):
        text += " + adapter " + _identity_text(value["adapter"], root)
    if value.get("dtype"):
        text += f" · {value['dtype']}"
    if value.get("load_in_4bit"):
        text += " · 4-bit"
    return text


def model_lines(run: RunDir, manifest: dict) -> list[str]:
    """One line per model role of the manifest, then the recipe's models the manifest does not identify."""
    models = manifest.get("models") or {}
    lines = []
    for role, value in models.items():
        if role == "judge" and value == models.get("generator"):
            lines.append("  - judge: the generator's base model (same identity)")
        else:
            lines.append(f"  - {role}: {model_text(value, run.root)}")
    try:
        recipe = yaml.safe_load((run.root / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        recipe = {}
    named: dict[str, list[str]] = {}
    for role, (section, field) in RECIPE_MODELS.items():
        value = (recipe.get(section) or {}).get(field)
        if value and role not in models:
            named.setdefault(value, []).append(role)
    for value, roles in named.items():
        where = shown_path(value, run.root)
        lines.append(f"  - {', '.join(roles)}: `{where}` · named in the recipe, no revision or hash recorded")
    return lines


def _run_date(run: RunDir, iterations: list[int]) -> str | None:
    """The day the last evaluation of the report's columns finished (`finished_at` of their stage records)."""
    folders = [run.stage_dir("eval")] + [run.stage_dir("eval", k) for k in iterations]
    stamps = [(read_stage(folder) or {}).get("finished_at") for folder in folders]
    stamps = [stamp for stamp in stamps if stamp]
    return max(stamps)[:10] if stamps else None


def _measured(value: Any) -> bool:
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def change_lines(columns: list[str], metrics: dict[str, dict[str, Any]], card: dict | None = None) -> list[str]:
    """Each `CHANGES` line: every metric from its first column with a value (the seed where measured) to its last."""
    lines = []
    for label, entries in CHANGES:
        parts = []  # (span, text)
        for metric, name, fmt in entries:
            row = metrics.get(metric) or {}
            measured = [column for column in columns if _measured(row.get(column))]
            if not measured:
                continue
            first, last = measured[0], measured[-1]
            name += " ⚠" if at_chance(card, metric) else ""
            if first == last:
                parts.append((last, f"{name} {fmt.format(row[last])}"))
            else:
                parts.append((f"{first} → {last}", f"{name} {fmt.format(row[first])} → {fmt.format(row[last])}"))
        spans = {span for span, _ in parts}
        if len(spans) == 1:  # the span once, for the whole line
            lines.append(f"- {label} ({spans.pop()}): " + "; ".join(text for _, text in parts) + ".")
        elif parts:
            lines.append(f"- {label}: " + "; ".join(f"{text} ({span})" for span, text in parts) + ".")
    return lines


def run_header(
    run: RunDir, columns: list[str], metrics: dict[str, dict[str, Any]], card: dict | None = None
) -> list[str]:
    """The report's first section, as markdown lines."""
    manifest = run.manifest()
    recipe_file = run.root / "recipe.yaml"
    source = shown_path(manifest["recipe"], run.root) if manifest.get("recipe") else "recipe.yaml"
    # A stage command run without --config records the run's own copy: its source file is then unknown.
    if source == "recipe.yaml":
        recipe = "the run's `recipe.yaml` (its source file is not recorded)"
    else:
        recipe = f"`{source}`, copied to the run's `recipe.yaml`"
    if recipe_file.is_file():
        recipe += f" · sha256 `{file_sha256(recipe_file)[:12]}`"
    if manifest.get("seed") is not None:
        recipe += f" · loop seed {manifest['seed']}"
    iterations = [int(column[5:]) for column in columns if column.startswith("iter-")]
    date = _run_date(run, iterations)
    packages = manifest.get("packages") or {}
    versions = " · ".join(f"{name} {packages.get(name) or '–'}" for name in KEY_PACKAGES)
    lines = ["## Run", "", f"- **Recipe:** {recipe}"]
    lines.append(f"- **Date:** {date} (the last evaluation finished)" if date else "- **Date:** not recorded")
    lines += ["- **Models:**"] + (model_lines(run, manifest) or ["  - not recorded"])
    lines += [f"- **Packages:** {versions}" if packages else "- **Packages:** not recorded", ""]
    changes = change_lines(columns, metrics, card)
    if changes:
        warn = "; ⚠ = its judge is at chance on its probe" if any("⚠" in line for line in changes) else ""
        lead = f"**What changed** (from the seed, or the first iteration where the seed has none, to the last{warn}):"
        lines += [lead, "", *changes, ""]
    return lines
