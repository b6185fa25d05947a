"""Judge health: does each judge put its probability on the answer options, and does it pass probes whose answer is
known? The judge card (`card.py`) collects both, so a blind judge is named before its numbers are read."""
