"""vroot.attestation (being built)."""
