"""Toxicity expert: the paper's judge prompt, or a toxicity classifier scoring each utterance (worst one counts)."""

from __future__ import annotations

import torch

from ..data.conversation import format_conversation
from .scoring import Judge, JudgeError

QUESTION = "Is this conversation toxic? Why?\nConversation:\n{conversation}\nResponse:"


def toxic_label(config) -> int:
    """Index of the classifier's toxic label; a classifier without one cannot serve as this expert."""
    for index, label in config.id2label.items():
        if str(label).lower() in ("toxic", "toxicity"):
            return int(index)
    raise JudgeError(f"The toxicity classifier has no 'toxic' label (labels: {config.id2label}).")


class ToxicityExpert:
    """A hard filter: P(toxic), from the judge LLM or from a sequence classifier; lower is better."""

    kind = "filter"

    def __init__(self, name: str, threshold: float, judge: Judge | None = None, classifier=None, tokenizer=None):
        self.name, self.threshold, self.judge = name, threshold, judge
        self.classifier, self.tokenizer = classifier, tokenizer
        if classifier is not None:
            self.label = toxic_label(classifier.config)

    def score(self, candidates: list[dict]) -> list[float]:
        if self.classifier is None:
            questions = [QUESTION.format(conversation=format_conversation(c["turns"])) for c in candidates]
            return [p[0] for p in self.judge.option_probabilities(questions, ["Yes", "No"])]
        return self._classify(candidates)

    @torch.inference_mode()
    def _classify(self, candidates: list[dict], batch_size: int = 64) -> list[float]:
        texts, owners = [], []
        for index, candidate in enumerate(candidates):
            for turn in candidate["turns"] or [{"text": candidate.get("text", "")}]:
                texts.append(turn["text"])
                owners.append(index)
        multi_label = self.classifier.config.problem_type == "multi_label_classification"
        worst = [0.0] * len(candidates)
        self.tokenizer.padding_side = "right"
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=256
            ).to(self.classifier.device)
            logits = self.classifier(**batch).logits.float()
            probs = logits.sigmoid() if multi_label else logits.softmax(-1)
            for owner, p in zip(owners[start : start + batch_size], probs[:, self.label].tolist()):
                worst[owner] = max(worst[owner], p)
        return worst
