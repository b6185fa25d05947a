"""Natural-language inference, shared by the profile consistency check (paper §3.1.2) and NLI-based experts.

Two real backends answer the same question, `entailment(premises, hypotheses) -> list[float]`:
- `ClassifierNli`: a sequence classifier with entailment and contradiction labels (e.g. a DeBERTa MNLI
  cross-encoder), reading text pairs through the tokenizer's own pair encoding;
- `Seq2SeqNli`: a T5 model that answers "1" (entailment) or "0" like google/t5_xxl_true_nli_mixture, the public
  match for the paper's T5 trained on TRUE, read from the first decoder step's logits in one forward pass.
`load_nli` picks the backend from the model config and checks labels / answer tokens before loading any weights, so
a wrong model fails in seconds rather than after an hour of negations.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch

from .configs import ModelSpec
from .models import check_spec, load_classifier, load_seq2seq_lm, load_tokenizer

logger = logging.getLogger(__name__)

TRUE_TEMPLATE = "premise: {premise} hypothesis: {hypothesis}"


class NliError(ValueError):
    """A model that cannot serve as the NLI backend; the message says what it has and what is needed."""


class NliBackend(Protocol):
    def entailment(self, premises: list[str], hypotheses: list[str]) -> list[float]:
        """P(premise entails hypothesis) for each pair."""
        ...


def nli_label_ids(id2label: dict, where: str = "the NLI classifier") -> tuple[int, int]:
    """(entailment index, contradiction index), matched case-insensitively ("ENTAILMENT", "contradiction", ...)."""
    prefixes = {"entailment": "entail", "contradiction": "contradict"}
    found: dict[str, int] = {}
    for index, label in sorted(id2label.items(), key=lambda item: int(item[0])):
        for name, prefix in prefixes.items():
            if str(label).lower().startswith(prefix):
                found.setdefault(name, int(index))
    missing = [name for name in prefixes if name not in found]
    if missing:
        raise NliError(
            f"{where} has no {' or '.join(missing)} label (id2label: {dict(id2label)}). Use a 3-way NLI model "
            "(entailment / neutral / contradiction, e.g. an MNLI cross-encoder) or a T5 TRUE-style seq2seq model."
        )
    return found["entailment"], found["contradiction"]


def answer_token_id(tokenizer, answer: str) -> int:
    """The single token a seq2seq NLI model writes for `answer`; the score reads its logit at the first step."""
    ids = tokenizer.encode(answer, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise NliError(
            f"The seq2seq NLI tokenizer writes the answer {answer!r} as {pieces} ({len(ids)} tokens), not one known "
            "token; a TRUE-style model answering '1'/'0' needs each as a single token."
        )
    return ids[0]


def _batches(premises: list[str], hypotheses: list[str], size: int):
    if len(premises) != len(hypotheses):
        raise ValueError(f"Got {len(premises)} premises for {len(hypotheses)} hypotheses.")
    for start in range(0, len(premises), size):
        yield premises[start : start + size], hypotheses[start : start + size]


class ClassifierNli:
    """An NLI sequence classifier: softmax over its labels, entailment and contradiction read by label name."""

    def __init__(self, model, tokenizer, batch_size: int = 32, max_length: int = 256):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.entailment_id, self.contradiction_id = nli_label_ids(model.config.id2label)

    @torch.inference_mode()
    def probabilities(self, premises: list[str], hypotheses: list[str]) -> torch.Tensor:
        """Label probabilities, one row per pair, in the model's label order."""
        rows = []
        for p, h in _batches(premises, hypotheses, self.batch_size):
            encoded = self.tokenizer(
                p, h, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.model.device)
            rows.append(torch.softmax(self.model(**encoded).logits.float(), dim=-1).cpu())
        return torch.cat(rows) if rows else torch.zeros(0, len(self.model.config.id2label))

    def entailment(self, premises: list[str], hypotheses: list[str]) -> list[float]:
        return self.probabilities(premises, hypotheses)[:, self.entailment_id].tolist()

    def contradiction(self, premises: list[str], hypotheses: list[str]) -> list[float]:
        return self.probabilities(premises, hypotheses)[:, self.contradiction_id].tolist()


class Seq2SeqNli:
    """A TRUE-style T5: input "premise: P hypothesis: H"; score = P("1") / (P("1") + P("0")) at the first step."""

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int = 512):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.yes_id, self.no_id = answer_token_id(tokenizer, "1"), answer_token_id(tokenizer, "0")
        self.start_id = model.config.decoder_start_token_id
        if self.start_id is None:
            raise NliError("The seq2seq NLI model's config has no decoder_start_token_id.")

    @torch.inference_mode()
    def entailment(self, premises: list[str], hypotheses: list[str]) -> list[float]:
        scores: list[float] = []
        for p, h in _batches(premises, hypotheses, self.batch_size):
            texts = [TRUE_TEMPLATE.format(premise=a, hypothesis=b) for a, b in zip(p, h)]
            encoded = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.model.device)
            start = torch.full((len(texts), 1), self.start_id, dtype=torch.long, device=self.model.device)
            logits = self.model(**encoded, decoder_input_ids=start).logits[:, 0, [self.yes_id, self.no_id]]
            scores += torch.softmax(logits.float(), dim=-1)[:, 0].tolist()
        return scores


def check_nli(spec: ModelSpec):
    """Everything that can be checked without the weights: the model exists, and has entailment/contradiction labels
    (classifier) or single-token "1"/"0" answers (seq2seq). Returns (config, tokenizer)."""
    from transformers import AutoConfig

    if not spec.name_or_path:
        raise NliError("No NLI model set: set `personas.nli_model` (an MNLI classifier or a T5 TRUE-style model).")
    check_spec(spec, "nli")
    config = AutoConfig.from_pretrained(
        spec.name_or_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    tokenizer = load_tokenizer(spec, padding_side="right")
    if getattr(config, "is_encoder_decoder", False):
        for answer in ("1", "0"):
            answer_token_id(tokenizer, answer)
    else:
        nli_label_ids(config.id2label, f"The NLI classifier '{spec.name_or_path}'")
    return config, tokenizer


def load_nli(spec: ModelSpec, batch_size: int | None = None) -> ClassifierNli | Seq2SeqNli:
    """The NLI backend for `spec`: encoder-decoder configs -> `Seq2SeqNli`, anything else -> `ClassifierNli`.

    The checks run before the (possibly large) weights are read."""
    config, tokenizer = check_nli(spec)
    kwargs = {"batch_size": batch_size} if batch_size else {}
    if getattr(config, "is_encoder_decoder", False):
        logger.debug("NLI: seq2seq TRUE-style backend from %s.", spec.name_or_path)
        return Seq2SeqNli(load_seq2seq_lm(spec), tokenizer, **kwargs)
    logger.debug("NLI: sequence-classifier backend from %s.", spec.name_or_path)
    return ClassifierNli(load_classifier(spec, role="nli"), tokenizer, **kwargs)
