"""The judge card: every expert and judge measurement with its option mass, probe figure and verdict.

Written by the loop's `probes` stage as `RUN/probes/card.json` and printed by `spc-train check --probe`. Readers of
numbers ask it which judge produced a metric or column (`judge_of`) and whether that judge is at chance
(`at_chance`), so the report and the end-of-loop table can say so beside the numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .verdicts import AT_CHANCE

CARD_FILE = "card.json"


def _matches(pattern: str, name: str) -> bool:
    return name.startswith(pattern) if pattern.endswith("_") else name == pattern


def judge_of(card: dict | None, metric: str) -> dict | None:
    """The card entry whose judge produces `metric` (a metric, summary column or expert name), or None."""
    if not card:
        return None
    if metric.startswith("option_mass_"):
        return None  # the health figure itself, not the judge's answer
    for entry in card.get("entries", []):
        if any(_matches(pattern, metric) for pattern in entry.get("metrics", [])):
            return entry
    return None


def at_chance(card: dict | None, metric: str) -> bool:
    """Whether the judge behind `metric` scored `at chance` on its probe (False when no card or no such judge)."""
    entry = judge_of(card, metric)
    return bool(entry) and entry["verdict"] == AT_CHANCE


# Entries that say whether a judge's numbers measure anything. `gaming` and `selector` entries say whether the critic
# can be gamed: a faithfulness judge that knows its job still cannot tell a recited profile from talk, so those are
# shown on the card, not counted as blind judges.
JUDGE_KINDS = ("expert", "measurement")


def blind(card: dict | None) -> list[dict]:
    """The judge entries (`JUDGE_KINDS`) at chance."""
    entries = (card or {}).get("entries", [])
    return [entry for entry in entries if entry["verdict"] == AT_CHANCE and entry.get("kind", "expert") in JUDGE_KINDS]


def _number(value, digits: int = 2) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _figures(entry: dict) -> str:
    return ", ".join(f"{name} {_number(value)}" for name, value in entry["figures"].items())


def card_rows(card: dict) -> list[list[str]]:
    """One row per entry: name, kind, probe figures, verdict, option mass mean / min, top tokens, probe."""
    rows = []
    for entry in card.get("entries", []):
        mass = entry.get("option_mass") or {}
        tokens = ", ".join(repr(t) for t in mass.get("top_tokens") or [])
        verdict = entry["verdict"] + (f" ({entry['note']})" if entry.get("note") else "")
        rows.append(
            [
                entry["name"],
                entry["kind"],
                _figures(entry),
                verdict,
                _number(mass.get("mean")),
                _number(mass.get("min")),
                tokens or "–",
                entry["probe"],
            ]
        )
    return rows


HEADER = ["judge of", "kind", "probe figure", "verdict", "option mass mean", "option mass min", "top tokens", "probe"]


def render_card(card: dict) -> str:
    """The card as a markdown table with a line on how to read it."""
    thresholds = card.get("thresholds", {})
    lines = [
        f"Probes with known answers on {card.get('conversations', '?')} seed conversations (seed "
        f"{card.get('seed', '?')}). Figures are on a 0.5 = chance scale: `informative` at "
        f"{thresholds.get('informative', '?')} or more, `weak` at {thresholds.get('weak', '?')} or more, else `at "
        f"chance`. Option mass is the judge's probability on the answer options before renormalisation (under "
        f"{thresholds.get('min_option_mass', '?')}: it mostly says something else). See docs/judge_health.md.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "| --- | --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for row in card_rows(card):
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |")
    return "\n".join(lines)


def write_card(card: dict, folder: str | Path) -> Path:
    """`folder/card.json` (NaN written as null) and `folder/card.md`; returns the JSON path."""
    from ..evaluation.report import _json_safe

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CARD_FILE
    path.write_text(json.dumps(_json_safe(card), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (folder / "card.md").write_text("# Judge card\n\n" + render_card(card) + "\n", encoding="utf-8")
    return path


def read_card(path: str | Path) -> dict | None:
    """The card in `path` (a card.json, or a folder holding one); None when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
