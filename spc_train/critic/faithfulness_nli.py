"""Utterance-level faithfulness from an NLI classifier: which utterance contradicts which persona attribute.

The paper's faithfulness expert is an LLM prompt (faithfulness.py); this one adds what the prompt cannot say
reliably: the exact utterance and attribute at fault. Every utterance of a speaker is checked against every attribute
of that speaker's own profile (premise = attribute, hypothesis = utterance, the DNLI framing of persona consistency);
the candidate's score is the highest P(contradiction) over those pairs, and `reasons` keeps the pair that gave it.
A classifier trained on other label names must still have a contradiction label; anything else is refused.
"""

from __future__ import annotations

import torch

from ..judge import JudgeError


def contradiction_label(config) -> int:
    """Index of the classifier's contradiction label (case-insensitive), or an error that lists its labels."""
    for index, label in (config.id2label or {}).items():
        if str(label).lower() == "contradiction":
            return int(index)
    raise JudgeError(
        f"The NLI classifier has no 'contradiction' label (labels: {config.id2label}); "
        "faithfulness_nli needs an NLI model with entailment / neutral / contradiction labels."
    )


class NliFaithfulnessExpert:
    """A hard filter: max P(contradiction) over (own attribute, utterance) pairs; lower is better.

    After `score`, `reasons[i]` is {turn, speaker, attribute, utterance, probability} for the worst pair of
    candidate i, or None when it has nothing to check (no turns: score NaN, which fails the filter; no attributes: 0).
    """

    kind = "filter"

    def __init__(
        self, name: str, threshold: float, classifier, tokenizer, batch_size: int = 64, max_length: int = 256
    ):
        self.name, self.threshold = name, threshold
        self.classifier, self.tokenizer = classifier, tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.label = contradiction_label(classifier.config)
        self.reasons: list[dict | None] = []

    def score(self, candidates: list[dict]) -> list[float]:
        # Each distinct (attribute, utterance) pair is classified once: candidates of one user pair share their
        # profiles, and greetings repeat across them.
        pairs: dict[tuple[str, str], int] = {}
        checks: list[tuple[int, int, int, str, str]] = []  # (candidate, turn, speaker, attribute, utterance)
        for index, candidate in enumerate(candidates):
            for position, turn in enumerate(candidate["turns"]):
                for attribute in candidate[f"user{turn['speaker']}_persona"]:
                    pairs.setdefault((attribute, turn["text"]), len(pairs))
                    checks.append((index, position, turn["speaker"], attribute, turn["text"]))
        probabilities = self._contradiction(list(pairs))
        scores = [0.0 if c["turns"] else float("nan") for c in candidates]
        self.reasons = [None] * len(candidates)
        for index, position, speaker, attribute, utterance in checks:
            p = probabilities[pairs[(attribute, utterance)]]
            if self.reasons[index] is None or p > scores[index]:
                scores[index] = p
                self.reasons[index] = {
                    "turn": position,
                    "speaker": speaker,
                    "attribute": attribute,
                    "utterance": utterance,
                    "probability": p,
                }
        return scores

    @torch.inference_mode()
    def _contradiction(self, pairs: list[tuple[str, str]]) -> list[float]:
        """P(contradiction) per (premise, hypothesis), in right-padded batches of similar lengths."""
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        results = [0.0] * len(pairs)
        self.tokenizer.padding_side = "right"
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [pairs[i][0] for i in batch],
                [pairs[i][1] for i in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(self.classifier.device)
            logits = self.classifier(**encoded).logits.float()
            for i, p in zip(batch, logits.softmax(-1)[:, self.label].tolist()):
                results[i] = p
        return results
