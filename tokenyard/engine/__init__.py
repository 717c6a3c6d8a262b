"""The engine: models, loaders, memory, scheduling, the runner and the offline API."""
