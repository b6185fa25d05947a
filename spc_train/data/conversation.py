"""Conversation text <-> turns, in the SPC cell format (`User 1: ...` / `User 2: ...`, one turn per line).

The same parser reads the seed CSVs and the generator's raw outputs, so it is lenient about what it accepts and never
raises: anything that is not a recognisable turn is returned in `skipped` for the caller to count or report. The turn
forms real models write beside the SPC ones (numbered, parenthesised, bold, `User 1 -`) are accepted here; none of
them occurs in the SPC CSVs, so seeds parse as they did. What a *generated* candidate must not hold (commentary,
profile blocks, other speakers, loops) is judged in `generation/rejections.py`, not here.
"""

import re
from dataclasses import dataclass, field

# `User 1:`, `user2:`, `*User 1:*`, `* * User 2: * *`, `**User 1**:` (markdown emphasis seen in the SPC CSVs), and
# what small instruct models write: `1. User 1:`, `1) User 1:`, `- User 1:`, `(User 1): ...`, `(user 1) ...`,
# `[User 2] ...`, `__User 1:__`, `User 1 - ...`. A turn needs a separator (`:`, or a dash before a space) unless the
# label is bracketed, so `User 1's profile:` or `User 1 and User 2 ...` never read as turns; `User 12:` is not user 1.
_TURN_PREFIX = re.compile(
    r"^(?P<number>(?:\d{1,3}\s*[.)]|[-\u2022])\s*)?(?P<lead>[\s*_]*)(?P<open>[(\[]\s*)?"
    r"user\s*(?P<speaker>[12])(?!\d)(?P<close>\s*[)\]])?(?P<mid>[\s*_]*)(?P<sep>:|[-\u2013\u2014](?=\s|$))?",
    re.IGNORECASE,
)

# Name placeholders the SPC generator left in conversations: `[name]`, `[user 1's name]`, `[user 2 name]`, `[user 2]`,
# `[User1]`, `[username]`, `[your name]`, ... but not `[user 1's hometown]` or stage directions like `[Later]`.
NAME_PLACEHOLDER = re.compile(
    r"\[\s*(?:user\s*_?\s*(?P<speaker>[12])\s*(?:['\u2019]\s*s)?\s*(?:name)?|(?:your\s+|their\s+|insert\s+|user\s*)?name)\s*\]",
    re.IGNORECASE,
)


@dataclass
class ParsedConversation:
    """Turns recognised in a conversation text, and the non-blank lines that were not turns (kept to be reported)."""

    turns: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse_conversation(text: str) -> ParsedConversation:
    """Split an SPC-style conversation into `{"speaker": 1|2, "text": str}` turns.

    - CRLF / CR line ends are accepted; blank lines are ignored.
    - The `User N:` prefix is case-insensitive and tolerates `User1:` and markdown emphasis (`*User 1:*`,
      `* * User 1: * *`, `**User 1**:`, `__User 1:__`); when the prefix was emphasised, a dangling closing `*` / `_`
      at the end of the line is dropped too. A list number or bullet before it (`1. User 1:`, `2) User 2:`,
      `- User 1:`), brackets around it (`(User 1): hi`, `(user 1) hi`) and a dash for the colon (`User 1 - hi`) are
      accepted as well (see `_TURN_PREFIX`).
    - Every other non-blank line (stage directions such as `(The next day)`, `* * *`, recipe lists, a line that
      continues the previous turn, a prefix with no text) goes to `skipped`. Continuation lines are not merged into
      the previous turn on purpose: in SPC they are almost always list items or stage directions, not speech.
    - Name placeholders (`[name]`, `[user 1's name]`, ...) are kept verbatim; see `normalize_placeholders`.
    """
    parsed = ParsedConversation()
    if not isinstance(text, str) or not text:
        return parsed
    for raw_line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw_line.strip()
        if not line:
            continue
        match = _TURN_PREFIX.match(line)
        if match is None or not (match.group("sep") or (match.group("open") and match.group("close"))):
            parsed.skipped.append(line)
            continue
        utterance = line[match.end() :].strip()
        emphasis = set(match.group("lead") + match.group("mid")) & {"*", "_"}
        for mark in sorted(emphasis):
            # The emphasis around the prefix: `*User 1:* text`, `* * User 1: * * text`, `* User 1: text *`.
            utterance = utterance.lstrip(f"{mark} ")
            if re.fullmatch(rf"[^{mark}]*{re.escape(mark)}+", utterance):
                utterance = utterance.rstrip(f"{mark} ")
        if not utterance:
            parsed.skipped.append(line)
            continue
        parsed.turns.append({"speaker": int(match.group("speaker")), "text": utterance})
    return parsed


def too_short(turns: list[dict], min_turns: int) -> str | None:
    """Why `turns` is not a conversation to select or train on (no turn, one speaker, under `min_turns`), or None."""
    if not turns:
        return "no_turns"
    if len({turn["speaker"] for turn in turns}) < 2:
        return f"one_speaker: only user {turns[0]['speaker']}"
    if len(turns) < min_turns:
        return f"too_few_turns: {len(turns)} < {min_turns}"
    return None


def format_conversation(turns: list[dict]) -> str:
    """The SPC cell format: one `User N: text` line per turn, joined with LF."""
    return "\n".join(f"User {turn['speaker']}: {turn['text']}" for turn in turns)


def normalize_placeholders(text: str) -> str:
    """Map every name-placeholder variant to `[User 1's name]`, `[User 2's name]` or `[name]`.

    The SPC generator spelt the same placeholder a dozen ways; one spelling makes the placeholders a single token
    pattern for training and keeps them from looking like persona content to the critic.
    """

    def canonical(match: re.Match) -> str:
        speaker = match.group("speaker")
        return f"[User {speaker}'s name]" if speaker else "[name]"

    return NAME_PLACEHOLDER.sub(canonical, text)


def has_name_placeholder(text: str) -> bool:
    """Whether `text` holds any name placeholder (used to count them in read reports)."""
    return NAME_PLACEHOLDER.search(text) is not None
