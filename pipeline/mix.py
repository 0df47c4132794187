"""Which shots use stock footage instead of generation: the template's AI ratio, per project.

The plan is reproducible: its randomness is seeded from a sha256 of the project id (Python's
hash() changes per process), so a retry or a restart makes the same choice.
"""

from __future__ import annotations

import hashlib
import math
import random

from storage.models import SegmentSource

# Guards the round-half-up below against binary fractions: 5 * (1 - 0.9) is 0.4999999999999999.
_EPSILON = 1e-9


def plan_sources(project_id: str, shot_count: int, ai_ratio: float) -> list[SegmentSource]:
    """One source per shot, with about (1 - ai_ratio) of the shots from stock.

    - stock shots = shot_count x (1 - ai_ratio), rounded half up (2.5 -> 3, never to even);
    - shot 0 is always AI: it starts from the user's opening image;
    - with ai_ratio < 1 and two or more shots, at least one shot is stock, so no finished
      video is 100% AI-generated; a one-shot video has no room for that and stays AI;
    - ai_ratio 1.0 means every shot is AI.
    """
    if not 0.0 <= ai_ratio <= 1.0:
        raise ValueError(f"ai_ratio must be between 0 and 1, got {ai_ratio}")
    if shot_count < 0:
        raise ValueError(f"shot_count must not be negative, got {shot_count}")
    stock = _stock_count(shot_count, ai_ratio)
    chosen = set(random.Random(_seed(project_id)).sample(range(1, shot_count), stock)) if stock else set()
    return [SegmentSource.stock if k in chosen else SegmentSource.ai for k in range(shot_count)]


def _stock_count(shot_count: int, ai_ratio: float) -> int:
    if ai_ratio >= 1.0 or shot_count < 2:
        return 0
    wanted = math.floor(shot_count * (1.0 - ai_ratio) + 0.5 + _EPSILON)
    return min(max(1, wanted), shot_count - 1)


def _seed(project_id: str) -> int:
    return int.from_bytes(hashlib.sha256(project_id.encode("utf-8")).digest()[:8], "big")
