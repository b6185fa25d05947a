"""The `critique` stage at scale: candidates scored shard by shard, each process taking its share.

A shard is a fixed group of user pairs with all their candidates (FED policies compare a pair's candidates with each
other, so a pair is never split). Shards are the unit of data parallelism (process p takes shards p, p + world, ...)
and of resume: a shard file is written atomically when scored, so a killed run scores only the missing ones. A shard's
scores depend only on its own candidates, so the merged critiques are the same for any number of processes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..console import progress
from ..health.option_mass import merge, warn_if_low
from ..runs import pending_shards, shard_path, write_shard
from .registry import critique


def pair_shards(candidates: list[dict], shard_size: int) -> list[list[dict]]:
    """Candidates grouped into shards of `shard_size` pairs, pairs in order of first appearance."""
    pairs: dict[str, list[dict]] = {}
    for candidate in candidates:
        pairs.setdefault(candidate["pair_id"], []).append(candidate)
    groups = list(pairs.values())
    return [
        [candidate for group in groups[start : start + shard_size] for candidate in group]
        for start in range(0, len(groups), shard_size)
    ] or [[]]


def critique_shards(
    candidates: list[dict],
    experts: Callable[[], list],
    shards_dir: Path,
    *,
    shard_size: int,
    process_index: int = 0,
    num_processes: int = 1,
    min_option_mass: float | None = None,
) -> dict:
    """Score this process's missing shards into `shards_dir`; `experts()` builds the experts on first need.

    The stats hold `option_mass` per judge expert over the shards scored here ({"mean", "min", "questions" (rows),
    "top_tokens"}); with `min_option_mass`, an expert under it is warned about once, not once per shard. For the
    figures of every shard (also those scored by other processes or an earlier, killed run) call
    `option_mass_stats` on the merged rows.
    """
    shards_dir.mkdir(parents=True, exist_ok=True)
    shards = pair_shards(candidates, shard_size)
    todo = pending_shards(shards_dir, len(shards), process_index, num_processes)
    built: list = []
    scored: list[dict] = []
    for index in progress(todo, desc="critique shards", unit="shard", disable=len(todo) < 2):
        if not built:
            built = experts()
        rows = critique(shards[index], built)
        write_shard(shard_path(shards_dir, index), rows)
        scored += [{"option_mass": row.get("option_mass", {})} for row in rows]
    mass = option_mass_stats(scored)
    if min_option_mass is not None:
        warn_if_low({f"critic expert '{name}'": figures for name, figures in mass.items()}, min_option_mass)
    return {"num_shards": len(shards), "shards_scored": len(todo), "option_mass": mass}


def option_mass_stats(rows: list[dict]) -> dict[str, dict]:
    """Per judge expert, over critique rows: mean of the rows' option mass, the minimum, the number of rows and the
    most common top tokens (`stage.json` material)."""
    names = list(dict.fromkeys(name for row in rows for name in row.get("option_mass") or {}))
    stats = {}
    for name in names:
        figures = merge(row["option_mass"].get(name) for row in rows if row.get("option_mass"))
        if figures:
            stats[name] = figures
    return stats
