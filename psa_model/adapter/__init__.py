"""The PSA adapter: layer map, modules, user-branch attention and the shared attention patches."""
