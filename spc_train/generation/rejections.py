"""Why a generated candidate is refused although it has turns: what real small models write around a conversation.

A run of SmolLM2-135M-Instruct through the loop showed candidates that parse into turns yet must not be selected or
trained on: commentary about the task ("Here's how you can make this conversation more natural:"), the prompt's
profile block written again, a third speaker, and repetition loops. The seed reader does not apply these rules (the
SPC CSVs hold stage directions and lists between turns, and must read as they always did); `parse_candidate` does.

Rules, in the order they are tried (the first that fires is the reason; lines are the ones outside the turns):

- `meta_commentary`: a line that talks about the conversation or the task: "Here is / Here's ... conversation /
  dialogue / example / version", "This / The / In this conversation ...", a `Note:` / `Explanation:` / `Summary:` /
  `Example:` label, or an assistant phrase ("I hope this helps", "let me know if", "as an AI", "more natural").
  A bare preamble that says nothing about it ("Sure! Here it is:") and the prompt's own `Conversation:` header are
  not commentary.
- `profile_block`: a `User 1 Profile:` / `User 2's persona:` line: the prompt's profiles written again.
- `third_speaker`: a `Label: text` line of someone else: `User N` with N other than 1 and 2, a chat role (Assistant,
  AI, Bot, Human, System, Narrator, Speaker, Person, ...), or a one-word capitalised name (`Alice: hi`). Scene
  labels (`Scene:`, `Setting:`, `Later:`) are stage directions, as in the seed data, and a bare `User:` is one of
  the two users without a number: both stay skipped lines, as before.
- `repetition` (over the turns' text): inside one turn, a sentence of at least `SENTENCE_MIN_WORDS` words said
  `SENTENCE_REPEATS` or more times ("I love eating. I love eating. I love eating.") or a word `NGRAM`-gram occurring
  `NGRAM_REPEATS` or more times (a loop without sentence punctuation: "and we ate and we ate and we ate and ...");
  across turns, a run of 1 to `MAX_LOOP_TURNS` consecutive turns followed at once by the same run again, same
  speakers and same words (`X X`, `A B A B`, `A B C A B C`); and echoes: `ECHO_SHARE` or more of the turns each
  say again, nearly word for word, an earlier turn of either speaker (`ECHO_SIMILARITY` or more of their words in
  common, in order, over turns of `ECHO_MIN_WORDS` words or more). The SmolLM2 conversations that the critic
  selected and the generator then learned to loop on were of this kind ("Hey Sarah. I'm Emily. I'm 60 years old.
  I'm a librarian." three times, the greeting varied; docs/real-models.md).

The repetition thresholds come from the SPC data: SPC speakers repeat backchannels ("Oh, that's cool.", "Yeah, it
is.") across a conversation and write anaphora ("I love to go swimming, I love to go hiking, I love to go ..."), so a
sentence or a turn said again somewhere later is not a loop (counting those would refuse 13% of the SPC test and
valid conversations); a loop repeats at once, or inside one turn. With the loop rules, 2 of the 1,968 SPC test /
valid conversations and 14 of the 19,939 of the SPC fork are refused, each for a two-turn exchange said twice in a
row. SPC speakers also say a long sentence again later (16% of the conversations have two turns 90% alike), but
rarely many: the echo rule refuses 2 of the 1,966 SPC test / valid conversations and 21 of the 19,902 of the fork,
against 28 of the 71 conversations that the SmolLM2 runs of 2026-11-30 and 12-01 selected.
"""

from __future__ import annotations

import re
from collections import Counter
from difflib import SequenceMatcher

from ..data.conversation import ParsedConversation

SENTENCE_MIN_WORDS = 3  # "Yes. Yes. Yes." is emphasis, not a loop
SENTENCE_REPEATS = 3
NGRAM = 8  # SPC says "I love to go ..." three times in a turn, never the same 8 words
NGRAM_REPEATS = 3
MAX_LOOP_TURNS = 3
ECHO_MIN_WORDS = 6  # "Oh, that's cool." said again is a backchannel
ECHO_SIMILARITY = 0.7  # difflib's ratio over the two turns' words
ECHO_SHARE = 0.3

_TOPIC = r"(?:conversations?|dialog(?:ue)?s?|chats?|examples?|exchanges?|versions?)"
_META = [
    re.compile(rf"\b(?:here(?:'s|\u2019s|\s+is|\s+are)|below\s+is|the\s+following\s+is)\b.*\b{_TOPIC}\b", re.I),
    re.compile(rf"^\W*(?:in\s+)?(?:this|that|the|the\s+above|above)\s+{_TOPIC}\b", re.I),
    re.compile(r"^\W*(?:notes?|explanation|summary|analysis|disclaimer|example|output|p\.?\s?s\.?)\s*\W*\s*:", re.I),
    re.compile(r"\b(?:as\s+an\s+ai|language\s+model|i\s+hope\s+(?:this|that)\s+helps|let\s+me\s+know\s+if)\b", re.I),
    re.compile(rf"\b(?:more\s+natural|make\s+(?:this|the|it)\s+{_TOPIC})\b", re.I),
]
_PROFILE = re.compile(r"^[\W\d]*user\s*[12]\s*(?:['\u2019]s)?\s*(?:profiles?|personas?)\b", re.I)
_LABEL = re.compile(r"^[\s*_#>\-\u2022\d.)(\[]*(?P<label>[A-Za-z][\w'\u2019-]*(?:\s+\d+)?)[\s*_)\]]*:\s*\S")
_ROLES = {
    "assistant", "ai", "bot", "chatbot", "human", "system", "narrator", "moderator", "host", "speaker", "person",
    "friend", "stranger", "customer", "agent", "me", "you",
}  # fmt: skip
_STAGE = {"scene", "setting", "location", "place", "time", "later", "context", "conversation", "topic", "title"}


def _clip(line: str, width: int = 80) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def _third_speaker(line: str) -> bool:
    match = _LABEL.match(line)
    if match is None:
        return False
    label = match.group("label")
    head = label.split()[0].lower()
    if re.fullmatch(r"user\s*\d+", label, re.I):
        return True  # `User 1:` / `User 2:` would have been turns
    if head == "user":
        return False  # one of the two, number missing: a skipped line, as always (the tiny generator writes these)
    if head in _ROLES:
        return True
    return head not in _STAGE and label.isalpha() and label[0].isupper()


def _normal(text: str) -> str:
    return " ".join(re.findall(r"[\w']+", text.lower()))


def _echoes(texts: list[str]) -> str | None:
    """Over the turns' normalised texts (`_normal`)."""
    words = [text.split() for text in texts]
    long = [i for i, w in enumerate(words) if len(w) >= ECHO_MIN_WORDS]
    echoes = []
    for later, j in enumerate(long):
        for i in long[:later]:
            if SequenceMatcher(None, words[i], words[j], autojunk=False).ratio() >= ECHO_SIMILARITY:
                echoes.append((j, i))
                break
    if words and len(echoes) >= ECHO_SHARE * len(words):
        j, i = echoes[0]
        return f"{len(echoes)} of {len(words)} turns say an earlier turn again (turn {j} echoes turn {i})"
    return None


def _repetition(turns: list[dict]) -> str | None:
    for position, turn in enumerate(turns):
        sentences = [_normal(sentence) for sentence in re.split(r"(?<=[.!?])\s+", turn["text"])]
        counted = Counter(sentence for sentence in sentences if len(sentence.split()) >= SENTENCE_MIN_WORDS)
        if counted and (top := counted.most_common(1)[0])[1] >= SENTENCE_REPEATS:
            return f"turn {position} says {_clip(top[0], 60)!r} {top[1]} times"
        words = _normal(turn["text"]).split()
        grams = Counter(tuple(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1))
        if grams and (top := grams.most_common(1)[0])[1] >= NGRAM_REPEATS:
            return f"turn {position} says {' '.join(top[0])!r} {top[1]} times"
    keys = [(turn["speaker"], _normal(turn["text"])) for turn in turns]
    for size in range(1, MAX_LOOP_TURNS + 1):
        for start in range(len(keys) - 2 * size + 1):
            if keys[start : start + size] == keys[start + size : start + 2 * size]:
                which = f"turns {start}-{start + size - 1} are" if size > 1 else f"turn {start} is"
                return f"{which} said again at once"
    return _echoes([text for _, text in keys])


def reject_reason(parsed: ParsedConversation) -> str:
    """`"rule: detail"` for the first rule (module docstring) the candidate breaks, or "" when it breaks none."""
    for rule, fires in (
        ("meta_commentary", lambda line: any(pattern.search(line) for pattern in _META)),
        ("profile_block", _PROFILE.match),
        ("third_speaker", _third_speaker),
    ):
        line = next((line for line in parsed.skipped if fires(line)), None)
        if line is not None:
            return f"{rule}: {_clip(line)}"
    loop = _repetition(parsed.turns)
    return f"repetition: {loop}" if loop else ""
