"""Writers for canonical records: SPC-compatible CSV, JSON Lines, and `save_to_disk` dataset folders."""

import csv
import gzip
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

from .conversation import format_conversation
from .readers import SPC_COLUMNS
from .records import RECORD_FIELDS, records_to_dataset


def write_spc_csv(records: Iterable[dict], path: str | os.PathLike) -> None:
    """Write the released SPC CSV layout (same header, CRLF row ends, LF inside cells), so tools built for SPC read it.

    Only personas and turns fit in it; pair ids, sources and stage columns are dropped.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(SPC_COLUMNS)
        for record in records:
            persona1, persona2 = ("\n".join(record[name]) for name in ("user1_persona", "user2_persona"))
            writer.writerow([persona1, persona2, format_conversation(record["turns"])])


def _json_safe(value):
    """NaN and infinities as null: bare `NaN` is not JSON, and most readers (pandas aside) refuse it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> None:
    """One JSON object per line (gzip-compressed when `path` ends with .gz): canonical fields first, extras after;
    NaN is written as null."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="\n") as f:
        for record in records:
            ordered = {**{name: record[name] for name in RECORD_FIELDS if name in record}, **record}
            f.write(json.dumps(_json_safe(ordered), ensure_ascii=False, allow_nan=False) + "\n")


def write_parquet(records: Iterable[dict], path: str | os.PathLike) -> None:
    """A real parquet file (`datasets.load_dataset("parquet", ...)`, pandas and Spark read it)."""
    from datasets import Dataset

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_list(list(records)).to_parquet(str(path))


def write_dataset(records: Iterable[dict], directory: str | os.PathLike) -> None:
    """`save_to_disk` with `RECORD_FEATURES`: the format of every stage folder in a run directory."""
    records_to_dataset(records).save_to_disk(str(directory))


JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")


def export_records(records: Iterable[dict], path: str | os.PathLike) -> None:
    """Write with the writer that `path`'s suffix asks for: .csv, .jsonl / .jsonl.gz / .json, .parquet, or no suffix
    for a dataset folder; any other suffix is refused (it would otherwise become a folder with a file's name)."""
    name = str(path).lower()
    if name.endswith(".csv"):
        write_spc_csv(records, path)
    elif name.endswith(JSONL_SUFFIXES):
        write_jsonl(records, path)
    elif name.endswith(".parquet"):
        write_parquet(records, path)
    elif Path(name).suffix and not Path(path).is_dir():
        raise ValueError(
            f"{path}: unknown output type {Path(name).suffix!r}; use .csv, .jsonl[.gz], .parquet, or a folder name "
            "without a suffix (a `datasets` folder)."
        )
    else:
        write_dataset(records, path)
