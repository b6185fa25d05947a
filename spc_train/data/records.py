"""The canonical conversation record: one plain dict shape that every reader produces and every stage consumes.

```
pair_id: str                    stable and unique within a dataset
user1_persona: list[str]        persona sentences, stripped, no empty ones
user2_persona: list[str]
turns: list[{"speaker": 1 | 2, "text": str}]
source: str                     where the record came from, e.g. "spc-csv:spc_valid_sample.csv"
```

Stages add their own columns (`candidate`, `scores`, `passed`, ...); those travel along untouched.
"""

from collections.abc import Iterable

from datasets import Dataset, Features, List, Value

RECORD_FIELDS = ("pair_id", "user1_persona", "user2_persona", "turns", "source")

RECORD_FEATURES = Features(
    {
        "pair_id": Value("string"),
        "user1_persona": List(Value("string")),
        "user2_persona": List(Value("string")),
        "turns": List({"speaker": Value("int32"), "text": Value("string")}),
        "source": Value("string"),
    }
)


def _persona_problem(name: str, persona: object) -> str | None:
    if not isinstance(persona, list):
        return f"{name} must be a list of strings, got {type(persona).__name__}"
    for i, sentence in enumerate(persona, 1):
        if not isinstance(sentence, str):
            return f"{name} sentence {i} must be a string, got {type(sentence).__name__}"
    return None


def validate_record(record: object, *, require_persona: bool = True) -> str | None:
    """Return why `record` breaks the canonical contract, or None when it is fine.

    A reason string rather than an exception, so readers can report every bad row instead of stopping at the first.
    `require_persona=False` accepts records with no persona on either side (Persona-Chat's `none_original` episodes).
    """
    if not isinstance(record, dict):
        return f"record must be a dict, got {type(record).__name__}"
    for name in RECORD_FIELDS:
        if name not in record:
            return f"missing field {name!r}"
    if not isinstance(record["pair_id"], str) or not record["pair_id"].strip():
        return "pair_id must be a non-empty string"
    if not isinstance(record["source"], str):
        return f"source must be a string, got {type(record['source']).__name__}"
    for name in ("user1_persona", "user2_persona"):
        if problem := _persona_problem(name, record[name]):
            return problem
    if require_persona and not record["user1_persona"] and not record["user2_persona"]:
        return "empty persona on both sides"
    turns = record["turns"]
    if not isinstance(turns, list):
        return f"turns must be a list, got {type(turns).__name__}"
    if not turns:
        return "no turns"
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            return f"turn {i} must be a dict, got {type(turn).__name__}"
        speaker = turn.get("speaker")
        if isinstance(speaker, bool) or speaker not in (1, 2):
            return f"turn {i} speaker must be 1 or 2, got {speaker!r}"
        text = turn.get("text")
        if not isinstance(text, str):
            return f"turn {i} text must be a string, got {type(text).__name__}"
        if not text.strip():
            return f"turn {i} has empty text"
    return None


def records_to_dataset(records: Iterable[dict]) -> Dataset:
    """Build a `Dataset` with `RECORD_FEATURES` for the canonical columns.

    Fixed features keep empty persona lists and int speakers typed the same in every stage folder (inference would
    type an all-empty list column as null); extra stage columns are inferred by `datasets`.
    """
    records = list(records)
    extra = [
        name for name in dict.fromkeys(key for record in records for key in record) if name not in RECORD_FEATURES
    ]
    columns = {name: [record.get(name) for record in records] for name in [*RECORD_FEATURES, *extra]}
    features = dict(RECORD_FEATURES)
    if extra:
        features.update(Dataset.from_dict({name: columns[name] for name in extra}).features)
    return Dataset.from_dict(columns, features=Features(features))
