"""Serving: the engine's continuous batching behind an OpenAI-compatible HTTP server
(``dyrate serve``): ``app`` (routes), ``protocol`` (request checks), ``loop`` (the thread that
steps the scheduler), ``metrics`` (Prometheus text), ``command`` (the CLI)."""
