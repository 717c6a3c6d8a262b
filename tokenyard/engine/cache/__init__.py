"""Memory: the page pool with its prefix index, the state-slot pool, and their sizing from a budget."""

from tokenyard.engine.cache.pages import PagePool
from tokenyard.engine.cache.pool import IdPool
from tokenyard.engine.cache.sizing import memory_budget, num_pages_for_budget

__all__ = ["IdPool", "PagePool", "memory_budget", "num_pages_for_budget"]
