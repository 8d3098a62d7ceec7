"""Capacity from the concurrency runs: conversations one replica set (one STT, one LLM, one TTS
process) serves before dead air p95 passes 1.5 s, per core, and a sizing table for N conversations."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

DEAD_AIR_P95_LIMIT_MS = 1500.0
SIZING_CONVERSATIONS = (1, 10, 50, 100, 500)


def capacity(concurrency: Mapping[str, Any], cores: int, limit_ms: float = DEAD_AIR_P95_LIMIT_MS) -> dict[str, Any]:
    """The largest level (tried in increasing order, all below it passing too) with p95 <= limit and no errors."""
    levels = sorted((int(n), c) for n, c in concurrency.items() if isinstance(c, Mapping))
    served, first_over = 0, None
    for n, c in levels:
        p95 = (c.get("dead_air_ms") or {}).get("p95")
        if c.get("errors") or p95 is None or p95 > limit_ms:
            first_over = n
            break
        served = n
    return {
        "dead_air_p95_limit_ms": limit_ms,
        "conversations_per_replica_set": served,
        "first_level_over": first_over,
        "levels_tried": [n for n, _ in levels],
        "cores": cores,
        "conversations_per_core": round(served / cores, 2) if cores else None,
    }


def sizing(
    cap: Mapping[str, Any], rss_mib: Mapping[str, float], conversations: tuple[int, ...] = SIZING_CONVERSATIONS
) -> list[dict[str, Any]]:
    """Replica sets, cores and memory for N conversations at the measured capacity."""
    per_set = int(cap.get("conversations_per_replica_set") or 0)
    if per_set <= 0:
        return []
    cores_per_set = int(cap.get("cores") or 1)
    memory_per_set = sum(rss_mib.values())
    rows = []
    for n in conversations:
        sets = math.ceil(n / per_set)
        rows.append(
            {
                "conversations": n,
                "replicas_each": sets,
                "cores": sets * cores_per_set,
                "memory_mib": round(sets * memory_per_set),
            }
        )
    return rows
