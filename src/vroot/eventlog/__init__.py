"""vroot.eventlog (being built)."""
