"""The OpenAI-compatible server: HTTP app, engine loop, protocol models, tool-call parsers,
Prometheus metrics, `tokenyard serve` and the agentic benchmark client (`tokenyard bench agentic`)."""
