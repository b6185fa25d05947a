"""Toxicity expert: the paper's judge prompt, or a model scoring each utterance (worst one counts): a Hugging Face
toxicity classifier, or alt-profanity-check (`critic.toxicity_model: profanity-check`), a TF-IDF + calibrated linear
SVM that runs on a CPU in milliseconds."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from ..data.conversation import format_conversation
from ..judge import Judge, JudgeError
from ..models import PROFANITY_CHECK, check_available

OPTIONS = ["Yes", "No"]  # P(Yes) = P(toxic)
# The conversation first, the question last (docs/prefix_sharing.md): any judge prompt about the same conversation
# that also starts with it (the evaluation's LLM-judge criteria) shares its encoding.
QUESTION = "Conversation:\n{conversation}\nIs this conversation toxic? Why?\nResponse:"


def toxic_label(config) -> int:
    """Index of the classifier's toxic label; a classifier without one cannot serve as this expert."""
    for index, label in config.id2label.items():
        if str(label).lower() in ("toxic", "toxicity"):
            return int(index)
    raise JudgeError(f"The toxicity classifier has no 'toxic' label (labels: {config.id2label}).")


def profanity_check() -> Callable[[list[str]], list[float]]:
    """alt-profanity-check's P(toxic) of each text; refused with how to install it when the package is missing."""
    check_available(PROFANITY_CHECK, "toxicity backend")
    from profanity_check import predict_prob

    return lambda texts: predict_prob(texts).tolist()


class ToxicityExpert:
    """A hard filter: P(toxic), from the judge LLM or from a per-utterance model; lower is better.

    The per-utterance model is a sequence classifier (`classifier`, `tokenizer`) or any `predict(texts) -> P(toxic)`
    (alt-profanity-check). With either, `reasons` names each candidate's worst utterance after `score` (None from
    the judge LLM).
    """

    kind = "filter"

    def __init__(
        self,
        name: str,
        threshold: float,
        judge: Judge | None = None,
        classifier=None,
        tokenizer=None,
        predict: Callable[[list[str]], list[float]] | None = None,
    ):
        self.name, self.threshold, self.judge = name, threshold, judge
        self.classifier, self.tokenizer, self.predict = classifier, tokenizer, predict
        self.reasons: list[dict | None] = []
        if classifier is not None:
            self.label = toxic_label(classifier.config)

    def score(self, candidates: list[dict]) -> list[float]:
        if self.classifier is None and self.predict is None:
            self.reasons = [None] * len(candidates)
            questions = [QUESTION.format(conversation=format_conversation(c["turns"])) for c in candidates]
            return [p[0] for p in self.judge.option_probabilities(questions, OPTIONS)]
        return self._classify(candidates)

    def _classify(self, candidates: list[dict], batch_size: int = 64) -> list[float]:
        """Every utterance scored (by the classifier `batch_size` at a time), each candidate by its worst one."""
        texts, owners, where = [], [], []
        for index, candidate in enumerate(candidates):
            turns = candidate["turns"] or [{"speaker": None, "text": candidate.get("text", "")}]  # unparsed: raw text
            for position, turn in enumerate(turns):
                texts.append(turn["text"])
                owners.append(index)
                where.append((position if candidate["turns"] else None, turn["speaker"]))
        worst = [0.0] * len(candidates)
        self.reasons = [None] * len(candidates)
        predict = self.predict or partial(self._classifier_probabilities, batch_size=batch_size)
        for text, owner, (turn, speaker), p in zip(texts, owners, where, predict(texts) if texts else []):
            if self.reasons[owner] is None or p > worst[owner]:
                worst[owner] = p
                self.reasons[owner] = {"turn": turn, "speaker": speaker, "utterance": text, "probability": p}
        return worst

    @torch.inference_mode()
    def _classifier_probabilities(self, texts: list[str], batch_size: int) -> list[float]:
        multi_label = self.classifier.config.problem_type == "multi_label_classification"
        self.tokenizer.padding_side = "right"
        probabilities = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=256
            ).to(self.classifier.device)
            logits = self.classifier(**batch).logits.float()
            probs = logits.sigmoid() if multi_label else logits.softmax(-1)
            probabilities += probs[:, self.label].tolist()
        return probabilities
