"""vroot.measure (being built)."""
