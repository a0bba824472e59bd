"""Faithful doubles of the WebUIs' ``modules.*`` for the host tests (docs/architecture.md, last section)."""
