"""The prefix cache: longest previously seen prefix of whole blocks, like Kimi's automatic caching.

A prompt's token sequence is cut into blocks of `block` tokens; block k is identified by a hash chained
over blocks 0..k, so a hit on block k means the whole prefix up to it was seen. Lookups happen when a
request starts, inserts only when it completes: concurrent requests that share a prefix all miss, as on
the real service. Scope: one api key and one model (the chain starts from their hash).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable


def block_chain(seq: bytes, scope: str, block: int) -> list[bytes]:
    """Chained digests of the whole blocks of `seq` (4 bytes per token); a partial last block is left out."""
    step = block * 4
    digest = hashlib.blake2b(scope.encode(), digest_size=16).digest()
    out = []
    for start in range(0, len(seq) - step + 1, step):
        digest = hashlib.blake2b(digest + seq[start : start + step], digest_size=16).digest()
        out.append(digest)
    return out


class PrefixCache:
    """Block hashes with their last-use time; LRU-evicted beyond `max_blocks`, expired after `ttl`."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._blocks: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, chain: list[bytes], ttl: float | None) -> int:
        """How many leading blocks of `chain` are cached (renewing their TTL, like a hit does)."""
        now = self._clock()
        hits = 0
        with self._lock:
            for digest in chain:
                seen = self._blocks.get(digest)
                if seen is None or (ttl is not None and now - seen > ttl):
                    break
                self._blocks[digest] = now
                self._blocks.move_to_end(digest)
                hits += 1
        return hits

    def insert(self, chain: list[bytes], max_blocks: int) -> None:
        now = self._clock()
        with self._lock:
            for digest in chain:
                self._blocks[digest] = now
                self._blocks.move_to_end(digest)
            while len(self._blocks) > max_blocks:
                self._blocks.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()

    def __len__(self) -> int:
        return len(self._blocks)
