"""Pure-Python codec for TPM 2.0 structures (TCG TPM 2.0 Library, part 2). Never imports tpm2-pytss."""

from vroot.tpm2._alg import HashAlg

__all__ = ["HashAlg"]
