"""Canonical conversation records, seed readers and writers, and SPC conversation text <-> turns."""

from .conversation import ParsedConversation, format_conversation, normalize_placeholders, parse_conversation
from .readers import FORMATS, SPC_COLUMNS, Malformed, ReadResult, SeedDataError, guess_format, read_seed
from .records import RECORD_FEATURES, RECORD_FIELDS, records_to_dataset, validate_record
from .writers import export_records, write_dataset, write_jsonl, write_spc_csv

__all__ = [
    "FORMATS",
    "RECORD_FEATURES",
    "RECORD_FIELDS",
    "SPC_COLUMNS",
    "Malformed",
    "ParsedConversation",
    "ReadResult",
    "SeedDataError",
    "export_records",
    "format_conversation",
    "guess_format",
    "normalize_placeholders",
    "parse_conversation",
    "read_seed",
    "records_to_dataset",
    "validate_record",
    "write_dataset",
    "write_jsonl",
    "write_spc_csv",
]
