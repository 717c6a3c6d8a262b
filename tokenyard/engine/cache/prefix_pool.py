"""A pool of ids that requests own, share, and leave behind as a prefix cache.

Two pools are made of it: pages (KV / MLA latent) and GDN state slots. Owns the state of every
id: free, owned (ref_count > 0: by that many requests), or cached (ref_count 0, its content still
known by key, evictable, least recently used first).

Keys name token prefixes: a full page's key is a chain hash (xxh64 of the previous page's key and
this page's token ids), so it names the whole prefix up to the page's end. A page holds the keys
and values of its tokens; a state slot registered under a page's key holds the GDN state after the
prefix that ends there (a checkpoint). Full pages and checkpoints are never written again, so they
can be shared. Hits are checked against the stored token ids of the last page. Ids join the index
when their content is complete (`register`) and leave it when evicted to make room (`allocate`)
or when their owner says a newer one supersedes them (`forget`). No tensors here: the ids index
`ModelCaches`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from array import array

import xxhash


def chain_hash(previous: int, token_ids: list[int]) -> int:
    return xxhash.xxh64_intdigest(array("Q", [previous, *token_ids]).tobytes())


class PrefixPool:
    def __init__(self, name: str, capacity: int):
        if capacity < 1:
            raise ValueError(f"{name} pool capacity={capacity}: expected >= 1")
        self.name = name
        self.capacity = capacity
        self._free: deque[int] = deque(range(capacity))
        self.ref_count = [0] * capacity
        self._hash: list[int | None] = [None] * capacity
        self._tokens: list[list[int] | None] = [None] * capacity
        self._by_hash: dict[int, int] = {}
        self._cached: OrderedDict[int, None] = OrderedDict()   # ref_count 0 and hashed, LRU first

    @property
    def num_free(self) -> int:
        """Ids a request can get: unused ones and evictable cached ones."""
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
            raise RuntimeError(f"{self.name} pool: asked for {n}, {self.num_free} free of {self.capacity}")
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

    def lookup(self, token_ids: list[int], page_size: int, max_pages: int) -> tuple[list[int], list[int]]:
        """The longest run of cached or owned full pages holding token_ids' prefix: (pages, keys)."""
        pages, keys, key = [], [], 0
        for i in range(max_pages):
            tokens = token_ids[i * page_size:(i + 1) * page_size]
            key = chain_hash(key, tokens)
            page = self.find(key, tokens)
            if page is None:
                break
            pages.append(page)
            keys.append(key)
        return pages, keys

    def find(self, key: int, last_tokens: list[int]) -> int | None:
        """The id registered under `key` whose last page held `last_tokens`, if any."""
        found = self._by_hash.get(key)
        return found if found is not None and self._tokens[found] == last_tokens else None

    def acquire(self, ids: list[int]) -> None:
        """Take a reference on ids found by `lookup` or `find`."""
        for page in ids:
            if self.ref_count[page] == 0:
                del self._cached[page]
            self.ref_count[page] += 1

    def has(self, key: int) -> bool:
        return key in self._by_hash

    def register(self, page: int, key: int, token_ids: list[int]) -> None:
        """`page` is complete for the prefix `key` (whose last page holds `token_ids`); index it
        unless another id already holds it (then this one stays private and is freed on release)."""
        if key not in self._by_hash and self._hash[page] is None:
            self._by_hash[key] = page
            self._hash[page] = key
            self._tokens[page] = list(token_ids)

    def forget(self, page: int, key: int) -> None:
        """Take `page` out of the index and free it, if it is still cached under `key` (not evicted
        and reused since) and nobody holds it; otherwise leave it as it is."""
        if self._hash[page] == key and self.ref_count[page] == 0:
            del self._cached[page]
            del self._by_hash[key]
            self._hash[page] = self._tokens[page] = None
            self._free.append(page)
