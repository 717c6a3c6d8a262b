"""The page pool with its prefix index.

Owns the state of every page: free, owned (ref_count > 0: by that many requests), or cached
(ref_count 0, its content still known by hash, evictable, least recently used first). Pages are
never written once full, so a full page can be shared: a request whose tokens start with the
same full pages as a cached or running sequence acquires those pages instead of recomputing them.

A full page's key is a chain hash (xxh64 of the previous page's key and this page's token ids),
so a key names the whole prefix up to the page's end; a hit is also checked against the stored
token ids. Pages join the index when their last token has been computed (`register`) and leave it
only when evicted to make room (`allocate`). No tensors here: the ids index `ModelCaches`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from array import array

import xxhash


def chain_hash(previous: int, token_ids: list[int]) -> int:
    return xxhash.xxh64_intdigest(array("Q", [previous, *token_ids]).tobytes())


class PagePool:
    def __init__(self, capacity: int, page_size: int):
        if capacity < 1:
            raise ValueError(f"page pool capacity={capacity}: expected >= 1")
        self.name = "page"
        self.capacity = capacity
        self.page_size = page_size
        self._free: deque[int] = deque(range(capacity))
        self.ref_count = [0] * capacity
        self._hash: list[int | None] = [None] * capacity
        self._tokens: list[list[int] | None] = [None] * capacity
        self._by_hash: dict[int, int] = {}
        self._cached: OrderedDict[int, None] = OrderedDict()   # ref_count 0 and hashed, LRU first

    @property
    def num_free(self) -> int:
        """Pages a request can get: unused ones and evictable cached ones."""
        return len(self._free) + len(self._cached)

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    def free_ids(self) -> list[int]:
        return list(self._free)

    def cached_ids(self) -> list[int]:
        return list(self._cached)

    def allocate(self, n: int) -> list[int]:
        if n > self.num_free:
            raise RuntimeError(f"page pool: asked for {n}, {self.num_free} free of {self.capacity}")
        pages = []
        for _ in range(n):
            if self._free:
                page = self._free.popleft()
            else:
                page, _ = self._cached.popitem(last=False)
                del self._by_hash[self._hash[page]]
                self._hash[page] = self._tokens[page] = None
            self.ref_count[page] = 1
            pages.append(page)
        return pages

    def release(self, pages: list[int]) -> None:
        # tail pages first: when memory runs short the deepest pages of a prefix go before its head
        for page in reversed(pages):
            self.ref_count[page] -= 1
            if self.ref_count[page] == 0:
                if self._hash[page] is None:
                    self._free.append(page)
                else:
                    self._cached[page] = None

    def lookup(self, token_ids: list[int], max_pages: int) -> tuple[list[int], list[int]]:
        """The longest run of cached or owned full pages holding token_ids' prefix: (pages, keys)."""
        pages, keys, key = [], [], 0
        for i in range(max_pages):
            tokens = token_ids[i * self.page_size:(i + 1) * self.page_size]
            key = chain_hash(key, tokens)
            page = self._by_hash.get(key)
            if page is None or self._tokens[page] != tokens:
                break
            pages.append(page)
            keys.append(key)
        return pages, keys

    def acquire(self, pages: list[int]) -> None:
        """Take a reference on pages found by `lookup`."""
        for page in pages:
            if self.ref_count[page] == 0:
                del self._cached[page]
            self.ref_count[page] += 1

    def register(self, page: int, key: int, token_ids: list[int]) -> None:
        """`page` is full and holds `token_ids` under prefix key `key`; index it unless another
        page already holds the same prefix (then this one stays private and is freed on release)."""
        if key not in self._by_hash and self._hash[page] is None:
            self._by_hash[key] = page
            self._hash[page] = key
            self._tokens[page] = list(token_ids)
