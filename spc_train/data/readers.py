"""Seed readers: every supported input format becomes canonical records, plus an account of what could not be used.

Bad rows never vanish silently (the HF SPC loader drops rows it cannot parse without a word): each one is reported as
`Malformed(row, reason)`, and `strict=True` turns any of them into an error. Lines inside a conversation that are not
turns (stage directions, lists) do not make a row malformed; they are counted in `ReadResult.notes`. A read that keeps
nothing, or keeps only what the wrong format makes of the data, is an error: a junk seed would run the whole loop.
"""

import codecs
import csv
import gzip
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .conversation import has_name_placeholder, normalize_placeholders, parse_conversation
from .records import RECORD_FIELDS, validate_record

FORMATS = ("spc-csv", "personachat", "jsonl", "dataset", "hub")
SPC_COLUMNS = ("user 1 personas", "user 2 personas", "Best Generated Conversation")
# The columns of the `google/Synthetic-Persona-Chat` loader script: utterances alternate from user 1, no prefix.
HF_SPC_COLUMNS = ("user_1_persona", "user_2_persona", "utterances")
CANONICAL_COLUMNS = ("user1_persona", "user2_persona", "turns")

_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
_FILE_SUFFIXES = (".csv", ".txt", ".gz", *_JSONL_SUFFIXES)
_NOTES = ("skipped_lines", "rows_with_skipped_lines", "rows_with_name_placeholders")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PARLAI_LINE = re.compile(r"^\d+ \S")


class SeedDataError(ValueError):
    """Seed input that cannot be used as asked; the message says what was found and what would work."""


@dataclass
class Malformed:
    row: int  # 1-based data row (CSV row after the header, JSONL line, Persona-Chat episode, dataset row)
    reason: str


def _describe(malformed: list[Malformed], shown: int = 10) -> str:
    parts = [f"row {bad.row}: {bad.reason}" for bad in malformed[:shown]]
    if len(malformed) > shown:
        parts.append(f"and {len(malformed) - shown} more")
    return "; ".join(parts)


@dataclass
class ReadResult:
    records: list[dict] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    rows_read: int = 0
    # Quirks that did not make a row malformed, counted over kept records (keys: `_NOTES`).
    notes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"read {self.rows_read} rows: {len(self.records)} kept, {len(self.malformed)} malformed"
        if self.malformed:
            text += f" ({_describe(self.malformed)})"
        notes = ", ".join(f"{name}={count}" for name, count in self.notes.items() if count)
        return f"{text}; {notes}" if notes else text


class _Collector:
    """Accumulates a ReadResult: validation, duplicate ids, notes and the `limit` all live here, once."""

    def __init__(self, limit: int | None, normalize_names: bool):
        self.result = ReadResult(notes=dict.fromkeys(_NOTES, 0))
        self.limit = limit
        self.normalize_names = normalize_names
        self.first_row: dict[str, int] = {}

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.result.records) >= self.limit

    def bad(self, row: int, reason: str) -> None:
        self.result.malformed.append(Malformed(row, reason))

    def add(self, row: int, record: dict, *, skipped: int = 0, require_persona: bool = True, where: str = "") -> None:
        if reason := validate_record(record, require_persona=require_persona):
            return self.bad(row, where + reason)
        pair_id = record["pair_id"]
        if pair_id in self.first_row:
            return self.bad(row, f"duplicate pair_id {pair_id!r} (first at row {self.first_row[pair_id]})")
        self.first_row[pair_id] = row
        notes = self.result.notes
        notes["skipped_lines"] += skipped
        notes["rows_with_skipped_lines"] += int(skipped > 0)
        notes["rows_with_name_placeholders"] += int(any(has_name_placeholder(t["text"]) for t in record["turns"]))
        if self.normalize_names:
            record["turns"] = [{**t, "text": normalize_placeholders(t["text"])} for t in record["turns"]]
        self.result.records.append(record)

    def add_spc(self, row: int, pair_id: str, source: str, user1: object, user2: object, conversation: object) -> None:
        """An SPC row: persona cells (`\\n`-separated text or lists) and a conversation (cell text or utterances)."""
        if isinstance(conversation, str):
            parsed = parse_conversation(conversation)
            turns, skipped, empty = parsed.turns, len(parsed.skipped), not conversation.strip()
        else:  # HF loader: utterances alternate from user 1, prefix already removed
            utterances = [u.strip() if isinstance(u, str) else "" for u in conversation or []]
            turns = [{"speaker": 1 + i % 2, "text": u} for i, u in enumerate(utterances) if u]
            skipped, empty = len(utterances) - len(turns), not turns
        personas = [_persona(user1), _persona(user2)]
        if empty:
            return self.bad(row, "empty conversation")
        if not turns:
            return self.bad(row, f"no 'User 1:'/'User 2:' turns ({skipped} lines without a prefix)")
        for speaker in (1, 2):
            if all(turn["speaker"] != speaker for turn in turns):
                return self.bad(row, f"no turns from user {speaker}")
            if not personas[speaker - 1]:
                return self.bad(row, f"empty user {speaker} persona")
        record = {"pair_id": pair_id, "user1_persona": personas[0], "user2_persona": personas[1], "turns": turns}
        self.add(row, {**record, "source": source}, skipped=skipped)


def _persona(value: object) -> list[str]:
    if isinstance(value, str):
        value = value.replace("\r\n", "\n").split("\n")
    sentences = value if isinstance(value, list) else []
    return [s.strip() for s in sentences if isinstance(s, str) and s.strip()]


def _canonical(row: dict, default_id: str, source: str) -> dict:
    """A row already in (roughly) canonical shape: `id` stands for `pair_id`, extra keys are kept."""
    row = dict(row)
    if "pair_id" not in row:
        row["pair_id"] = row.pop("id") if "id" in row else default_id
    if isinstance(row["pair_id"], int) and not isinstance(row["pair_id"], bool):
        row["pair_id"] = str(row["pair_id"])
    if row.get("source") is None:
        row["source"] = source
    for name in ("user1_persona", "user2_persona"):
        if isinstance(row.get(name), list) and all(isinstance(s, str) for s in row[name]):
            row[name] = _persona(row[name])
    return {**{name: row[name] for name in RECORD_FIELDS if name in row}, **row}


# (byte-order mark, codec that reads the text, codec of the bytes after the mark); UTF-32 before UTF-16 (same start).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32", "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32", "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16-be"),
)
_NO_BOM = (b"", "utf-8", "utf-8")


def _open_bytes(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _encoding(path: str) -> tuple[bytes, str, str]:
    """The text encoding from the byte-order mark (spreadsheets save "Unicode text" as UTF-16 with one), else UTF-8.

    NUL bytes without a mark are UTF-16 without one: refused here, since as UTF-8 they would read as garbage columns.
    """
    with _open_bytes(path) as f:
        head = f.read(4096)
    found = next((bom for bom in _BOMS if head.startswith(bom[0])), _NO_BOM)
    if found is _NO_BOM and b"\x00" in head:
        raise SeedDataError(
            f"{path} is not UTF-8 text (NUL byte at offset {head.index(0)}: UTF-16 without a byte-order mark?); "
            "convert it with `iconv -f UTF-16LE -t UTF-8` (or UTF-16BE)"
        )
    return found


def _open_text(path: str):
    encoding = _encoding(path)[1]
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _not_text(path: str) -> SeedDataError:
    """Where the bytes stop being text in the file's encoding, and how to fix it; the read only says a chunk broke."""
    bom, _, codec = _encoding(path)
    with _open_bytes(path) as f:
        data = f.read()
    where = ""
    try:
        data[len(bom) :].decode(codec)
    except UnicodeDecodeError as e:
        offset = len(bom) + e.start
        unpacked = " of the uncompressed data" if path.endswith(".gz") else ""
        where = f" (byte 0x{data[offset]:02x} at offset {offset}{unpacked})"
    name = codec.upper().removesuffix("-LE").removesuffix("-BE")
    return SeedDataError(
        f"{path} is not {name} text{where}; convert it with `iconv -f <its encoding, e.g. latin1> -t utf-8`"
    )


def _check_spc_header(header: list[str] | None, path: str) -> list[str]:
    header = [name.strip() for name in header or []]
    if missing := [name for name in SPC_COLUMNS if name not in header]:
        raise SeedDataError(
            f"{path}: missing SPC column(s) {missing}; found columns {header}, expected {list(SPC_COLUMNS)}"
        )
    return header


def _read_spc_csv(path: str, out: _Collector, split: str | None) -> None:
    stem, source = Path(path).stem, f"spc-csv:{Path(path).name}"
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = _check_spc_header(next(reader, None), path)
        row = 0
        for cells in reader:
            if not cells:  # a stray blank line between records is not a data row
                continue
            if out.full:
                break
            row += 1
            out.result.rows_read += 1
            if len(cells) != len(header):
                out.bad(row, f"{len(cells)} cells, the header has {len(header)}")
                continue
            cell = dict(zip(header, cells))
            out.add_spc(row, f"{stem}-{row:06d}", source, *(cell[name] for name in SPC_COLUMNS))


def _personachat_episodes(lines: Iterable[str]) -> Iterator[dict]:
    """Group ParlAI `N text` lines into episodes; a new episode starts when N does not increase."""
    episode: dict | None = None
    previous = 0
    for line_number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        number, _, rest = line.partition(" ")
        if episode is None or (number.isdigit() and int(number) <= previous):
            if episode is not None:
                yield episode
            episode = {"line": line_number, "personas": ([], []), "turns": [], "unnumbered": []}
        if not number.isdigit():
            episode["unnumbered"].append(line_number)
            continue
        previous = int(number)
        if rest.startswith("your persona:"):
            episode["personas"][1].append(rest[len("your persona:") :])
        elif rest.startswith("partner's persona:"):
            episode["personas"][0].append(rest[len("partner's persona:") :])
        else:
            utterance, _, tail = rest.partition("\t")
            for speaker, text in ((1, utterance.strip()), (2, tail.split("\t", 1)[0].strip())):
                if text and text != "__SILENCE__":
                    episode["turns"].append({"speaker": speaker, "text": text})
    if episode is not None:
        yield episode


def _unnumbered(lines: list[int]) -> str:
    """One short reason for an episode's lines without a number (a wrong-format file has thousands)."""
    if len(lines) == 1:
        return f"line {lines[0]} does not start with a line number"
    more = f" and {len(lines) - 3} more" if len(lines) > 3 else ""
    return f"lines {', '.join(map(str, lines[:3]))}{more} do not start with a line number"


def _read_personachat(path: str, out: _Collector, split: str | None) -> None:
    """ParlAI text format (Persona-Chat / ConvAI2): `N text` lines, N restarting at 1 for each episode.

    `your persona:` is the responder's (second tab column) -> user 2; `partner's persona:` -> user 1; other lines are
    `utterance<TAB>response[<TAB>reward<TAB>candidates]` -> a user 1 turn then a user 2 turn. Candidates are dropped,
    ParlAI's `__SILENCE__` filler is not a turn, and episodes without personas (`none_original`) are fine. An episode
    with a line that has no number is malformed as a whole: what that line belonged to is unknown.
    """
    stem, source = Path(path).stem, f"personachat:{Path(path).name}"
    with _open_text(path) as f:
        for number, episode in enumerate(_personachat_episodes(f), 1):
            if out.full:
                break
            out.result.rows_read += 1
            where = f"episode {number} starting at line {episode['line']}: "
            if episode["unnumbered"]:
                out.bad(number, where + _unnumbered(episode["unnumbered"]))
                continue
            user1, user2 = (_persona(p) for p in episode["personas"])
            record = {"pair_id": f"{stem}-{number:06d}", "user1_persona": user1, "user2_persona": user2}
            out.add(
                number, {**record, "turns": episode["turns"], "source": source}, require_persona=False, where=where
            )


def _read_jsonl(path: str, out: _Collector, split: str | None) -> None:
    stem, source = Path(path).name.split(".")[0], f"jsonl:{Path(path).name}"
    with _open_text(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if out.full:
                break
            out.result.rows_read += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                out.bad(line_number, f"invalid JSON: {e.msg} at column {e.colno}")
                continue
            if not isinstance(row, dict):
                out.bad(line_number, f"expected a JSON object, got {type(row).__name__}")
                continue
            out.add(line_number, _canonical(row, f"{stem}-{line_number:06d}", source))


def _read_table(rows: Iterable[dict], columns: list[str], out: _Collector, id_prefix: str, source: str) -> None:
    """Rows of a `datasets.Dataset`, in the canonical schema, the SPC CSV columns or the HF SPC loader columns."""
    if set(CANONICAL_COLUMNS) <= set(columns):
        schema = "canonical"
    elif set(SPC_COLUMNS) <= set(columns):
        schema = SPC_COLUMNS
    elif set(HF_SPC_COLUMNS) <= set(columns):
        schema = HF_SPC_COLUMNS
    else:
        raise SeedDataError(
            f"{source}: unknown columns {columns}; expected the canonical {list(CANONICAL_COLUMNS)}, "
            f"the SPC CSV {list(SPC_COLUMNS)} or the HF SPC loader {list(HF_SPC_COLUMNS)} columns"
        )
    for row_number, row in enumerate(rows, 1):
        if out.full:
            break
        out.result.rows_read += 1
        pair_id = f"{id_prefix}-{row_number:06d}"
        if schema == "canonical":
            out.add(row_number, _canonical(row, pair_id, source))
        else:
            out.add_spc(row_number, pair_id, source, *(row[name] for name in schema))


def _read_dataset(path: str, out: _Collector, split: str | None) -> None:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(path)
    except IndexError as e:  # `save_to_disk` writes an empty dataset as 0 shards, which it then cannot load
        raise SeedDataError(
            f"{path}: `datasets.load_from_disk` fails on it ({type(e).__name__}: {e}), as it does on a dataset saved "
            "with 0 rows; a seed needs at least one conversation"
        ) from e
    name = Path(path).name
    if isinstance(dataset, DatasetDict):
        split = split or ("train" if "train" in dataset else None)
        if split not in dataset:
            raise SeedDataError(f"{path} is a DatasetDict with splits {list(dataset)}; pass split= one of them")
        dataset, name = dataset[split], f"{name}-{split}"
    _read_table(dataset, dataset.column_names, out, name, f"dataset:{name}")


def _read_hub(path: str, out: _Collector, split: str | None) -> None:
    import datasets

    split = split or "train"
    try:
        dataset = datasets.load_dataset(path, split=split)
    except Exception as e:  # offline, unreachable, missing, gated or bad split: all mean "not usable from here"
        offline = datasets.config.HF_HUB_OFFLINE
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub is unreachable, or the dataset or split does not exist"
        raise SeedDataError(
            f"cannot load the Hub dataset {path!r} (split {split!r}): {why} ({type(e).__name__}: {e}). "
            "Get the data where the Hub is reachable (e.g. `load_dataset(...).save_to_disk(DIR)` or its CSV files) "
            "and pass the local path instead."
        ) from e
    name = f"{path.rsplit('/', 1)[-1]}-{split}"
    _read_table(dataset, dataset.column_names, out, name, f"hub:{path}:{split}")


_READERS = dict(zip(FORMATS, (_read_spc_csv, _read_personachat, _read_jsonl, _read_dataset, _read_hub)))


def _sniff(path: str) -> str | None:
    """The format the first non-blank line shows (an SPC header, a JSON object, a numbered ParlAI line), or None.

    Content, unlike a suffix, tells a Persona-Chat `.txt` from an SPC CSV saved as `.txt`. A file that cannot be
    opened (a broken gzip) gives None: the reader reports it, with how far it got.
    """
    try:
        with _open_text(path) as f:
            line = next((line for line in itertools.islice(f, 100) if line.strip()), "").strip()
    except UnicodeDecodeError:
        raise _not_text(path) from None
    except (OSError, EOFError):
        return None
    if line.startswith("{"):
        return "jsonl"
    if _PARLAI_LINE.match(line):
        return "personachat"
    header = [name.strip() for name in next(csv.reader([line]), [])]
    return "spc-csv" if all(name in header for name in SPC_COLUMNS) else None


def guess_format(path: str | os.PathLike) -> str:
    """Pick a reader from what `path` is: its first line, else its suffix; a `save_to_disk` folder; an `owner/name`
    Hub id."""
    path = str(path)
    name = Path(path).name.lower()
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, marker)) for marker in _DATASET_MARKERS):
            return "dataset"
        raise SeedDataError(
            f"{path} is a directory but not a `save_to_disk` dataset (none of {list(_DATASET_MARKERS)})"
        )
    if os.path.isfile(path):
        try:
            if sniffed := _sniff(path):
                return sniffed
            if name.endswith(".csv"):  # not an SPC header: say which columns it has
                with _open_text(path) as f:
                    _check_spc_header(next(csv.reader(f), None), path)
        except UnicodeDecodeError:
            raise _not_text(path) from None
        if name.endswith(".txt"):
            return "personachat"
        if name.endswith(_JSONL_SUFFIXES):
            return "jsonl"
        raise SeedDataError(
            f"cannot tell the format of {path}: use .csv (SPC), .txt (Persona-Chat), .jsonl[.gz], a dataset folder, "
            f"or pass format= one of {FORMATS}"
        )
    if _HUB_ID.match(path) and not name.endswith(_FILE_SUFFIXES):
        return "hub"
    raise SeedDataError(
        f"{path} is not an existing file or directory, nor an `owner/name` Hub dataset id; formats: {FORMATS}"
    )


_WHAT_WORKS = {
    "spc-csv": "an SPC CSV needs rows under its header with both personas and `User 1:`/`User 2:` lines",
    "personachat": "a Persona-Chat file needs numbered ParlAI lines (`1 your persona: ...`, `2 hi<TAB>hello`)",
    "jsonl": "a JSONL seed needs one JSON object per line with user1_persona, user2_persona and turns",
    "dataset": f"a dataset needs rows with the canonical {list(CANONICAL_COLUMNS)} or the SPC columns",
    "hub": f"a dataset needs rows with the canonical {list(CANONICAL_COLUMNS)} or the SPC columns",
}


def _looks_like(path: str, format: str) -> str | None:
    """Another format that the file's content shows, when it was read as `format`."""
    if format not in ("spc-csv", "personachat", "jsonl") or not os.path.isfile(path):
        return None
    try:
        looks = guess_format(path)
    except SeedDataError:
        return None
    return looks if looks != format else None


def _check_usable(path: str, format: str, result: ReadResult) -> None:
    """Refuse a read that kept nothing, or mostly junk because the format is wrong (an SPC CSV read as Persona-Chat
    keeps a few persona-less one-turn "conversations" and would run the whole loop on them). Messy data in the right
    format keeps working: its bad rows are reported, not fatal."""
    kept = len(result.records)
    thin = sum(not r["user1_persona"] and not r["user2_persona"] and len(r["turns"]) < 2 for r in result.records)
    if kept and thin < kept and 2 * (len(result.malformed) + thin) <= result.rows_read:
        return
    counts = f"read {result.rows_read} rows: {kept} kept"
    if thin:
        counts += f" ({thin} with no persona and under 2 turns)"
    counts += f", {len(result.malformed)} malformed"
    if result.malformed:
        counts += f" ({_describe(result.malformed, shown=2)})"
    if looks := _looks_like(path, format):
        problem = f"does not look like {format} data ({counts}); it looks like {looks}: pass format={looks!r} or "
        problem += "leave the format unset"
    elif not kept:
        problem = f"has no usable {format} conversations ({counts}); {_WHAT_WORKS[format]}"
    elif thin == kept:
        problem = f"does not look like {format} data: no kept record has a persona or 2 turns ({counts}); "
        problem += _WHAT_WORKS[format]
    else:  # mostly bad rows, but nothing says another format would do better: messy data, reported as such
        return
    raise SeedDataError(" ".join(f"{path} {problem}".split()))  # one line, whatever the rows' reasons hold


def read_seed(
    path: str | os.PathLike,
    format: str | None = None,
    *,
    strict: bool = False,
    split: str | None = None,
    limit: int | None = None,
    normalize_names: bool = False,
) -> ReadResult:
    """Read seed conversations from `path` into canonical records.

    `format` defaults to `guess_format(path)`. `limit` keeps the first N kept records and stops reading there.
    `split` picks a split of a DatasetDict folder (default "train") or of a Hub dataset. `normalize_names` rewrites the
    name placeholders in turns with `normalize_placeholders`. `strict=True` raises `SeedDataError` if any row is
    malformed; otherwise malformed rows are listed in the result (see `ReadResult.summary()`). Reading no usable
    record, or mostly junk from data that looks like another format, raises `SeedDataError`.
    """
    path = str(path)
    format = format or guess_format(path)
    if format not in _READERS:
        raise SeedDataError(f"unknown seed format {format!r}; formats: {FORMATS}")
    if format != "hub" and not os.path.exists(path):
        raise SeedDataError(f"{path}: no such file or directory")
    if limit is not None and limit < 1:
        raise SeedDataError(f"limit must be at least 1 (None reads everything), got {limit}")
    out = _Collector(limit, normalize_names)
    try:
        _READERS[format](path, out, split)
    except UnicodeDecodeError:
        raise _not_text(path) from None
    except (OSError, EOFError, csv.Error) as e:
        raise SeedDataError(f"cannot read {path} as {format} (after {out.result.rows_read} rows): {e}") from e
    except SeedDataError as e:
        if looks := _looks_like(path, format):
            raise SeedDataError(f"{e}; it looks like {looks}: pass format={looks!r} or leave the format unset") from e
        raise
    _check_usable(path, format, out.result)
    if strict and out.result.malformed:
        bad = out.result.malformed
        raise SeedDataError(f"{path}: {len(bad)} malformed rows (strict=True): {_describe(bad, shown=50)}")
    return out.result
