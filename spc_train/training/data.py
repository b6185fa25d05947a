"""Selected conversations as SFT rows: the zero-shot generator prompt -> the conversation.

Conversational prompt-completion rows, so TRL applies the generator's chat template, ends the completion with its
end-of-turn token, and trains on the completion only (`completion_only_loss`).
"""

from __future__ import annotations

from ..data.conversation import format_conversation
from ..data.prompts import as_messages, generator_prompt


def sft_row(record: dict, examples: list[dict] | None = None) -> dict:
    return {
        "prompt": as_messages(generator_prompt(record, examples or [])),
        "completion": [{"role": "assistant", "content": format_conversation(record["turns"])}],
        "pair_id": record["pair_id"],
    }


def sft_rows(records: list[dict]) -> list[dict]:
    return [sft_row(record) for record in records]
