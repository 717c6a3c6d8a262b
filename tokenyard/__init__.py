"""tokenyard: a kernel-first LLM inference engine for agentic workloads."""

__version__ = "0.1.0"
