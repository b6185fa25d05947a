"""Reading a judge's answer from its next-token probabilities: no sampling, no text parsing.

Shared by the critic's experts and the evaluation's judges (detection test, profile extraction, LLM-judge scores),
so it lives below both stages.

A judge prompt ends where the answer begins; one batched forward pass gives the probability of each answer option
("Yes"/"No", "1"/"2"). Options are matched to single tokens of the judge's tokenizer, with and without a leading space
(both are summed), and renormalised over the options. A tokenizer that cannot write an option as one token is an
error at start-up, never a silent 0.5.

A question may come with in-context examples, (question, answer) pairs shown before it: prior user/assistant turns of
a chat-template judge, or concatenated "question / Answer: answer" blocks for a plain LM. The probabilities are still
read after the final generation prompt, where the judge's own answer would begin.

Prompts that start with the same tokens are read once up to where they part (docs/prefix_sharing.md): a call's
prompts are sorted by token ids, the prefix each shares with a neighbour is encoded once, and every prompt then
encodes only its own suffix on top of a copy of that prefix's key/value cache. The key/value states of what was
read are kept (`PrefixStore`, a token budget) for the calls that follow: the five FED policies ask about the same
conversation pairs in five calls, and each later call encodes only its policy's words. The judge's weights must not
change while a store is kept (the judge role is a frozen model); `clear_prefix_cache` drops it.
"""

from __future__ import annotations

import bisect
import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

logger = logging.getLogger(__name__)


class JudgeError(ValueError):
    """The judge model cannot answer the critic's questions (e.g. an option is not a single token)."""


def option_token_ids(tokenizer, option: str) -> list[int]:
    ids = []
    for variant in (option, " " + option):
        encoded = tokenizer.encode(variant, add_special_tokens=False)
        if len(encoded) == 1:
            ids.append(encoded[0])
    if not ids:
        raise JudgeError(
            f"The judge tokenizer ({tokenizer.name_or_path}) has no single token for the answer option {option!r} "
            "(tried with and without a leading space); choose another judge model."
        )
    return sorted(set(ids))


def cache_argument(model) -> str | None:
    """The keyword a model's forward takes its key/value cache by: `cache` (transformers 5.x) or the older
    `past_key_values`; None if it takes neither."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading token ids `a` and `b` share."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return int(np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))[0])


class PrefixStore:
    """Key/value states of token sequences the judge has read, for later prompts that start the same way.

    An entry holds, per layer, keys and values of shape (heads, length, head_dim). `match` finds the stored sequence
    sharing the longest prefix with a query: in sorted order it is one of the query's two neighbours. Least recently
    used entries go first when the stored tokens exceed `budget` (0 keeps nothing).
    """

    def __init__(self, budget: int):
        self.budget, self.tokens = budget, 0
        self.keys: list[tuple[int, ...]] = []  # sorted, for `match`
        self.entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def match(self, ids: tuple[int, ...]) -> tuple[tuple[int, ...] | None, int]:
        """The stored sequence sharing the longest prefix with `ids`, and that prefix's length."""
        at = bisect.bisect_left(self.keys, ids)
        best, length = None, 0
        for key in self.keys[max(0, at - 1) : at + 1]:
            shared = common_prefix(key, ids)
            if shared > length:
                best, length = key, shared
        return best, length

    def states(self, key: tuple[int, ...], length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first `length` positions of an entry's states (views, no copy); the entry becomes the most recent."""
        self.entries.move_to_end(key)
        return [(k[:, :length], v[:, :length]) for k, v in self.entries[key]]

    def add(self, ids: tuple[int, ...], states: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if ids in self.entries or len(ids) > self.budget:
            return
        self.entries[ids] = states
        bisect.insort(self.keys, ids)
        self.tokens += len(ids)
        while self.tokens > self.budget:
            old, _ = self.entries.popitem(last=False)
            self.keys.pop(bisect.bisect_left(self.keys, old))
            self.tokens -= len(old)

    def clear(self) -> None:
        self.entries.clear()
        self.keys.clear()
        self.tokens = 0


def best_match(
    stores: list[PrefixStore], ids: tuple[int, ...]
) -> tuple[PrefixStore | None, tuple[int, ...] | None, int]:
    """The store, stored sequence and length of the longest prefix of `ids` held in any of `stores`."""
    best: tuple[PrefixStore | None, tuple[int, ...] | None, int] = (None, None, 0)
    for store in stores:
        key, length = store.match(ids)
        if length > best[2]:
            best = (store, key, length)
    return best


def shared_prefixes(encoded: list[tuple[int, ...]], minimum: int) -> list[tuple[int, ...]]:
    """Prefixes worth encoding once: for each prompt, the longest it shares with another prompt of the batch (at
    least `minimum` tokens, and short of the whole prompt, whose last token must be read), distinct and sorted.

    The longest shared prefix of a prompt is the one with a neighbour in sorted order.
    """
    order = sorted(range(len(encoded)), key=lambda i: encoded[i])
    between = [common_prefix(encoded[a], encoded[b]) for a, b in zip(order, order[1:])]
    found = set()
    for place, index in enumerate(order):
        left = between[place - 1] if place > 0 else 0
        right = between[place] if place < len(between) else 0
        length = min(max(left, right), len(encoded[index]) - 1)
        if length >= minimum:
            found.add(encoded[index][:length])
    return sorted(found)


def nesting_waves(prefixes: list[tuple[int, ...]]) -> list[list[tuple[int, ...]]]:
    """Sorted prefixes in waves: each wave's prefixes extend only prefixes of earlier waves, so a wave can reuse
    the states of those before it (a walk down the trie that sorted order spells out)."""
    waves: list[list[tuple[int, ...]]] = []
    stack: list[tuple[int, ...]] = []
    for prefix in prefixes:
        while stack and common_prefix(stack[-1], prefix) < len(stack[-1]):
            stack.pop()
        if len(waves) <= len(stack):
            waves.append([])
        waves[len(stack)].append(prefix)
        stack.append(prefix)
    return waves


def _unpadded(states: torch.Tensor, row: int, prefix_start: int, prefix_end: int, new_start: int) -> torch.Tensor:
    """One row's (heads, length, head_dim) states from a padded batch: its cached prefix, then its new tokens."""
    return torch.cat([states[row, :, prefix_start:prefix_end], states[row, :, new_start:]], dim=1)


@dataclass
class Judge:
    """A causal LM used as a judge, with the limits of its batched forward passes.

    `share_prefixes`: read the tokens prompts share once (module docstring); `prefix_cache_tokens` bounds the key/value
    states kept between calls, in tokens (0 keeps none, and then only prefixes shared within a call are reused), and
    `min_shared_tokens` is the shortest prefix worth a pass of its own.
    """

    model: object
    tokenizer: object
    batch_tokens: int = 32768
    context: int | None = None
    truncated: int = 0
    examples_dropped: int = 0
    # Of the last `option_probabilities` call, per question in order: the raw next-token probability on the answer
    # options before renormalisation (a judge that answers off-option puts little there), and its top token.
    last_option_mass: list[float] = field(default_factory=list)
    last_top_tokens: list[str] = field(default_factory=list)
    share_prefixes: bool = True
    prefix_cache_tokens: int = 65536
    min_shared_tokens: int = 16
    # Prompt tokens asked about, and tokens the model actually encoded (fewer when prefixes are shared).
    tokens_prompted: int = 0
    tokens_encoded: int = 0
    _store: PrefixStore | None = field(default=None, init=False, repr=False)
    _cache_name: str = field(default="cache", init=False, repr=False)

    def render(self, question: str, examples: Sequence[tuple[str, str]] = ()) -> str:
        """The prompt up to where the answer begins; `examples` are answered (question, answer) turns shown first."""
        if self.tokenizer.chat_template:
            messages = []
            for shown, answer in examples:
                messages += [{"role": "user", "content": shown}, {"role": "assistant", "content": answer}]
            messages.append({"role": "user", "content": question})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        shots = "".join(f"{shown}\nAnswer: {answer}\n\n" for shown, answer in examples)
        return shots + question + "\nAnswer:"

    def _limit(self) -> int | None:
        return self.context or getattr(self.model.config, "max_position_embeddings", None)

    def _fit(self, ids: list[int]) -> list[int]:
        """Cut the middle of an over-long prompt: the question's head and the answer cue at the end survive."""
        limit = self._limit()
        if limit is None or len(ids) <= limit:
            return ids
        self.truncated += 1
        head = limit // 4
        return ids[:head] + ids[len(ids) - (limit - head) :]

    def encode(self, question: str, examples: Sequence[tuple[str, str]] = ()) -> list[int]:
        """Token ids of the rendered prompt. Over the context, examples go first (the last ones), then the middle.

        Cutting the middle of a few-shot prompt would keep the examples and lose the question's own profiles.
        """
        shots = list(examples)
        limit = self._limit()
        while True:
            ids = self.tokenizer(self.render(question, shots), add_special_tokens=False)["input_ids"]
            if not shots or limit is None or len(ids) <= limit:
                return self._fit(ids)
            shots.pop()
            self.examples_dropped += 1

    def _keeps_last_logits_only(self) -> bool:
        """Whether the model can skip the LM head on all but the last position (`logits_to_keep`, HF causal LMs).

        The full logits are batch x width x vocabulary floats, of which one row per prompt is read: on the tiny CPU
        judge the LM head over every position was a quarter of the time, and on a large vocabulary the tensor alone
        takes gigabytes.
        """
        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        try:
            return "logits_to_keep" in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            return False

    def _shares_prefixes(self) -> bool:
        """Whether prompts can start from cached states: a model that takes `past_key_values` and whose cache is
        plain per-layer keys and values (no sliding window, no recurrent state), so that states can be cut and
        stacked."""
        if not self.share_prefixes:
            return False
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        try:
            if cache_argument(model) is None:
                return False
            layers = DynamicCache(config=model.config).layers
        except (AttributeError, TypeError, ValueError):
            return False
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def clear_prefix_cache(self) -> None:
        """Drop the kept key/value states (needed only if the judge's weights change)."""
        if self._store is not None:
            self._store.clear()

    @torch.inference_mode()
    def option_probabilities(
        self, questions: list[str], options: list[str], examples: Sequence[tuple[str, str]] = ()
    ) -> list[list[float]]:
        """P(option) for each question, renormalised over `options`; rows follow `questions`' order.

        `examples` ((question, answer) pairs) are shown before every question, as answered turns.
        """
        option_ids = [option_token_ids(self.tokenizer, option) for option in options]
        before, dropped = self.truncated, self.examples_dropped
        encoded = [self.encode(q, examples) for q in questions]
        results: list[list[float]] = [[] for _ in questions]
        raw_mass: list[float] = [0.0] * len(questions)
        top: list[int] = [0] * len(questions)

        def read(indices: list[int], logits: torch.Tensor) -> None:
            # Renormalise in log space: the vocabulary's normaliser cancels, and a judge that prefers some third
            # token by a wide margin still gives the options' true ratio instead of underflowing to 0 / 0.
            logits = logits.float()
            option_logits = torch.stack([logits[:, ids].logsumexp(-1) for ids in option_ids], dim=-1)
            mass = option_logits.softmax(-1)
            on_options = (option_logits.logsumexp(-1) - logits.logsumexp(-1)).exp()
            best = logits.argmax(-1)
            for row, index in enumerate(indices):
                results[index] = mass[row].tolist()
                raw_mass[index], top[index] = float(on_options[row]), int(best[row])

        self.tokens_prompted += sum(len(ids) for ids in encoded)
        if encoded and self._shares_prefixes():
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            self._cache_name = cache_argument(base)
            self._read_shared(encoded, read)
        else:
            self._read_whole(encoded, read)
        self.last_option_mass = raw_mass
        self.last_top_tokens = [self.tokenizer.decode([token]) for token in top]
        if self.examples_dropped > dropped:
            logger.warning(
                "Dropped %d in-context examples to fit judge prompts in the judge context.",
                self.examples_dropped - dropped,
            )
        if self.truncated > before:
            logger.warning("Truncated %d judge prompts to the judge context.", self.truncated - before)
        return results

    def _read_whole(self, encoded: list[list[int]], read: Callable[[list[int], torch.Tensor], None]) -> None:
        """Every prompt encoded in full: left-padded batches of similar lengths, last-position logits to `read`."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        extra = {"logits_to_keep": 1} if self._keeps_last_logits_only() else {}
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        start = 0
        while start < len(order):
            width = len(encoded[order[start]])
            size = max(1, self.batch_tokens // max(width, 1))
            batch = order[start : start + size]
            start += size
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                ids = encoded[index]
                input_ids[row, width - len(ids) :] = torch.tensor(ids)
                attention[row, width - len(ids) :] = 1
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            device = self.model.device
            logits = self.model(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                position_ids=positions.to(device),
                **extra,
            ).logits[:, -1, :]
            self.tokens_encoded += int(attention.sum())
            read(batch, logits)

    def _read_shared(self, encoded: list[list[int]], read: Callable[[list[int], torch.Tensor], None]) -> None:
        """Prefixes shared within the call encoded first (shortest nesting first), then every prompt from the longest
        stored prefix it starts with."""
        if self._store is None or self._store.budget != max(self.prefix_cache_tokens, 0):
            self._store = PrefixStore(max(self.prefix_cache_tokens, 0))
        prompts = [tuple(ids) for ids in encoded]
        # The call's own prefixes are kept apart, whatever the budget, until its prompts are read: evicted earlier,
        # their pass would be wasted.
        prefixes = PrefixStore(sum(len(ids) for ids in prompts))
        stores = [prefixes, self._store]
        wanted = [p for p in shared_prefixes(prompts, self.min_shared_tokens) if best_match(stores, p)[2] < len(p)]
        for wave in nesting_waves(wanted):
            self._forward_from_store(wave, stores, prefixes)
        self._forward_from_store(prompts, stores, self._store, read)

    def _forward_from_store(
        self,
        sequences: list[tuple[int, ...]],
        stores: list[PrefixStore],
        keep: PrefixStore,
        read: Callable[[list[int], torch.Tensor], None] | None = None,
    ) -> None:
        """Encode each sequence on top of the longest prefix it starts with in `stores`, in batches under
        `batch_tokens` (cached and new positions, padded); keep what was read in `keep` and give the last-position
        logits to `read`.

        Sequences go in sorted order, so those that share a prefix share a batch; each is matched as its batch is
        formed, against the stores as the previous batches left them.
        """

        def matched(index: int) -> tuple[int, PrefixStore | None, tuple[int, ...] | None, int]:
            store, key, length = best_match(stores, sequences[index])
            length = min(length, len(sequences[index]) - 1)  # the last token is encoded: its logits are the answer
            return (index, store, key, length) if length >= self.min_shared_tokens else (index, None, None, 0)

        order = sorted(range(len(sequences)), key=lambda i: sequences[i])
        start = 0
        while start < len(order):
            batch = [matched(order[start])]
            start += 1
            past, width = batch[0][3], len(sequences[batch[0][0]]) - batch[0][3]
            while start < len(order):
                row = matched(order[start])
                grown_past, grown_width = max(past, row[3]), max(width, len(sequences[row[0]]) - row[3])
                if (len(batch) + 1) * (grown_past + grown_width) > self.batch_tokens:
                    break
                batch.append(row)
                past, width = grown_past, grown_width
                start += 1
            self._forward_batch(sequences, batch, past, width, keep, read)

    def _forward_batch(self, sequences, batch, past: int, width: int, keep: PrefixStore, read) -> None:
        """One forward pass: each row's cached prefix right-aligned in `past` positions, its new tokens right-aligned
        in `width`, padding masked in both, positions counted from the row's own prefix."""
        from transformers import DynamicCache

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = self.model.device
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), past + width), dtype=torch.long)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        cached: list[tuple[torch.Tensor, torch.Tensor]] = []
        for row, (index, store, key, length) in enumerate(batch):
            suffix = sequences[index][length:]
            input_ids[row, width - len(suffix) :] = torch.tensor(suffix)
            attention[row, past - length : past] = 1
            attention[row, past + width - len(suffix) :] = 1
            positions[row, width - len(suffix) :] = torch.arange(length, length + len(suffix))
            if not length:
                continue
            for layer, (keys, values) in enumerate(store.states(key, length)):
                if len(cached) <= layer:
                    shape = (len(batch), keys.shape[0], past, keys.shape[-1])
                    cached.append((keys.new_zeros(shape), values.new_zeros(shape)))
                cached[layer][0][row, :, past - length :] = keys
                cached[layer][1][row, :, past - length :] = values
        extra = {"logits_to_keep": 1} if self._keeps_last_logits_only() else {}
        output = self.model(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
            use_cache=True,
            **{self._cache_name: DynamicCache(ddp_cache_data=cached) if cached else DynamicCache()},
            **extra,
        )
        self.tokens_encoded += int(attention[:, past:].sum())
        if read is not None:
            read([index for index, *_ in batch], output.logits[:, -1, :])
        returned = output.cache if self._cache_name == "cache" else output.past_key_values
        layers = [(layer.keys, layer.values) for layer in returned.layers]
        for row, (index, _, _, length) in enumerate(batch):
            if keep.budget < len(sequences[index]) or sequences[index] in keep.entries:
                continue
            spans = (past - length, past, past + width - (len(sequences[index]) - length))
            keep.add(sequences[index], [(_unpadded(k, row, *spans), _unpadded(v, row, *spans)) for k, v in layers])


class DataParallelJudge(Judge):
    """A judge shared by the processes of `accelerate launch`: each call's questions are split across them (strided,
    so every process gets long and short ones) and the answers gathered, so every process returns every answer.

    For measurements that every process runs on the same records (the evaluate stages): each makes the same calls in
    the same order, and only the forward passes are divided. With one process it is a plain `Judge`.
    """

    def option_probabilities(
        self, questions: list[str], options: list[str], examples: Sequence[tuple[str, str]] = ()
    ) -> list[list[float]]:
        from accelerate import PartialState
        from accelerate.utils import gather_object

        state = PartialState()
        count, rank = state.num_processes, state.process_index
        mine = super().option_probabilities(questions[rank::count], options, examples)
        results: list[list[float]] = [[] for _ in questions]
        mass: list[float] = [0.0] * len(questions)
        top: list[str] = [""] * len(questions)
        gathered = gather_object([(mine, self.last_option_mass, self.last_top_tokens)])  # one per process, in order
        for process, (answers, masses, tokens) in enumerate(gathered):
            results[process::count], mass[process::count], top[process::count] = answers, masses, tokens
        self.last_option_mass, self.last_top_tokens = mass, top
        return results
