"""First-party realfill components, installed as the package `realfill_plugins`."""
