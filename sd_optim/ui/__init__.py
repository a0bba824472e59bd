"""The ui layer (docs/architecture.md): the WebUI tab, its API routes, the run manager and the entry glue."""
