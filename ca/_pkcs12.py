"""PKCS#12 packaging of a broker's key and certificate, and the password that protects it.

Profiles (see docs/ca.md for the choice of default):

- ``compat``: key and certificates encrypted with pbeWithSHAAnd3-KeyTripleDES-CBC, SHA-1
  MAC. The only scheme that Windows Server 2016 and older and macOS's Keychain open by
  double click (they reject AES PKCS#12 with a misleading "wrong password"; for macOS
  see pyca/cryptography#7293, kube-rs/kube#691, chris2511/xca#474).
- ``modern``: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and a SHA-256 MAC; not for Macs.

RC2-40 (openssl ``-legacy``) is never produced.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import (
    PrivateFormat,
    pkcs12,
)

from ca._keys import PrivateKey
from ca._settings import P12Profile
from ca._validity import BROKER_TIME_ZONE

# Lower-case letters and digits without look-alikes (0/o, 1/l/i) and without y and z,
# which swap places on German QWERTZ keyboards: brokers type this from an email.
PASSWORD_ALPHABET = "abcdefghjkmnpqrstuvwx23456789"
PASSWORD_GROUPS = 5
PASSWORD_GROUP_LENGTH = 4
# 20 symbols from 29 → log2(29) * 20 ≈ 97 bits, above the 80 bits we promise.
PASSWORD_BITS = 97

# KDF iterations: 2048, the default of OpenSSL and of Windows' own PFX export. The password
# carries ~97 bits of entropy, so stretching adds nothing against guessing, while 50,000
# rounds of the PKCS#12 SHA-1 KDF cost ~57 ms per file (more than RSA-2048 key generation)
# and make old importers crawl.
KDF_ROUNDS = 2048


def generate_password() -> str:
    """A random, human-typeable password like ``k7mq-x3fp-…`` (≈97 bits)."""
    groups = [
        "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_GROUP_LENGTH))
        for _ in range(PASSWORD_GROUPS)
    ]
    return "-".join(groups)


def pack_pkcs12(
    *,
    key: PrivateKey,
    certificate: x509.Certificate,
    chain: list[x509.Certificate],
    friendly_name: str,
    password: str,
    profile: P12Profile,
) -> bytes:
    """The PKCS#12 bytes for ``certificate`` and ``key``, with the issuing chain included."""
    if profile == "compat":
        algorithm = pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC
        mac: hashes.HashAlgorithm = hashes.SHA1()
    else:
        algorithm = pkcs12.PBES.PBESv2SHA256AndAES256CBC
        mac = hashes.SHA256()
    encryption = (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(algorithm)
        .hmac_hash(mac)
        .build(password.encode())
    )
    return pkcs12.serialize_key_and_certificates(
        friendly_name.encode(), key, certificate, chain, encryption
    )


def friendly_name(*, name: str, broker_number: str, not_after: datetime, serial: str) -> str:
    """The name the PKCS#12 entry carries into the broker's certificate store.

    It tells an old certificate and its renewal apart (issue 15: both read "… 2027-01-31"
    when they were issued for the same day): the expiry date and the start of the serial
    number, language-neutral because the file travels to any system. The date is the one
    brokers live in (Europe/Berlin, as the validity is counted): a certificate ending at
    00:30 there ends on the previous day in UTC.
    """
    local = not_after.astimezone(BROKER_TIME_ZONE)
    return f"{name} ({broker_number}) {local:%Y-%m-%d} #{serial[:8]}"
