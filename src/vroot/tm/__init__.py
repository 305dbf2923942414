"""vroot.tm (being built)."""
