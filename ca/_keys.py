"""Key generation and the at-rest encryption of CA keys."""

from __future__ import annotations

from typing import TypeAlias

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ca._errors import MissingPassphrase, WrongPassphrase
from ca._settings import KeyType

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_RSA_BITS = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}
_CURVES: dict[str, ec.EllipticCurve] = {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}


def generate_key(key_type: KeyType) -> PrivateKey:
    """A fresh private key of ``key_type``.

    RSA keys use e = 65537 (RFC 8017 recommendation; the only exponent every client accepts).
    """
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    return ec.generate_private_key(_CURVES[key_type])


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """SHA-384 for P-384 (matching strength, RFC 5480 §4), SHA-256 otherwise."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def encrypt_key(key: PrivateKey, passphrase: str) -> str:
    """PKCS#8 PEM encrypted with ``passphrase`` (PBES2, AES-256-CBC; cryptography's best)."""
    if not passphrase:
        raise MissingPassphrase()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    ).decode()


def decrypt_key(pem: str, passphrase: str) -> PrivateKey:
    """Open an encrypted CA key.

    Raises:
        MissingPassphrase: no passphrase configured.
        WrongPassphrase: the passphrase does not open it.
    """
    if not passphrase:
        raise MissingPassphrase()
    try:
        key = serialization.load_pem_private_key(pem.encode(), passphrase.encode())
    except (ValueError, TypeError):
        raise WrongPassphrase() from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TypeError(f"unexpected CA key type {type(key).__name__}")
    return key
