"""vroot: virtualized roots of trust (ISO/IEC 27070) on TPM 2.0.

Packages, from the wire up:

- `vroot.tpm2`        pure codec for the TPM 2.0 structures a verifier reads
- `vroot.eventlog`    TCG PC Client and IMA measurement logs: parse, replay, write
- `vroot.attestation` verification of quotes (and, later, appraisal)
- `vroot.tm`          the TM client over tpm2-pytss, and the swtpm supervisor
- `vroot.measure`     transitive trust: simulated host and VM boot chains
- `vroot.cli`         the `vroot` command
"""

__version__ = "0.1.0"
