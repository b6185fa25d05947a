"""Users as the loop tells them apart: a user is their persona. Two records share a user when a speaker of one has
the same attributes (in any order, case and spacing aside) as a speaker of the other. In SPC many personas occur in
several conversations, so keeping data apart by pair id alone would leak users (held-out pairs, seed replay)."""

from __future__ import annotations


def user_key(persona: list[str] | None) -> frozenset[str]:
    """A user's identity: their attributes, lower-cased with spaces normalised, as a set."""
    return frozenset(" ".join(a.lower().split()) for a in persona or [] if a and a.strip())


def users(records: list[dict]) -> set[frozenset[str]]:
    """Every user (non-empty persona) of `records`."""
    keys = {user_key(record.get(f"user{s}_persona")) for record in records for s in (1, 2)}
    return {key for key in keys if key}


def shares_user(record: dict, taken: set[frozenset[str]]) -> bool:
    return any(user_key(record.get(f"user{s}_persona")) in taken for s in (1, 2))


def outside(records: list[dict], taken: list[dict]) -> list[dict]:
    """`records` that are none of `taken` (by pair id) and share no user with them."""
    ids, keys = {record["pair_id"] for record in taken}, users(taken)
    return [record for record in records if record["pair_id"] not in ids and not shares_user(record, keys)]
