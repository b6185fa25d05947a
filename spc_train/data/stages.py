"""The data room's stage: the seed conversations, read once into the run (PAPER.md's SPC, or the user's own)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

from ..runs import StageInputError, save_rows
from ..stage import Stage, StageContext

logger = logging.getLogger(__name__)


def source_identity(selected) -> list[str | None]:
    """Content hash of a local seed file or folder (a Hub id stands for itself)."""
    from ..models import folder_hash

    path = selected.seed.path
    if not path:
        return [None]
    local = Path(path).expanduser()
    if local.is_file():
        return [hashlib.sha256(local.read_bytes()).hexdigest()[:20]]
    if local.is_dir():
        return [folder_hash(local)]
    return [path]


def read(ctx: StageContext):
    from . import read_seed

    seed = ctx.config.seed
    if not seed.path:
        raise StageInputError("The recipe has no seed data: set `seed.path` (SPC CSV, JSONL, folder or Hub id).")

    def write(out: Path) -> dict:
        result = read_seed(
            seed.path,
            seed.format,
            strict=seed.strict,
            split=seed.split,
            limit=seed.max_conversations,
            normalize_names=seed.normalize_names,
        )
        logger.debug("Seed %s: %s", seed.path, result.summary())
        save_rows(result.records, out)
        return {
            "rows_read": result.rows_read,
            "rows": len(result.records),
            "malformed": [dataclasses.asdict(m) for m in result.malformed],
            "notes": result.notes,
        }

    return write


def _said(summary: dict) -> str:
    return f"{summary['rows']} conversations of {summary['rows_read']} rows ({len(summary['malformed'])} malformed)"


SEED = Stage(
    name="seed",
    command="seed",
    reads=("seed",),
    work=read,
    outside=source_identity,
    describe=_said,
)
