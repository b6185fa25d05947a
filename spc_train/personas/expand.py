"""Persona expansion (paper §3.1.1): grow the seed attribute set with LLM answers to persona questions.

Cluster the seed attributes into persona categories, ask the LLM for the question each category answers (query
induction), ask for more questions like those (query bootstrapping), then have the LLM answer every question in the
voice of a random persona, keeping an answer only when it is well formed and not too close to any attribute already
kept (query-based persona bootstrapping).

The LLM is a `complete` callable (a batch of prompts -> one sampled completion each) and the BERT-like encoder an
`embed` callable (texts -> L2-normalised rows), so this room runs the same on the batched generation engine and
sentence-transformers as on canned answers in tests.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..configs import PersonaExpansionConfig
from ..console import progress

logger = logging.getLogger(__name__)

Complete = Callable[[list[str]], list[str]]
Embed = Callable[[list[str]], np.ndarray]

# The paper's prompts (Table 6). The persona template reads "{query}. Answer ..."; a query that already ends with
# "?" is not given a second full stop.
QUERY_INDUCTION_TEMPLATE = (
    "What is the most specific question that you are replying to with the following statements?\n{attributes}"
)
QUERY_BOOTSTRAP_TEMPLATE = "{queries}\nAdd more persona questions similar to the above examples."
PERSONA_TEMPLATE = (
    "Imagine you are a person with the following persona.\n{attributes}\n{query} Answer with only one short sentence "
    "that starts with 'I' or 'My'. Do not repeat the given persona."
)

_LIST_MARKER = re.compile(r"^(?:[-*\u2022]+|\(?\d{1,3}[.)]|q(?:uestion)?\s*\d*\s*[:.)]|a(?:nswer)?\s*[:.)])\s*", re.I)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"
_FIRST_PERSON = re.compile(r"^(?:I(?:\s|'|\u2019)|My\s)")
_TOKEN = re.compile(r"'\w+|\w+|[^\w\s]")


@dataclass
class ExpansionResult:
    """The expanded attribute set, its clusters, the queries that produced it, and why candidates were dropped."""

    attributes: list[dict]  # {"attribute", "source": "seed" | "generated", "query", "cluster"}, seed first
    embeddings: np.ndarray  # one normalised row per attribute
    labels: np.ndarray  # cluster of each attribute in the expanded set
    queries: list[dict]  # {"query", "source": "induced" | "bootstrapped", "cluster"}
    statistics: dict[str, dict]  # Table 1 columns for "seed", "expanded" and "generated"
    rejections: dict[str, dict[str, int]]  # {"queries": {reason: n}, "attributes": {reason: n}}

    @property
    def texts(self) -> list[str]:
        return [row["attribute"] for row in self.attributes]

    def cluster_of(self) -> dict[str, int]:
        """Attribute -> cluster, the mapping user pairing counts shared categories with."""
        return {row["attribute"]: row["cluster"] for row in self.attributes}


# -- seed set, clusters and statistics ------------------------------------------------------------------------------
def seed_attributes(records: Iterable[dict]) -> list[str]:
    """Unique persona sentences in first-appearance order: Π0 (4,723 on the SPC/Persona-Chat train split)."""
    seen: dict[str, None] = {}
    for record in records:
        for sentence in [*(record.get("user1_persona") or []), *(record.get("user2_persona") or [])]:
            if sentence.strip():
                seen.setdefault(sentence.strip(), None)
    return list(seen)


def normalise(embeddings: np.ndarray) -> np.ndarray:
    """Unit rows, so a dot product is a cosine whatever the `embed` callable returned."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"Embeddings must be a 2-D array (one row per text), got shape {embeddings.shape}.")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def cluster_attributes(embeddings: np.ndarray, distance_threshold: float) -> np.ndarray:
    """Average-linkage agglomerative clustering on cosine distance, labels numbered by first appearance.

    Renumbering makes labels independent of scikit-learn's internal order, so cluster ids are stable across runs.
    """
    from sklearn.cluster import AgglomerativeClustering

    if len(embeddings) < 2:
        return np.zeros(len(embeddings), dtype=np.int64)
    raw = AgglomerativeClustering(
        n_clusters=None, metric="cosine", linkage="average", distance_threshold=distance_threshold
    ).fit_predict(embeddings)
    _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse]


def inter_cluster_distance(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine distance between the normalised centroids of every two distinct clusters (0 with one cluster).

    The mean over k(k-1) ordered pairs follows from the centroids' sum, (|sum c|^2 - k) / (k(k-1)), so 10k clusters
    cost O(k d), not a k x k matrix.
    """
    k = int(labels.max()) + 1 if len(labels) else 0
    if k < 2:
        return 0.0
    centroids = np.zeros((k, embeddings.shape[1]), dtype=np.float64)
    np.add.at(centroids, labels, embeddings.astype(np.float64))
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    total = centroids.sum(axis=0)
    return float(1.0 - (total @ total - k) / (k * (k - 1)))


def persona_set_statistics(attributes: list[str], embeddings: np.ndarray, labels: np.ndarray) -> dict:
    """The paper's Table 1 columns for one attribute set.

    Lengths are given in whitespace words and in tokens (words and punctuation marks, "I'm" -> "I", "'m"); the paper
    says "tokens", and its 7.65 for Persona-Chat sits close to the latter.
    """
    count = len(attributes)
    return {
        "attributes": count,
        "clusters": len(set(labels.tolist())),
        "inter_cluster_distance": inter_cluster_distance(embeddings, _dense(labels)),
        "mean_length_words": sum(len(a.split()) for a in attributes) / max(count, 1),
        "mean_length_tokens": sum(len(_TOKEN.findall(a)) for a in attributes) / max(count, 1),
    }


def _dense(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1] if len(labels) else labels


# -- text clean-up --------------------------------------------------------------------------------------------------
def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        line = _LIST_MARKER.sub("", line.strip()).strip().strip(_QUOTES).strip()
        if line:
            return re.sub(r"\s+", " ", line)
    return ""


def clean_query(text: str) -> str | None:
    """The first line of a completion as one question ending in "?", or None when nothing usable is left."""
    line = _first_line(text)
    if not re.search(r"[A-Za-z]", line):
        return None
    return re.sub(r"[\s.!?,;:]+$", "", line) + "?"


def text_key(text: str) -> str:
    """Case, spacing and punctuation folded away: two texts with one key are one text."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def clean_attribute(text: str, min_words: int = 3, max_words: int = 30) -> tuple[str | None, str | None]:
    """(attribute, None) when the first line is a first-person sentence of sensible length, else (None, reason)."""
    line = _first_line(text)
    if not line:
        return None, "empty"
    if not _FIRST_PERSON.match(line):
        return None, "not_first_person"
    words = len(line.split())
    if words < min_words:
        return None, "too_short"
    if words > max_words:
        return None, "too_long"
    return re.sub(r"[\s.!?,;:\u2026]+$", "", line) + ".", None


# -- the LLM steps --------------------------------------------------------------------------------------------------
def complete_in_batches(complete: Complete, prompts: list[str], batch_size: int, desc: str) -> list[str]:
    """`complete` over `prompts` in batches, checking it answers each prompt exactly once."""
    outputs: list[str] = []
    for start in progress(
        range(0, len(prompts), batch_size), desc=desc, unit="batch", disable=len(prompts) <= batch_size
    ):
        batch = prompts[start : start + batch_size]
        answers = list(complete(batch))
        if len(answers) != len(batch):
            raise ValueError(f"`complete` returned {len(answers)} completions for {len(batch)} prompts ({desc}).")
        outputs += answers
    return outputs


def _add_queries(found: list[dict], completions: list[str], clusters: list, source: str, rejections: Counter) -> None:
    keys = {text_key(q["query"]) for q in found}
    for completion, cluster in zip(completions, clusters):
        query = clean_query(completion)
        if query is None:
            rejections["empty"] += 1
        elif text_key(query) in keys:
            rejections["duplicate"] += 1
        else:
            keys.add(text_key(query))
            found.append({"query": query, "source": source, "cluster": cluster})


def induce_queries(
    attributes: list[str],
    labels: np.ndarray,
    *,
    complete: Complete,
    rng: random.Random,
    per_prompt: int = 3,
    batch_size: int = 64,
) -> tuple[list[dict], Counter]:
    """Q0: one question per cluster, induced from up to `per_prompt` of its attributes."""
    members: dict[int, list[str]] = defaultdict(list)
    for attribute, label in zip(attributes, labels.tolist()):
        members[label].append(attribute)
    clusters = sorted(members)
    prompts = []
    for cluster in clusters:
        sample = rng.sample(members[cluster], min(per_prompt, len(members[cluster])))
        prompts.append(QUERY_INDUCTION_TEMPLATE.format(attributes="\n".join(sample)))
    queries: list[dict] = []
    rejections: Counter = Counter()
    _add_queries(
        queries, complete_in_batches(complete, prompts, batch_size, "query induction"), clusters, "induced", rejections
    )
    logger.debug(
        "Query induction: %d queries from %d clusters (%s rejected).",
        len(queries),
        len(clusters),
        dict(rejections) or "none",
    )
    return queries, rejections


def bootstrap_queries(
    queries: list[dict],
    *,
    complete: Complete,
    rng: random.Random,
    steps: int = 100,
    per_prompt: int = 5,
    batch_size: int = 64,
) -> tuple[list[dict], Counter]:
    """Q: `steps` prompts of `per_prompt` known queries each, asking for one more; issued a batch at a time, each
    batch sampling from Q as it stands when the batch starts."""
    found = list(queries)
    rejections: Counter = Counter()
    if not found:
        return found, rejections
    for start in progress(
        range(0, steps, batch_size), desc="query bootstrapping", unit="batch", disable=steps <= batch_size
    ):
        texts = [q["query"] for q in found]
        prompts = [
            QUERY_BOOTSTRAP_TEMPLATE.format(queries="\n".join(rng.sample(texts, min(per_prompt, len(texts)))))
            for _ in range(min(batch_size, steps - start))
        ]
        answers = complete_in_batches(complete, prompts, batch_size, "query bootstrapping")
        _add_queries(found, answers, [None] * len(answers), "bootstrapped", rejections)
    logger.debug(
        "Query bootstrapping: %d -> %d queries in %d steps (%s rejected).",
        len(queries),
        len(found),
        steps,
        dict(rejections) or "none",
    )
    return found, rejections


class AttributeIndex:
    """The kept attributes' embeddings: rejects a candidate that repeats one ("not too close", paper §3.1.1)."""

    def __init__(self, texts: list[str], embeddings: np.ndarray, threshold: float = 0.9):
        self.threshold = threshold
        self.keys = {text_key(t) for t in texts}
        self.size = len(texts)
        self._matrix = np.zeros((max(2 * self.size, 1024), embeddings.shape[1]), dtype=np.float32)
        self._matrix[: self.size] = embeddings

    def check(self, text: str, embedding: np.ndarray) -> str | None:
        """Why `text` cannot be added ("duplicate", "near_duplicate"), or None when it is new."""
        if text_key(text) in self.keys:
            return "duplicate"
        if self.size and float(np.max(self._matrix[: self.size] @ embedding)) >= self.threshold:
            return "near_duplicate"
        return None

    def add(self, text: str, embedding: np.ndarray) -> None:
        if self.size == len(self._matrix):
            self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
        self._matrix[self.size] = embedding
        self.size += 1
        self.keys.add(text_key(text))


def _as_sentence(query: str) -> str:
    return query if query.endswith(("?", ".", "!")) else query + "."


def _persona_prompts(queries: list[str], pool: list[str], rng: random.Random, config: PersonaExpansionConfig):
    """Batches of (queries, prompts): each step draws one persona s from Π (a live list that grows) for every query."""
    for _ in range(config.max_bootstrap_steps):
        context = "\n".join(rng.sample(pool, min(config.attributes_per_persona_prompt, len(pool))))
        for start in range(0, len(queries), config.batch_size):
            batch = queries[start : start + config.batch_size]
            yield batch, [PERSONA_TEMPLATE.format(attributes=context, query=_as_sentence(q)) for q in batch]


def _well_formed(
    answers: list[str], queries: list[str], index: AttributeIndex, config: PersonaExpansionConfig, rejections: Counter
) -> list[tuple[str, str]]:
    """(attribute, query) for each answer that is a new, well-formed sentence; the rest are counted by reason."""
    kept = []
    for query, answer in zip(queries, answers):
        attribute, reason = clean_attribute(answer, config.min_words, config.max_words)
        reason = reason or ("duplicate" if text_key(attribute) in index.keys else None)
        if reason:
            rejections[reason] += 1
        else:
            kept.append((attribute, query))
    return kept


def bootstrap_personas(
    seed: list[str],
    seed_embeddings: np.ndarray,
    queries: list[str],
    *,
    embed: Embed,
    complete: Complete,
    rng: random.Random,
    config: PersonaExpansionConfig,
) -> tuple[list[dict], Counter]:
    """New attributes, until `target_new_attributes` or `max_bootstrap_steps` passes over the queries.

    Candidates are screened in order within a batch, so two near-identical answers in one batch keep only the first;
    once the target is met the rest of that batch is dropped uncounted.
    """
    index = AttributeIndex(seed, seed_embeddings, config.dedup_threshold)
    pool, new, rejections = list(seed), [], Counter()
    target = config.target_new_attributes
    with progress(total=target, desc="persona bootstrapping", unit="attribute", disable=not queries) as bar:
        for batch, prompts in _persona_prompts(queries, pool, rng, config) if queries and target else ():
            candidates = _well_formed(
                complete_in_batches(complete, prompts, len(prompts), "personas"), batch, index, config, rejections
            )
            vectors = normalise(embed([a for a, _ in candidates])) if candidates else []
            for (attribute, query), vector in zip(candidates, vectors):
                if reason := index.check(attribute, vector):
                    rejections[reason] += 1
                    continue
                index.add(attribute, vector)
                pool.append(attribute)
                new.append({"attribute": attribute, "query": query, "embedding": vector})
                bar.update()
                if len(new) >= target:
                    break
            if len(new) >= target:
                break
    logger.debug("Persona bootstrapping: %d new attributes (%s rejected).", len(new), dict(rejections) or "none")
    return new, rejections


# -- entry point ----------------------------------------------------------------------------------------------------
def expand_personas(
    seed_attributes: list[str],
    *,
    embed: Embed,
    complete: Complete,
    config: PersonaExpansionConfig | None = None,
    seed: int = 0,
    seed_embeddings: np.ndarray | None = None,
) -> ExpansionResult:
    """Π0 -> clusters -> Q0 -> Q -> Πe, deterministic for a seed given a deterministic `complete`."""
    config = config or PersonaExpansionConfig()
    seeds = list(dict.fromkeys(a.strip() for a in seed_attributes if a and a.strip()))
    if not seeds:
        raise ValueError("No seed persona attributes: persona expansion needs at least one seed attribute.")
    if seed_embeddings is not None and len(seed_embeddings) != len(seeds):
        raise ValueError(f"Got {len(seed_embeddings)} seed embeddings for {len(seeds)} unique seed attributes.")
    rng = random.Random(seed)
    vectors = normalise(embed(seeds) if seed_embeddings is None else seed_embeddings)
    labels = cluster_attributes(vectors, config.distance_threshold)
    logger.debug(
        "Clustered %d seed attributes into %d clusters (distance threshold %.2f).",
        len(seeds),
        int(labels.max()) + 1,
        config.distance_threshold,
    )

    queries, query_rejections = induce_queries(
        seeds,
        labels,
        complete=complete,
        rng=rng,
        per_prompt=config.attributes_per_query_prompt,
        batch_size=config.batch_size,
    )
    queries, more = bootstrap_queries(
        queries,
        complete=complete,
        rng=rng,
        steps=config.query_bootstrap_steps,
        per_prompt=config.queries_per_prompt,
        batch_size=config.batch_size,
    )
    new, attribute_rejections = bootstrap_personas(
        seeds, vectors, [q["query"] for q in queries], embed=embed, complete=complete, rng=rng, config=config
    )
    texts = seeds + [row["attribute"] for row in new]
    all_vectors = np.concatenate(
        [vectors, np.asarray([row["embedding"] for row in new]).reshape(-1, vectors.shape[1])]
    )
    all_labels = cluster_attributes(all_vectors, config.distance_threshold)
    rows = [{"attribute": a, "source": "seed", "query": None} for a in seeds]
    rows += [{"attribute": r["attribute"], "source": "generated", "query": r["query"]} for r in new]
    for row, label in zip(rows, all_labels.tolist()):
        row["cluster"] = label
    n = len(seeds)
    statistics = {
        "seed": persona_set_statistics(seeds, vectors, labels),
        "expanded": persona_set_statistics(texts, all_vectors, all_labels),
        "generated": persona_set_statistics(texts[n:], all_vectors[n:], all_labels[n:]),
    }
    logger.debug(
        "Persona expansion: %d seed + %d new attributes, %d clusters.", n, len(new), statistics["expanded"]["clusters"]
    )
    return ExpansionResult(
        attributes=rows,
        embeddings=all_vectors,
        labels=all_labels,
        queries=queries,
        statistics=statistics,
        rejections={"queries": dict(query_rejections + more), "attributes": dict(attribute_rejections)},
    )
