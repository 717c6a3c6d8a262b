"""Memory: the page pool and the state-slot pool (both prefix pools), and their sizing from a budget."""

from tokenyard.engine.cache.prefix_pool import PrefixPool
from tokenyard.engine.cache.sizing import memory_budget, num_pages_for_budget

__all__ = ["PrefixPool", "memory_budget", "num_pages_for_budget"]
