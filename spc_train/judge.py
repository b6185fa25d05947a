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
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

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


@dataclass
class Judge:
    """A causal LM used as a judge, with the limits of its batched forward passes."""

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

    @torch.inference_mode()
    def option_probabilities(
        self, questions: list[str], options: list[str], examples: Sequence[tuple[str, str]] = ()
    ) -> list[list[float]]:
        """P(option) for each question, renormalised over `options`; rows follow `questions`' order.

        `examples` ((question, answer) pairs) are shown before every question, as answered turns.
        """
        option_ids = [option_token_ids(self.tokenizer, option) for option in options]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        before, dropped = self.truncated, self.examples_dropped
        encoded = [self.encode(q, examples) for q in questions]
        extra = {"logits_to_keep": 1} if self._keeps_last_logits_only() else {}
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[list[float]] = [[] for _ in questions]
        raw_mass: list[float] = [0.0] * len(questions)
        top: list[int] = [0] * len(questions)
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
            # Renormalise in log space: the vocabulary's normaliser cancels, and a judge that prefers some third
            # token by a wide margin still gives the options' true ratio instead of underflowing to 0 / 0.
            logits = logits.float()
            option_logits = torch.stack([logits[:, ids].logsumexp(-1) for ids in option_ids], dim=-1)
            mass = option_logits.softmax(-1)
            on_options = (option_logits.logsumexp(-1) - logits.logsumexp(-1)).exp()
            best = logits.argmax(-1)
            for row, index in enumerate(batch):
                results[index] = mass[row].tolist()
                raw_mass[index], top[index] = float(on_options[row]), int(best[row])
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
