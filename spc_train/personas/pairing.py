"""User pairing (paper §3.2): pair users who share persona categories, on the hypothesis that users with more in
common have more engaging conversations.

Similarity(U1, U2) counts the cross-profile attribute pairs (π1 ∈ U1, π2 ∈ U2) that fall in the same persona
cluster; users are paired when it exceeds `min_shared` (paper: 2). The paper does not say how many partners a user
gets nor how qualifying pairs are sampled: here they are drawn uniformly at random (seeded), subject to an optional
partner cap per user and a cap on the number of pairs.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping

import numpy as np

logger = logging.getLogger(__name__)


def _clusters(profile: list[str], cluster_of: Mapping[str, int], where: str) -> list[int]:
    try:
        return [int(cluster_of[attribute]) for attribute in profile]
    except KeyError as error:
        raise KeyError(f"Attribute {error.args[0]!r} of {where} has no cluster in `cluster_of`.") from None


def shared_clusters(profile_a: list[str], profile_b: list[str], cluster_of: Mapping[str, int]) -> int:
    """|{(π1, π2) : π1 ∈ A, π2 ∈ B, same cluster}|: with clusters c counted n_A(c) and n_B(c) times, sum n_A * n_B."""
    a = Counter(_clusters(profile_a, cluster_of, "profile A"))
    b = Counter(_clusters(profile_b, cluster_of, "profile B"))
    return sum(n * b[c] for c, n in a.items())


def shared_cluster_matrix(profiles: list[list[str]], cluster_of: Mapping[str, int]):
    """Profile-by-cluster counts M (sparse); (M Mᵀ)[i, j] is `shared_clusters(profiles[i], profiles[j])`."""
    from scipy.sparse import csr_matrix

    rows, columns = [], []
    for index, profile in enumerate(profiles):
        clusters = _clusters(profile, cluster_of, f"profile {index}")
        rows += [index] * len(clusters)
        columns += clusters
    width = max(columns, default=-1) + 1
    data = np.ones(len(rows), dtype=np.int32)
    return csr_matrix((data, (rows, columns)), shape=(len(profiles), width))  # duplicate entries are summed


def qualifying_pairs(
    profiles: list[list[str]], cluster_of: Mapping[str, int], min_shared: int = 2, block: int = 2048
) -> list[tuple[int, int, int]]:
    """Every (i, j, shared) with i < j and shared > `min_shared`, in (i, j) order; identical profiles excluded.

    Row blocks of the sparse product keep memory to what qualifies, so 20k profiles do not need a 20k x 20k matrix.
    """
    matrix = shared_cluster_matrix(profiles, cluster_of)
    keys = [frozenset(p) for p in profiles]
    found: list[tuple[int, int, int]] = []
    for start in range(0, len(profiles), block):
        product = (matrix[start : start + block] @ matrix.T).tocoo()
        rows = product.row + start
        keep = (rows < product.col) & (product.data > min_shared)
        for i, j, shared in zip(rows[keep].tolist(), product.col[keep].tolist(), product.data[keep].tolist()):
            if keys[i] != keys[j]:
                found.append((i, j, shared))
    return sorted(found)


def pair_users(
    profiles: list[list[str]],
    cluster_of: Mapping[str, int],
    *,
    min_shared: int = 2,
    partners_per_user: int | None = None,
    max_pairs: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """User pairs as canonical records (no turns yet), deterministic for a seed.

    Qualifying pairs are visited in a seeded random order; a pair is taken while both users have fewer than
    `partners_per_user` partners, until `max_pairs`. The result is sorted by profile index; user 1 is the profile
    that comes first in `profiles`, and `pair_id` names both profile indices.
    """
    if partners_per_user is not None and partners_per_user < 1:
        raise ValueError(f"partners_per_user must be at least 1 (or None for no cap), got {partners_per_user}.")
    if max_pairs is not None and max_pairs < 0:
        raise ValueError(f"max_pairs must be at least 0 (or None for no cap), got {max_pairs}.")
    candidates = qualifying_pairs(profiles, cluster_of, min_shared)
    partners: Counter = Counter()
    chosen: list[tuple[int, int, int]] = []
    for k in np.random.default_rng(seed).permutation(len(candidates)).tolist():
        if max_pairs is not None and len(chosen) >= max_pairs:
            break
        i, j, shared = candidates[k]
        if partners_per_user is not None and max(partners[i], partners[j]) >= partners_per_user:
            continue
        partners.update((i, j))
        chosen.append(candidates[k])
    logger.debug(
        "Paired %d users into %d pairs (%d pairs qualify with > %d shared clusters).",
        len(partners),
        len(chosen),
        len(candidates),
        min_shared,
    )
    width = len(str(max(len(profiles) - 1, 0)))
    return [
        {
            "pair_id": f"pair-{i:0{width}d}-{j:0{width}d}",
            "user1_persona": list(profiles[i]),
            "user2_persona": list(profiles[j]),
            "shared_clusters": shared,
            "source": "generated",
        }
        for i, j, shared in sorted(chosen)
    ]
