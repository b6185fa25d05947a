"""Toxicity expert: the paper's judge prompt, or a toxicity classifier scoring each utterance (worst one counts)."""

from __future__ import annotations

import torch

from ..data.conversation import format_conversation
from ..judge import Judge, JudgeError

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


class ToxicityExpert:
    """A hard filter: P(toxic), from the judge LLM or from a sequence classifier; lower is better.

    With a classifier, `reasons` names each candidate's worst utterance after `score` (None from the judge LLM).
    """

    kind = "filter"

    def __init__(self, name: str, threshold: float, judge: Judge | None = None, classifier=None, tokenizer=None):
        self.name, self.threshold, self.judge = name, threshold, judge
        self.classifier, self.tokenizer = classifier, tokenizer
        self.reasons: list[dict | None] = []
        if classifier is not None:
            self.label = toxic_label(classifier.config)

    def score(self, candidates: list[dict]) -> list[float]:
        if self.classifier is None:
            self.reasons = [None] * len(candidates)
            questions = [QUESTION.format(conversation=format_conversation(c["turns"])) for c in candidates]
            return [p[0] for p in self.judge.option_probabilities(questions, OPTIONS)]
        return self._classify(candidates)

    @torch.inference_mode()
    def _classify(self, candidates: list[dict], batch_size: int = 64) -> list[float]:
        texts, owners, where = [], [], []
        for index, candidate in enumerate(candidates):
            turns = candidate["turns"] or [{"speaker": None, "text": candidate.get("text", "")}]  # unparsed: raw text
            for position, turn in enumerate(turns):
                texts.append(turn["text"])
                owners.append(index)
                where.append((position if candidate["turns"] else None, turn["speaker"]))
        multi_label = self.classifier.config.problem_type == "multi_label_classification"
        worst = [0.0] * len(candidates)
        self.reasons = [None] * len(candidates)
        self.tokenizer.padding_side = "right"
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=256
            ).to(self.classifier.device)
            logits = self.classifier(**batch).logits.float()
            probs = logits.sigmoid() if multi_label else logits.softmax(-1)
            for offset, p in enumerate(probs[:, self.label].tolist()):
                owner = owners[start + offset]
                if self.reasons[owner] is None or p > worst[owner]:
                    worst[owner] = p
                    turn, speaker = where[start + offset]
                    utterance = texts[start + offset]
                    self.reasons[owner] = {"turn": turn, "speaker": speaker, "utterance": utterance, "probability": p}
        return worst
