"""Memory: the page pool and the state-slot pool (ids), and their sizing from a budget."""

from tokenyard.engine.cache.pool import IdPool
from tokenyard.engine.cache.sizing import memory_budget, num_pages_for_budget

__all__ = ["IdPool", "memory_budget", "num_pages_for_budget"]
