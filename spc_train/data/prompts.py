"""The paper's generator prompt (PAPER.md §1.4), as chat messages or plain text.

The same builder makes the few-shot prompt (k example conversations from the pool, then the target pair) and the
zero-shot prompt (k = 0) on which the generator is fine-tuned, so a fine-tuned generator is prompted as it was trained.
Shared by the generate and train stages (SFT rows must be the prompt the generator is asked): it lives below both.
"""

from __future__ import annotations

from .conversation import format_conversation

INSTRUCTION = (
    "Here, we list the profiles of two users, user 1 and user 2, followed by an interesting and natural conversation "
    "between user 1 and user 2, which implicitly reflects their user profiles."
)
REQUEST = (
    "Give me more examples like this. The conversation must be more than 5 turns and less than 8 turns. "
    "The conversation must be natural, and not direct copies of their profiles."
)


def profiles_block(record: dict) -> str:
    return f"User 1 Profile: {' '.join(record['user1_persona'])}\nUser 2 Profile: {' '.join(record['user2_persona'])}"


def example_block(record: dict) -> str:
    return f"{profiles_block(record)}\nConversation:\n{format_conversation(record['turns'])}"


def generator_prompt(target: dict, examples: list[dict]) -> str:
    """The paper's template: instruction, examples, request, target profiles. No examples gives the zero-shot form."""
    parts = [INSTRUCTION, *(example_block(example) for example in examples), REQUEST, profiles_block(target)]
    return "\n\n".join(parts[:-1]) + "\n" + parts[-1]


def as_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def render(tokenizer, prompt: str) -> str:
    """The text the model sees: the chat template with a generation prompt, or a plain completion cue."""
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
    return prompt + "\nConversation:\n"
