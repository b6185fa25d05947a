"""Writers for canonical records: SPC-compatible CSV, JSON Lines, and `save_to_disk` dataset folders."""

import csv
import gzip
import json
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


def write_jsonl(records: Iterable[dict], path: str | os.PathLike) -> None:
    """One JSON object per line (gzip-compressed when `path` ends with .gz): canonical fields first, extras after."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="\n") as f:
        for record in records:
            ordered = {**{name: record[name] for name in RECORD_FIELDS if name in record}, **record}
            f.write(json.dumps(ordered, ensure_ascii=False) + "\n")


def write_dataset(records: Iterable[dict], directory: str | os.PathLike) -> None:
    """`save_to_disk` with `RECORD_FEATURES`: the format of every stage folder in a run directory."""
    records_to_dataset(records).save_to_disk(str(directory))


def export_records(records: Iterable[dict], path: str | os.PathLike) -> None:
    """Write with the writer that `path`'s suffix asks for: .csv, .jsonl / .jsonl.gz / .json, else a dataset folder."""
    name = str(path).lower()
    if name.endswith(".csv"):
        write_spc_csv(records, path)
    elif name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        write_jsonl(records, path)
    else:
        write_dataset(records, path)
