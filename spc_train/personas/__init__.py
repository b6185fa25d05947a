"""Users for the Generator-Critic loop (paper §3.1-3.2): persona expansion, profile construction, user pairing."""

from .expand import (
    AttributeIndex,
    ExpansionResult,
    PersonaExpansionConfig,
    clean_attribute,
    clean_query,
    cluster_attributes,
    expand_personas,
    persona_set_statistics,
    seed_attributes,
)
from .pairing import pair_users, shared_clusters
from .profiles import NEGATION_TEMPLATE, ProfileConstructionError, build_profiles, llm_negate

__all__ = [
    "NEGATION_TEMPLATE",
    "AttributeIndex",
    "ExpansionResult",
    "PersonaExpansionConfig",
    "ProfileConstructionError",
    "build_profiles",
    "clean_attribute",
    "clean_query",
    "cluster_attributes",
    "expand_personas",
    "llm_negate",
    "pair_users",
    "persona_set_statistics",
    "seed_attributes",
    "shared_clusters",
]
