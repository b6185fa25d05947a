"""Evaluation numbers on the real SPC valid / test CSVs, beside the paper's (see docs/evaluation.md).

1. Dataset statistics per split: `metrics.dataset_statistics` on all conversations, and the embedding metrics of
   `evaluation.embedding_metrics` (all-MiniLM-L6-v2) on a seeded sample of `--embed_conversations` conversations
   (default 300; 0 = all; embedding is the slow part on CPU).
2. IR (tf-idf) next-utterance hit@1 (`evaluation.next_utterance`, 20 candidates) for the persona modes
   none / self / their / both, for valid -> test, test -> valid and, when the JSONL train split is there,
   train -> test (the paper's "trained SPC, tested on SPC test" setting).

Run from the repository root:

    .venv/bin/python scripts/eval_spc.py
    .venv/bin/python scripts/eval_spc.py --embed_conversations 0 --json eval_spc.json
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PAPER_TABLE12_SPC_IR = {"none": 0.1861, "self": 0.2596, "their": 0.1882, "both": 0.2493}
PAPER_TABLE2_SPC_TEST = {"none": 0.1992, "self": 0.2623}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spc_dir", type=Path, default=DATA / "spc", help="Folder with the SPC valid/test CSVs.")
    parser.add_argument(
        "--train", type=Path, default=DATA / "spc-fork" / "spc_train.jsonl.gz", help="SPC train split (optional)."
    )
    parser.add_argument("--embedder", default="sentence-transformers/all-MiniLM-L6-v2", help="Sentence embedder.")
    parser.add_argument("--embed_conversations", type=int, default=300, help="Sample size for embedding metrics.")
    parser.add_argument("--candidates", type=int, default=20, help="Candidates per next-utterance example.")
    parser.add_argument("--max_examples", type=int, default=None, help="Cap on next-utterance examples.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_embedding", action="store_true", help="Only lexical statistics and IR hit@1.")
    parser.add_argument("--json", type=Path, default=None, help="Also write all numbers here.")
    return parser


def fmt(value) -> str:
    if isinstance(value, int):
        return str(value)
    return "nan" if math.isnan(value) else f"{value:.4f}"


def main(argv=None) -> dict:
    from spc_train.data import read_seed
    from spc_train.evaluation.metrics import dataset_statistics
    from spc_train.evaluation.next_utterance import PERSONA_MODES, TfidfRanker, evaluate_ir

    args = make_parser().parse_args(argv)
    splits = {
        name: read_seed(args.spc_dir / f"Synthetic-Persona-Chat_{name}.csv").records for name in ("valid", "test")
    }
    train = read_seed(args.train).records if args.train and args.train.exists() else None
    results: dict = {"statistics": {}, "ir_hit_at_1": {}, "settings": vars(args) | {"train_found": train is not None}}

    embed = None
    if not args.skip_embedding:
        from spc_train.evaluation.embedding_metrics import embedding_statistics, sentence_embedder
        from spc_train.models import load_embedder

        embed = sentence_embedder(load_embedder(args.embedder))
    for name, records in splits.items():
        stats = dataset_statistics(records)
        if embed is not None:
            sample = records
            if 0 < args.embed_conversations < len(records):
                rng = np.random.default_rng(args.seed)
                sample = [records[i] for i in np.sort(rng.choice(len(records), args.embed_conversations, False))]
            start = time.perf_counter()
            stats |= embedding_statistics(sample, embed, seed=args.seed)
            stats["embedding_sample"] = len(sample)
            print(f"[{name}] embedding metrics on {len(sample)} conversations: {time.perf_counter() - start:.0f} s")
        results["statistics"][name] = stats

    print("\n## Dataset statistics")
    keys = list(next(iter(results["statistics"].values())))
    print("| metric | " + " | ".join(splits) + " |")
    print("|---|" + "---|" * len(splits))
    for key in keys:
        print(f"| {key} | " + " | ".join(fmt(results["statistics"][s][key]) for s in splits) + " |")

    pairs = [("valid", "test"), ("test", "valid")] + ([("train", "test")] if train is not None else [])
    data = {**splits, "train": train}
    for train_name, test_name in pairs:
        start = time.perf_counter()
        ranker = TfidfRanker().fit_records(data[train_name])
        row = {}
        for mode in PERSONA_MODES:
            row[mode] = evaluate_ir(
                ranker,
                data[test_name],
                persona=mode,
                candidates=args.candidates,
                seed=args.seed,
                max_examples=args.max_examples,
            )
        results["ir_hit_at_1"][f"{train_name}->{test_name}"] = row
        print(f"[{train_name}->{test_name}] IR evaluation: {time.perf_counter() - start:.0f} s")

    print(f"\n## IR baseline next-utterance hit@1 ({args.candidates} candidates)")
    print("| trained -> tested | examples | " + " | ".join(PERSONA_MODES) + " |")
    print("|---|---|" + "---|" * len(PERSONA_MODES))
    for pair, row in results["ir_hit_at_1"].items():
        examples = row["none"]["examples"]
        print(f"| {pair} | {examples} | " + " | ".join(fmt(row[m]["hit_at_1"]) for m in PERSONA_MODES) + " |")
    table12 = " | ".join(fmt(PAPER_TABLE12_SPC_IR[m]) for m in PERSONA_MODES)
    print(f"| paper Table 12 (trained SPC) | | {table12} |")
    table2 = " | ".join(fmt(PAPER_TABLE2_SPC_TEST[m]) if m in PAPER_TABLE2_SPC_TEST else "" for m in PERSONA_MODES)
    print(f"| paper Table 2 (trained SPC, tested SPC test; Persona = self) | | {table2} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
