"""Per-environment context providers (the dynamics map and the empty context)."""
