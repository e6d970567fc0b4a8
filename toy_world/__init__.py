"""A small, fully offline toy world in which PSA visibly works end to end (docs/toy-world.md)."""
