"""The certificate authority: keys, certificates, CRLs, PKCS#12, generations, issuance,
revocation."""

from ca._settings import CASettings

__all__ = ["CASettings"]
