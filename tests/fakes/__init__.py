"""Faithful doubles of the WebUIs' ``modules.*`` for the host tests (see DESIGN.md, "Fake WebUIs")."""
