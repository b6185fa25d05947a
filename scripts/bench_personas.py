"""Persona-set statistics on the real seed attributes, beside the paper's Table 1, and clustering time at 10k.

Embeds the 4,723 unique persona sentences of the SPC train split (the paper's seed set Π0) with all-MiniLM-L6-v2,
clusters them at several cosine-distance thresholds to find the one whose granularity matches the paper's 323
clusters, then clusters 10,000 attributes (Π0 + the first new-persona attributes of SPC's New-Persona part) and times
clustering + statistics. Run from the repository root (CPU is fine):

    .venv/bin/python scripts/bench_personas.py
    .venv/bin/python scripts/bench_personas.py --thresholds 0.1 0.3 0.5 0.65 --total 10000

The last line is `clustered N attributes in T s` (clustering + Table 1 statistics, embedding excluded).
"""

import argparse
import time
from pathlib import Path

PAPER = {"attributes": 4723, "clusters": 323, "inter_cluster_distance": 0.836, "mean_length": 7.65}
PAPER_SPC = {"attributes": 10371, "clusters": 553, "inter_cluster_distance": 0.863}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "spc-fork"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA, help="Folder with spc_train / new_spc JSONL.")
    parser.add_argument("--embedder", default="sentence-transformers/all-MiniLM-L6-v2", help="Sentence embedder.")
    parser.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7],
        help="Cosine-distance thresholds to sweep on the seed set.",
    )
    parser.add_argument("--total", type=int, default=10000, help="Attributes in the large clustering run.")
    parser.add_argument("--batch_size", type=int, default=128, help="Embedding batch size.")
    return parser


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def row(name: str, stats: dict, seconds: float | None = None) -> str:
    took = f"{seconds:8.1f}s" if seconds is not None else " " * 9
    return (
        f"{name:<34} {stats['attributes']:>7,} {stats['clusters']:>8,} {stats['inter_cluster_distance']:>10.3f} "
        f"{stats['mean_length_words']:>7.2f} {stats['mean_length_tokens']:>7.2f} {took}"
    )


def main(args: argparse.Namespace) -> None:
    from spc_train.data import read_seed
    from spc_train.models import load_embedder
    from spc_train.personas.expand import (
        PersonaExpansionConfig,
        cluster_attributes,
        normalise,
        persona_set_statistics,
        seed_attributes,
    )

    seed = seed_attributes(read_seed(str(args.data_dir / "spc_train.jsonl.gz")).records)
    new = [
        a for a in seed_attributes(read_seed(str(args.data_dir / "new_spc.jsonl.gz")).records) if a not in set(seed)
    ]
    model, load_s = timed(load_embedder, args.embedder)

    def embed(texts):
        return normalise(model.encode(texts, batch_size=args.batch_size, convert_to_numpy=True))

    seed_vectors, embed_s = timed(embed, seed)
    print(f"embedder {args.embedder}: loaded in {load_s:.1f}s")
    print(f"embedded {len(seed):,} seed attributes in {embed_s:.1f}s ({len(seed) / embed_s:.0f}/s)\n")

    header = f"{'set':<34} {'attrs':>7} {'clusters':>8} {'inter-dist':>10} {'words':>7} {'tokens':>7} {'time':>9}"
    print(header + "\n" + "-" * len(header))
    counts = {}
    for threshold in args.thresholds:
        labels, cluster_s = timed(cluster_attributes, seed_vectors, threshold)
        stats = persona_set_statistics(seed, seed_vectors, labels)
        counts[threshold] = stats["clusters"]
        print(row(f"Persona-Chat seed, t={threshold:g}", stats, cluster_s))
    paper = f"{'paper: Persona-Chat seed (BERT)':<34} {PAPER['attributes']:>7,} {PAPER['clusters']:>8,} "
    print(paper + f"{PAPER['inter_cluster_distance']:>10.3f} {'':>7} {PAPER['mean_length']:>7.2f}")
    closest = min(counts, key=lambda t: abs(counts[t] - PAPER["clusters"]))
    default = PersonaExpansionConfig().distance_threshold
    print(
        f"\nthreshold closest to the paper's {PAPER['clusters']} clusters: {closest:g} ({counts[closest]} clusters); "
        f"the paper's 0.1 gives {counts.get(0.1, 'n/a')}; PersonaExpansionConfig default: {default:g}\n"
    )

    extra = new[: max(args.total - len(seed), 0)]
    extra_vectors, extra_s = timed(embed, extra)
    print(f"embedded {len(extra):,} new-persona attributes in {extra_s:.1f}s")
    import numpy as np

    texts, vectors = seed + extra, np.concatenate([seed_vectors, extra_vectors])
    labels, cluster_s = timed(cluster_attributes, vectors, default)
    stats, stats_s = timed(persona_set_statistics, texts, vectors, labels)
    generated = persona_set_statistics(extra, extra_vectors, labels[len(seed) :])
    print(header + "\n" + "-" * len(header))
    print(row(f"seed + new-persona, t={default:g}", stats, cluster_s + stats_s))
    print(row("  of which new-persona only", generated))
    paper = f"{'paper: SPC (PC expanded)':<34} {PAPER_SPC['attributes']:>7,} {PAPER_SPC['clusters']:>8,} "
    print(paper + f"{PAPER_SPC['inter_cluster_distance']:>10.3f} {'':>7} {15.9:>7.2f}  (length: new only)")
    print(f"clustering {cluster_s:.1f}s + statistics {stats_s:.2f}s")
    print(f"clustered {len(texts)} attributes in {cluster_s + stats_s:.1f}s")


if __name__ == "__main__":
    main(make_parser().parse_args())
