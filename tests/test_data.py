import codecs
import csv
import gzip
import json
from pathlib import Path

import pytest

from spc_train.data import (
    RECORD_FEATURES,
    SPC_COLUMNS,
    Malformed,
    ReadResult,
    SeedDataError,
    export_records,
    format_conversation,
    guess_format,
    normalize_placeholders,
    parse_conversation,
    read_seed,
    records_to_dataset,
    validate_record,
    write_dataset,
    write_jsonl,
    write_spc_csv,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CSV = REPO / "spc_train" / "data" / "sample" / "spc_valid_sample.csv"
SHARED = REPO.parent / "shared" / "data"
SPC_TEST_CSV = SHARED / "spc" / "Synthetic-Persona-Chat_test.csv"
SPC_FORK_TRAIN = SHARED / "spc-fork" / "spc_train.jsonl.gz"
SPC_HEADER = b"user 1 personas,user 2 personas,Best Generated Conversation\r\n"


@pytest.fixture(autouse=True)
def offline_hf(monkeypatch, tmp_path):
    """No test may reach the Hub or write to the user's cache: offline mode and a throwaway HF_HOME."""
    import datasets
    import huggingface_hub

    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    # Both libraries read the environment once, at import time.
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def make_record(pair_id: str = "p-1", **overrides) -> dict:
    record = {
        "pair_id": pair_id,
        "user1_persona": ["I like tea.", "I have a cat."],
        "user2_persona": ["I ski."],
        "turns": [{"speaker": 1, "text": "Hi!"}, {"speaker": 2, "text": "Hello, [user 1's name]."}],
        "source": "test",
    }
    return {**record, **overrides}


def write_csv(path: Path, rows: list[list[str]], header=SPC_COLUMNS) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


# conversation.py


def test_parse_conversation_messy_text():
    text = (
        "User 1: Hi there [user 1's name]!\r\n\r\n"
        "*User 2:* Hello!\r\n"
        "(The next day)\r\n"
        "   \r\n"
        "* * *\r\n"
        "user2: Again?\r\n"
        "* * User 1: * * Yes, [User 2 name] *\r\n"
        "1. a list item\r\n"
        "USER 1 : still me\r\n"
        "User 2: *waves* bye\r\n"
        "User 1:"
    )
    parsed = parse_conversation(text)
    assert parsed.turns == [
        {"speaker": 1, "text": "Hi there [user 1's name]!"},
        {"speaker": 2, "text": "Hello!"},
        {"speaker": 2, "text": "Again?"},
        {"speaker": 1, "text": "Yes, [User 2 name]"},
        {"speaker": 1, "text": "still me"},
        {"speaker": 2, "text": "*waves* bye"},
    ]
    assert parsed.skipped == ["(The next day)", "* * *", "1. a list item", "User 1:"]


@pytest.mark.parametrize("text", ["", "\n\n", "\x00\x01", "User 3: nobody", ":::", "user", "*" * 50, "User 1"])
def test_parse_conversation_never_raises_and_finds_no_turns(text):
    parsed = parse_conversation(text)
    assert parsed.turns == []
    assert parsed.skipped == [line.strip() for line in text.split("\n") if line.strip()]


# What SmolLM2-135M-Instruct and other small instruct models write instead of `User 1: ...` lines.
@pytest.mark.parametrize(
    "text",
    [
        "1. User 1: Hi! How are you?\n2. User 2: Hello! I am fine.",
        "1) User 1: Hi! How are you?\n2) User 2: Hello! I am fine.",
        "(User 1): Hi! How are you?\n(User 2): Hello! I am fine.",
        "(user 1) Hi! How are you?\n(user 2) Hello! I am fine.",
        "[User 1] Hi! How are you?\n[User 2] Hello! I am fine.",
        "user1: Hi! How are you?\nuser2: Hello! I am fine.",
        "**User 1:** Hi! How are you?\n**User 2:** Hello! I am fine.",
        "**User 1**: Hi! How are you?\n**User 2**: Hello! I am fine.",
        "__User 1:__ Hi! How are you?\n__User 2:__ Hello! I am fine.",
        "User 1 - Hi! How are you?\nUser 2 \u2013 Hello! I am fine.",
        "- User 1: Hi! How are you?\n- User 2: Hello! I am fine.",
        "1. **User 1:** Hi! How are you?\n2. **User 2:** Hello! I am fine.",
    ],
)
def test_parse_conversation_reads_the_turn_formats_real_models_write(text):
    parsed = parse_conversation(text)
    assert parsed.turns == [{"speaker": 1, "text": "Hi! How are you?"}, {"speaker": 2, "text": "Hello! I am fine."}]
    assert parsed.skipped == []


@pytest.mark.parametrize(
    "line",
    [
        "User 1 Profile: I like cats.",  # the prompt's profile block, not a turn
        "User 2's persona: I have a dog.",
        "User 12: not user 1",
        "User 1-2 years ago we met.",  # a dash that is not a separator
        "User 1 and User 2 go to the park.",  # a stage direction naming both
        "(User 1 laughs)",
        "[User 1 and User 2 start flying.]",
        "(User 1)",  # a label with nothing said
        "1. a list item",
        "User 3: who am I?",
    ],
)
def test_lines_that_only_look_like_turns_are_skipped(line):
    parsed = parse_conversation(f"User 1: hi\n{line}\nUser 2: hello")
    assert parsed.turns == [{"speaker": 1, "text": "hi"}, {"speaker": 2, "text": "hello"}]
    assert parsed.skipped == [line]


@pytest.mark.skipif(not SPC_TEST_CSV.exists(), reason=f"shared SPC data not present at {SPC_TEST_CSV}")
def test_the_new_turn_formats_add_no_turn_to_the_spc_splits():
    """The formats added for generated text do not occur in SPC: a line without an SPC `User N:` prefix is still no
    turn, and one with it is the same speaker's turn (the split counts of `test_real_spc_test_split` stay too)."""
    import re

    spc_prefix = re.compile(r"^[\s*]*user\s*(?P<speaker>[12])[\s*]*:", re.IGNORECASE)  # the SPC forms
    lines = 0
    for path in (SPC_TEST_CSV, SPC_TEST_CSV.with_name("Synthetic-Persona-Chat_valid.csv")):
        with open(path, encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle):
                for line in row[-1].replace("\r\n", "\n").replace("\r", "\n").split("\n"):
                    lines += 1
                    turns = parse_conversation(line).turns
                    match = spc_prefix.match(line.strip())
                    if match is None:
                        assert turns == [], line
                    else:
                        assert [t["speaker"] for t in turns] in ([], [int(match.group("speaker"))]), line
    assert lines > 50_000


def test_format_conversation_round_trips_through_parse():
    turns = [{"speaker": 1, "text": "Hi [name]!"}, {"speaker": 2, "text": "Hey."}, {"speaker": 2, "text": "You?"}]
    text = format_conversation(turns)
    assert text == "User 1: Hi [name]!\nUser 2: Hey.\nUser 2: You?"
    assert parse_conversation(text).turns == turns


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("[name]", "[name]"),
        ("[Name] and [username]", "[name] and [name]"),
        ("[user 1's name]", "[User 1's name]"),
        ("[user 1 name], [USER 1 name]", "[User 1's name], [User 1's name]"),
        ("[User 2 Name]", "[User 2's name]"),
        ("[user 2]! [user1]", "[User 2's name]! [User 1's name]"),
        ("[your name]", "[name]"),
        ("[user 1's hometown] [Later] [city]", "[user 1's hometown] [Later] [city]"),
    ],
)
def test_normalize_placeholders(raw, expected):
    assert normalize_placeholders(raw) == expected


# records.py


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"pair_id": ""}, "pair_id"),
        ({"user1_persona": "I like tea."}, "user1_persona must be a list"),
        ({"user2_persona": ["ok", 3]}, "user2_persona sentence 2"),
        ({"user1_persona": [], "user2_persona": []}, "empty persona on both sides"),
        ({"turns": []}, "no turns"),
        ({"turns": [{"speaker": 3, "text": "hi"}]}, "turn 1 speaker must be 1 or 2"),
        ({"turns": [{"speaker": True, "text": "hi"}]}, "turn 1 speaker must be 1 or 2"),
        ({"turns": [{"speaker": 1, "text": "hi"}, {"speaker": 2, "text": "  "}]}, "turn 2 has empty text"),
        ({"source": None}, "source must be a string"),
    ],
)
def test_validate_record_reasons(overrides, reason):
    assert reason in validate_record(make_record(**overrides))


def test_validate_record_accepts_good_and_personaless_when_allowed():
    assert validate_record(make_record()) is None
    assert "missing field 'source'" in validate_record({k: v for k, v in make_record().items() if k != "source"})
    assert validate_record(make_record(user1_persona=[], user2_persona=[]), require_persona=False) is None


def test_records_to_dataset_fixed_features_and_extra_columns():
    records = [
        make_record("a", user1_persona=[], scores={"faithful": 0.9}, iteration=0),
        make_record("b", scores={"faithful": 0.1}, iteration=1),
    ]
    dataset = records_to_dataset(records)
    for name, feature in RECORD_FEATURES.items():
        assert dataset.features[name] == feature
    assert dataset.column_names == [*RECORD_FEATURES, "scores", "iteration"]
    assert dataset[0]["user1_persona"] == [] and dataset[1]["scores"] == {"faithful": 0.1}
    assert list(dataset) == records


# SPC CSV


def test_spc_csv_round_trip_on_sample(tmp_path):
    result = read_seed(SAMPLE_CSV)
    assert (result.rows_read, len(result.records), result.malformed) == (300, 300, [])
    assert result.records[11]["pair_id"] == "spc_valid_sample-000012"
    assert result.records[0]["source"] == "spc-csv:spc_valid_sample.csv"
    assert result.notes["skipped_lines"] > 0 and result.notes["rows_with_name_placeholders"] > 0

    # Same file name in another folder: ids and sources then match too, so whole records must be equal.
    out = tmp_path / "spc_valid_sample.csv"
    write_spc_csv(result.records, out)
    raw = out.read_bytes()
    assert raw.startswith(SPC_HEADER)
    assert raw.count(b"\r\n") == raw.count(b"\r") == 301  # CRLF ends the header and each row, and nothing else
    assert read_seed(out).records == result.records
    with open(SAMPLE_CSV, encoding="utf-8", newline="") as a, open(out, encoding="utf-8", newline="") as b:
        assert [row[:2] for row in csv.reader(a)] == [row[:2] for row in csv.reader(b)]  # persona cells byte-equal


@pytest.mark.skipif(not SPC_TEST_CSV.exists(), reason=f"shared SPC data not present at {SPC_TEST_CSV}")
def test_real_spc_test_split():
    result = read_seed(SPC_TEST_CSV)
    assert result.rows_read == 968
    # Row numbers are 1-based: data row 511 is index 510 in 0-based terms (the paper's "row 510").
    assert result.malformed == [
        Malformed(321, "no 'User 1:'/'User 2:' turns (23 lines without a prefix)"),
        Malformed(511, "empty conversation"),
    ]
    assert len(result.records) == 966
    assert result.notes == {"skipped_lines": 78, "rows_with_skipped_lines": 20, "rows_with_name_placeholders": 320}
    assert "968 rows: 966 kept, 2 malformed (row 321:" in result.summary()
    by_id = {record["pair_id"]: record for record in result.records}
    assert "Synthetic-Persona-Chat_test-000511" not in by_id
    # Row 268 wraps every prefix in markdown emphasis: `* * User 1: * * Hello there, ...`.
    emphasised = by_id["Synthetic-Persona-Chat_test-000268"]["turns"]
    assert emphasised[0] == {
        "speaker": 1,
        "text": "Hello there, what are some of your favorite things to do in your free time?",
    }
    assert not any(turn["text"].startswith("*") for turn in emphasised)


def test_handwritten_csv_malformed_rows(tmp_path):
    personas = ("I like tea.\nI have a cat.", "I ski.\n\n  I read.  ")
    path = write_csv(
        tmp_path / "bad.csv",
        [
            [*personas, "User 1: Hi\nUser 2: Hello"],
            [*personas, "   \n"],
            [*personas, "User 1: Hi\nUser 1: Anyone?"],
            [personas[0], "", "User 1: Hi\nUser 2: Hello"],
            [*personas, "User 1: Hi\n(Later)\n\nUser 2: Hello [user 1 name]"],
            [*personas],
            [*personas, "Hi\nHello"],
        ],
    )
    result = read_seed(path)
    assert result.rows_read == 7
    assert [r["pair_id"] for r in result.records] == ["bad-000001", "bad-000005"]
    assert result.records[0]["user2_persona"] == ["I ski.", "I read."]
    assert result.malformed == [
        Malformed(2, "empty conversation"),
        Malformed(3, "no turns from user 2"),
        Malformed(4, "empty user 2 persona"),
        Malformed(6, "2 cells, the header has 3"),
        Malformed(7, "no 'User 1:'/'User 2:' turns (2 lines without a prefix)"),
    ]
    assert result.notes == {"skipped_lines": 1, "rows_with_skipped_lines": 1, "rows_with_name_placeholders": 1}
    assert result.summary() == (
        "read 7 rows: 2 kept, 5 malformed (row 2: empty conversation; row 3: no turns from user 2; "
        "row 4: empty user 2 persona; row 6: 2 cells, the header has 3; "
        "row 7: no 'User 1:'/'User 2:' turns (2 lines without a prefix)); "
        "skipped_lines=1, rows_with_skipped_lines=1, rows_with_name_placeholders=1"
    )
    with pytest.raises(SeedDataError, match="5 malformed rows") as error:
        read_seed(path, strict=True)
    for row in (2, 3, 4, 6, 7):
        assert f"row {row}: " in str(error.value)
    assert read_seed(path, limit=1).rows_read == 1


def test_csv_with_wrong_header_names_the_columns(tmp_path):
    path = write_csv(tmp_path / "other.csv", [["a", "b"]], header=("persona", "conversation"))
    for call in (lambda: read_seed(path), lambda: read_seed(path, format="spc-csv")):
        with pytest.raises(SeedDataError, match=r"found columns \['persona', 'conversation'\]"):
            call()


def test_summary_lists_ten_rows_then_a_count():
    result = ReadResult(malformed=[Malformed(row, "bad") for row in range(1, 14)], rows_read=13)
    summary = result.summary()
    assert summary.startswith("read 13 rows: 0 kept, 13 malformed (row 1: bad;")
    assert "row 10: bad; and 3 more)" in summary and "row 11" not in summary


def test_normalize_names_option():
    plain, normalized = read_seed(SAMPLE_CSV, limit=100), read_seed(SAMPLE_CSV, limit=100, normalize_names=True)
    texts = [t["text"] for r in normalized.records for t in r["turns"]]
    assert any("[User 1's name]" in text for text in texts)
    assert not any(v in text for text in texts for v in ("[user 1 name]", "[user 2's name]", "[user 2]"))
    assert plain.notes == normalized.notes
    assert any("[user 2's name]" in t["text"] for r in plain.records for t in r["turns"])


# Persona-Chat (ParlAI text)

PERSONACHAT = """\
1 your persona: i like to ski.
2 your persona: i have a dog.
3 partner's persona: i am a chef.
4 hi , how are you ?\ti am good , just back from skiing .
5 do you have pets ?\tyes , a dog named max .\t\tnope .|yes , a dog named max .|i like pizza .
6 what do you cook ?
1 your persona: i love tea.
2 hello !\thi there .
this line has no number
3 bye\tbye !

1 hi , i am new here .\twelcome !
2 thanks .
1 __SILENCE__\thello , anyone here ?
2 yes , me .\tgreat !
"""


def test_personachat_fixture(tmp_path):
    path = tmp_path / "convai2_fixture.txt"
    path.write_text(PERSONACHAT, encoding="utf-8")
    assert guess_format(path) == "personachat"
    result = read_seed(path)
    assert result.rows_read == 4
    assert result.malformed == [Malformed(2, "episode 2 starting at line 7: line 9 does not start with a line number")]
    first, no_persona, silence = result.records
    assert first["pair_id"] == "convai2_fixture-000001" and first["source"] == "personachat:convai2_fixture.txt"
    assert first["user1_persona"] == ["i am a chef."]
    assert first["user2_persona"] == ["i like to ski.", "i have a dog."]
    assert first["turns"] == [
        {"speaker": 1, "text": "hi , how are you ?"},
        {"speaker": 2, "text": "i am good , just back from skiing ."},
        {"speaker": 1, "text": "do you have pets ?"},
        {"speaker": 2, "text": "yes , a dog named max ."},
        {"speaker": 1, "text": "what do you cook ?"},
    ]
    assert (no_persona["pair_id"], no_persona["user1_persona"], no_persona["user2_persona"]) == (
        "convai2_fixture-000003",
        [],
        [],
    )
    assert [t["speaker"] for t in no_persona["turns"]] == [1, 2, 1]
    assert silence["turns"][0] == {"speaker": 2, "text": "hello , anyone here ?"}
    with pytest.raises(SeedDataError, match="line 9 does not start"):
        read_seed(path, strict=True)


# JSONL


@pytest.mark.parametrize("name", ["records.jsonl", "records.jsonl.gz"])
def test_jsonl_round_trip(tmp_path, name):
    records = [{**r, "iteration": 2} for r in read_seed(SAMPLE_CSV, limit=20).records]
    path = tmp_path / name
    write_jsonl(records, path)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert guess_format(path) == "jsonl"
    result = read_seed(path)
    assert (result.rows_read, result.malformed, result.records) == (20, [], records)
    assert list(result.records[0]) == ["pair_id", "user1_persona", "user2_persona", "turns", "source", "iteration"]


def test_jsonl_malformed_lines(tmp_path):
    lines = [
        json.dumps(make_record("a")),
        "",
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps(make_record("b", turns=[{"speaker": 3, "text": "hi"}])),
        json.dumps(make_record("a")),
        json.dumps({k: v for k, v in make_record("ignored").items() if k != "pair_id"} | {"id": "c"}),
        json.dumps({k: v for k, v in make_record().items() if k not in ("pair_id", "source")}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = read_seed(path)
    assert result.rows_read == 7  # the blank line is not a row
    assert [r["pair_id"] for r in result.records] == ["a", "c", "mixed-000008"]
    assert "id" not in result.records[1] and result.records[2]["source"] == "jsonl:mixed.jsonl"
    assert [(bad.row, bad.reason.split(":")[0]) for bad in result.malformed] == [
        (3, "invalid JSON"),
        (4, "expected a JSON object, got list"),
        (5, "turn 1 speaker must be 1 or 2, got 3"),
        (6, "duplicate pair_id 'a' (first at row 1)"),
    ]


@pytest.mark.skipif(not SPC_FORK_TRAIN.exists(), reason=f"shared SPC fork data not present at {SPC_FORK_TRAIN}")
def test_spc_fork_jsonl_with_limit():
    result = read_seed(SPC_FORK_TRAIN, limit=50)
    assert len(result.records) == 50
    # Line 39 of the fork has an empty `turns` list, so 51 lines give 50 records.
    assert (result.rows_read, result.malformed) == (51, [Malformed(39, "no turns")])
    assert result.records[0]["pair_id"] == "SPC_transformed_data_train_00001"
    assert all("id" not in r and r["source"] == "jsonl:spc_train.jsonl.gz" for r in result.records)
    assert all(len(r["user1_persona"]) >= 3 and r["turns"][0]["speaker"] == 1 for r in result.records)


# datasets folders and the Hub


def test_dataset_folder_round_trip(tmp_path):
    records = [
        {**r, "scores": {"faithful": i / 10}, "passed": i % 2 == 0}
        for i, r in enumerate(read_seed(SAMPLE_CSV, limit=10).records)
    ]
    write_dataset(records, tmp_path / "seed")
    assert guess_format(tmp_path / "seed") == "dataset"
    result = read_seed(tmp_path / "seed")
    assert (result.rows_read, result.malformed, result.records) == (10, [], records)


def test_dataset_dict_split_selection(tmp_path):
    from datasets import DatasetDict

    train, test = [make_record("t1"), make_record("t2")], [make_record("x1", source="elsewhere")]
    DatasetDict({"train": records_to_dataset(train), "test": records_to_dataset(test)}).save_to_disk(tmp_path / "dd")
    assert guess_format(tmp_path / "dd") == "dataset"
    assert read_seed(tmp_path / "dd").records == train
    assert read_seed(tmp_path / "dd", split="test").records == test
    with pytest.raises(SeedDataError, match=r"splits \['train', 'test'\]"):
        read_seed(tmp_path / "dd", split="validation")
    DatasetDict({"validation": records_to_dataset(test)}).save_to_disk(tmp_path / "no_train")
    with pytest.raises(SeedDataError, match=r"splits \['validation'\]"):
        read_seed(tmp_path / "no_train")


def test_dataset_with_spc_and_hf_loader_columns(tmp_path):
    from datasets import Dataset

    Dataset.from_dict(
        {
            "user_1_persona": [["I like tea."], ["I run."]],
            "user_2_persona": [["I ski."], []],
            "utterances": [["Hi!", "Hello.", "Bye."], ["Hey", "Yo"]],
        }
    ).save_to_disk(tmp_path / "hf")
    result = read_seed(tmp_path / "hf")
    assert result.malformed == [Malformed(2, "empty user 2 persona")]
    assert result.records[0]["turns"] == [
        {"speaker": 1, "text": "Hi!"},
        {"speaker": 2, "text": "Hello."},
        {"speaker": 1, "text": "Bye."},
    ]
    assert result.records[0]["pair_id"] == "hf-000001" and result.records[0]["source"] == "dataset:hf"

    columns = {name: [cell] for name, cell in zip(SPC_COLUMNS, ["I like tea.", "I ski.", "User 1: Hi\nUser 2: Yo"])}
    Dataset.from_dict(columns).save_to_disk(tmp_path / "spc")
    assert read_seed(tmp_path / "spc").records[0]["turns"] == [
        {"speaker": 1, "text": "Hi"},
        {"speaker": 2, "text": "Yo"},
    ]
    Dataset.from_dict({"text": ["hello"]}).save_to_disk(tmp_path / "other")
    with pytest.raises(SeedDataError, match=r"unknown columns \['text'\]"):
        read_seed(tmp_path / "other")


def test_export_records_picks_writer_from_suffix(tmp_path):
    records = [make_record("a"), make_record("b")]
    for name, kind in [("out.csv", "spc-csv"), ("out.jsonl", "jsonl"), ("out.jsonl.gz", "jsonl"), ("out", "dataset")]:
        export_records(records, tmp_path / name)
        assert guess_format(tmp_path / name) == kind
        assert [r["turns"] for r in read_seed(tmp_path / name).records] == [r["turns"] for r in records]
    assert gzip.open(tmp_path / "out.jsonl.gz", "rt").readline().startswith('{"pair_id": "a"')


def test_guess_format_errors(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "table.parquet").write_bytes(b"PAR1")
    cases = {
        tmp_path / "empty_dir": "not a `save_to_disk` dataset",
        tmp_path / "table.parquet": "cannot tell the format",
        "data/missing.csv": "not an existing file",
        "not a hub id": "not an existing file",
    }
    for path, message in cases.items():
        with pytest.raises(SeedDataError, match=message):
            guess_format(path)
    assert guess_format("google/Synthetic-Persona-Chat") == "hub"
    with pytest.raises(SeedDataError, match="unknown seed format 'parquet'"):
        read_seed(SAMPLE_CSV, format="parquet")
    with pytest.raises(SeedDataError, match="no such file"):
        read_seed(tmp_path / "nope.jsonl", format="jsonl")


def test_hub_id_offline_names_the_id():
    with pytest.raises(SeedDataError) as error:
        read_seed("google/Synthetic-Persona-Chat", split="test")
    message = str(error.value)
    assert "'google/Synthetic-Persona-Chat'" in message and "HF_HUB_OFFLINE is set" in message
    assert "local path" in message


def test_unreadable_input_is_a_seed_data_error(tmp_path):
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(SeedDataError, match="cannot read"):
        read_seed(path)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("1 caf\xe9\tok\n".encode("latin-1"))
    with pytest.raises(SeedDataError, match=r"latin.txt is not UTF-8 text \(byte 0xe9 at offset 5\); convert it"):
        read_seed(latin)


# What a seed must be: some usable records, text, in the format it is read as


def test_a_header_only_csv_is_an_error_that_says_what_was_read(tmp_path):
    path = write_csv(tmp_path / "empty.csv", [])
    for kwargs in ({}, {"limit": 5}, {"format": "spc-csv"}):
        with pytest.raises(SeedDataError) as error:
            read_seed(path, **kwargs)
        message = str(error.value)
        assert message.startswith(f"{path} has no usable spc-csv conversations (read 0 rows: 0 kept, 0 malformed)")
        assert "needs rows under its header with both personas" in message and "\n" not in message
    bad = write_csv(tmp_path / "bad.csv", [["I ski.", "", "User 1: Hi\nUser 2: Yo"], ["I ski.", "I run.", " "]])
    with pytest.raises(SeedDataError, match=r"read 2 rows: 0 kept, 2 malformed \(row 1: empty user 2 persona; row 2"):
        read_seed(bad, limit=1)
    with pytest.raises(SeedDataError, match="limit must be at least 1"):
        read_seed(SAMPLE_CSV, limit=0)


def test_an_empty_jsonl_or_dataset_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(SeedDataError, match="has no usable jsonl conversations .read 0 rows"):
        read_seed(tmp_path / "empty.jsonl")
    from datasets import Dataset

    Dataset.from_dict({name: [] for name in RECORD_FEATURES}, features=RECORD_FEATURES).save_to_disk(
        tmp_path / "empty"
    )
    with pytest.raises(SeedDataError, match="as it does on a dataset saved with 0 rows"):
        read_seed(tmp_path / "empty")
    records_to_dataset([make_record(user1_persona=[], user2_persona=[])]).save_to_disk(tmp_path / "bad")
    with pytest.raises(SeedDataError, match=r"has no usable dataset conversations \(read 1 rows: 0 kept, 1 malformed"):
        read_seed(tmp_path / "bad")


def encode(text: str, encoding: str) -> bytes:
    """`text` as `encoding`, with the byte-order mark a spreadsheet's "Unicode text" export writes."""
    boms = {"utf-16-be": codecs.BOM_UTF16_BE, "utf-16-le": codecs.BOM_UTF16_LE, "utf-32-le": codecs.BOM_UTF32_LE}
    return boms.get(encoding, b"") + text.encode(encoding)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-8-sig", "utf-32-le"])
@pytest.mark.parametrize("name", ["seed.csv", "seed.csv.gz"])
def test_a_csv_with_a_byte_order_mark_reads_like_utf8(tmp_path, encoding, name):
    data = encode(SAMPLE_CSV.read_text(encoding="utf-8"), encoding)
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    assert guess_format(path) == "spc-csv"
    result, expected = read_seed(path, limit=50), read_seed(SAMPLE_CSV, limit=50)
    assert [r["turns"] for r in result.records] == [r["turns"] for r in expected.records]
    assert result.records[0]["user1_persona"] == expected.records[0]["user1_persona"]
    assert result.records[0]["user1_persona"][0] == "I love to bake cookies."  # no mark left in the first cell


def test_utf16_without_a_byte_order_mark_is_refused_clearly(tmp_path):
    path = tmp_path / "seed.csv"
    path.write_bytes(SAMPLE_CSV.read_text(encoding="utf-8").encode("utf-16-le"))
    for call in (guess_format, read_seed, lambda p: read_seed(p, format="spc-csv")):
        with pytest.raises(SeedDataError, match=r"seed.csv is not UTF-8 text \(NUL byte at offset 1: UTF-16 without"):
            call(path)


def test_non_utf8_bytes_name_the_file_byte_and_offset(tmp_path):
    text = SAMPLE_CSV.read_text(encoding="utf-8")
    at = text.index("Knitting")  # first row, so guessing the format finds it too
    path = tmp_path / "cp1252.csv"
    path.write_bytes(text[:at].encode() + b"\x93" + text[at:].encode())
    for call in (guess_format, read_seed, lambda p: read_seed(p, format="spc-csv")):
        with pytest.raises(SeedDataError) as error:
            call(path)
        assert str(error.value) == (
            f"{path} is not UTF-8 text (byte 0x93 at offset {len(text[:at].encode())}); "
            "convert it with `iconv -f <its encoding, e.g. latin1> -t utf-8`"
        )
    late = tmp_path / "late.jsonl.gz"  # past the first chunks the reader decodes: still the file's own offset
    lines = [json.dumps(make_record(f"p-{i}")) for i in range(2000)]
    raw = (
        "\n".join(lines).encode()
        + b"\n"
        + json.dumps(make_record("caf\u00e9"), ensure_ascii=False).encode("latin-1")
        + b"\n"
    )
    late.write_bytes(gzip.compress(raw))
    offset = raw.index(b"\xe9")
    with pytest.raises(SeedDataError, match=rf"byte 0xe9 at offset {offset} of the uncompressed data"):
        read_seed(late)


def test_personachat_read_of_an_spc_csv_is_refused_and_names_the_right_format():
    with pytest.raises(SeedDataError) as error:
        read_seed(SAMPLE_CSV, format="personachat")
    message = str(error.value)
    assert message.startswith(
        f"{SAMPLE_CSV} does not look like personachat data (read 7 rows: 2 kept (2 with no persona and under 2 "
        "turns), 5 malformed (row 1: episode 1 starting at line 1: lines 1, 2, 3 and 641 more do not start with a "
        "line number;"
    )
    assert message.endswith("it looks like spc-csv: pass format='spc-csv' or leave the format unset")
    assert "\n" not in message and len(message) < 600
    for kwargs in ({"format": "personachat", "limit": 1}, {"format": "jsonl"}, {"format": "jsonl", "strict": True}):
        with pytest.raises(SeedDataError, match="does not look like .* it looks like spc-csv"):
            read_seed(SAMPLE_CSV, **kwargs)


def test_spc_csv_read_of_a_personachat_file_says_what_it_looks_like(tmp_path):
    path = tmp_path / "convai2.txt"
    path.write_text(PERSONACHAT, encoding="utf-8")
    with pytest.raises(
        SeedDataError, match=r"missing SPC column.*; it looks like personachat: pass format='personachat'"
    ):
        read_seed(path, format="spc-csv")


def test_numbered_lines_that_are_not_episodes_are_refused(tmp_path):
    path = tmp_path / "todo.txt"
    path.write_text("1 buy milk\n1 call mum\n1 fix the bike\n", encoding="utf-8")
    with pytest.raises(SeedDataError, match="does not look like personachat data: no kept record has a persona or 2"):
        read_seed(path)


def test_content_beats_the_suffix_when_guessing(tmp_path):
    (tmp_path / "spc.txt").write_bytes(SAMPLE_CSV.read_bytes())
    (tmp_path / "records.txt").write_text(json.dumps(make_record()) + "\n", encoding="utf-8")
    assert guess_format(tmp_path / "spc.txt") == "spc-csv"
    assert guess_format(tmp_path / "records.txt") == "jsonl"
    assert len(read_seed(tmp_path / "spc.txt").records) == 300
