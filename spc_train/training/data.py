"""Selected conversations as SFT rows: the zero-shot generator prompt -> the conversation.

Conversational prompt-completion rows, so TRL applies the generator's chat template, ends the completion with its
end-of-turn token, and trains on the completion only (`completion_only_loss`).

Seed replay (`loop.replay_seed`) adds real conversations to an iteration's rows, as self-training recipes mix gold data
into their own samples: a weak generator's selection is a handful of rows, and training on it alone can move the
generator off the format. A replayed conversation is cut at a turn boundary to what the generator may write
(`generation.max_new_tokens`, its end-of-turn token included), as a truncated candidate loses its unfinished turn.
"""

from __future__ import annotations

import random

from ..data.conversation import format_conversation, too_short
from ..data.prompts import as_messages, generator_prompt
from ..data.users import outside


def sft_row(record: dict, examples: list[dict] | None = None) -> dict:
    return {
        "prompt": as_messages(generator_prompt(record, examples or [])),
        "completion": [{"role": "assistant", "content": format_conversation(record["turns"])}],
        "pair_id": record["pair_id"],
        "source": record.get("source", ""),
    }


def sft_rows(records: list[dict]) -> list[dict]:
    return [sft_row(record) for record in records]


def fit_turns(tokenizer, turns: list[dict], max_new_tokens: int) -> list[dict]:
    """The longest opening of `turns` that the generator can write, with its end-of-turn token, in `max_new_tokens`."""
    text = [format_conversation(turns[: i + 1]) for i in range(len(turns))]
    lengths = [len(ids) for ids in tokenizer(text, add_special_tokens=False)["input_ids"]] if turns else []
    return turns[: sum(length < max_new_tokens for length in lengths)]


def replay_records(
    seed: list[dict], taken: list[dict], count: int, *, tokenizer, max_new_tokens: int, min_turns: int, rng_seed: str
) -> list[dict]:
    """`count` seed conversations drawn by `rng_seed`, none of `taken` (the run's pairs, whose conversations the loop
    generates and measures, and the referee's held-out pairs) and none sharing a user with them (`data.users`: a
    persona seen in training would leak into what is measured), each cut to fit `max_new_tokens`; one left too
    short to parse (`too_short`) is passed over."""
    others = outside(seed, taken)
    random.Random(rng_seed).shuffle(others)
    records = []
    for record in others:
        if len(records) == count:
            break
        turns = fit_turns(tokenizer, record["turns"], max_new_tokens)
        if not too_short(turns, min_turns):
            records.append({**record, "turns": turns, "source": f"replay:{record.get('source') or 'seed'}"})
    return records
