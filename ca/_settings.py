"""The CA's settings (read once by the CLI, passed down)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

KeyType = Literal["rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384"]
P12Profile = Literal["compat", "modern"]
KeyStoreKind = Literal["file", "pkcs11"]

# Two calendar years, as brokers were promised (seed 000: "zwei Jahre gültig"); counted
# in calendar years, not days (ca/_validity.py).
DEFAULT_LEAF_VALIDITY_YEARS = 2
# Issuing CAs outlive every leaf they sign by one leaf lifetime plus slack.
DEFAULT_ISSUING_VALIDITY = timedelta(days=365 * 6)
DEFAULT_ROOT_VALIDITY = timedelta(days=365 * 20)
# A CRL is valid for 7 days and re-published daily by the renewal process, so a
# scheduler outage of up to six days never makes relying parties reject everyone.
DEFAULT_CRL_VALIDITY = timedelta(days=7)
DEFAULT_CRL_REPUBLISH_BEFORE = timedelta(days=6)


@dataclass(frozen=True, kw_only=True)
class CASettings:
    organisation_name: str = field(
        default="brokergate",
        metadata={"help": "O= of the CA certificates and of every broker certificate"},
    )
    root_common_name: str = field(
        default="brokergate Root CA", metadata={"help": "CN of the root CA"}
    )
    issuing_common_name: str = field(
        default="brokergate Broker CA",
        metadata={"help": "CN prefix of the issuing CAs; the generation is appended (G1, G2, …)"},
    )
    ca_key_type: KeyType = field(
        default="rsa3072",
        metadata={
            "help": "Key type of the root and issuing CAs (RSA for the widest client support)"
        },
    )
    leaf_key_type: KeyType = field(
        default="rsa2048",
        metadata={
            "help": "Key type of broker certificates. RSA-2048: every browser, Windows' "
            "current-user store and old macOS keychains take it (ECDSA client keys can land "
            "in a legacy CSP on some Windows versions); see docs/ca.md"
        },
    )
    leaf_validity_years: int = field(
        default=DEFAULT_LEAF_VALIDITY_YEARS,
        metadata={
            "help": "Validity of a broker certificate in calendar years: it ends on the same "
            "day and time (Europe/Berlin), 29 February on 28 February; see docs/ca.md"
        },
    )
    issuing_validity: timedelta = field(
        default=DEFAULT_ISSUING_VALIDITY, metadata={"help": "Validity of a new issuing CA"}
    )
    root_validity: timedelta = field(
        default=DEFAULT_ROOT_VALIDITY, metadata={"help": "Validity of a new root CA"}
    )
    crl_validity: timedelta = field(
        default=DEFAULT_CRL_VALIDITY, metadata={"help": "nextUpdate - thisUpdate of each CRL"}
    )
    crl_republish_before: timedelta = field(
        default=DEFAULT_CRL_REPUBLISH_BEFORE,
        metadata={"help": "Re-publish a CRL when its nextUpdate is closer than this"},
    )
    p12_profile: P12Profile = field(
        default="compat",
        metadata={
            "help": "PKCS#12 encryption: compat (3DES + SHA-1 MAC, opens by double click on "
            "every Windows and macOS) or modern (PBES2 AES-256 + SHA-256 MAC, which macOS "
            "often refuses); see docs/ca.md"
        },
    )
    superseded_grace: timedelta = field(
        default=timedelta(days=14),
        metadata={
            "help": "After a renewal the old certificate is revoked (superseded) when "
            "the new one is first used, or after this grace period at the latest"
        },
    )
    pkcs12_dir: Path | None = field(
        default=None,
        metadata={
            "help": "Folder where `brokergate cert issue` writes PKCS#12 files when no --out "
            "or --out-dir is given (keep it private, outside any repository); unset: those "
            "options are required"
        },
    )
    public_base_url: str | None = field(
        default=None,
        metadata={
            "help": "Public https base URL; when set, certificates carry a CRL distribution "
            "point <base>/_gateway/crl/<generation>.crl, served by the gateway"
        },
    )
    passphrase: str = field(
        default="",
        repr=False,
        metadata={"help": "Passphrase that encrypts the CA private keys at rest", "secret": True},
    )
    key_store: KeyStoreKind = field(
        default="file",
        metadata={
            "help": "Where new CA keys are made: file (encrypted with the passphrase, kept in "
            "the store) or pkcs11 (generated inside a PKCS#11 token, never extractable); keys "
            "made before stay where they are; see docs/ca.md"
        },
    )
    pkcs11_module: str = field(
        default="",
        metadata={
            "help": "With key_store = pkcs11: path of the token's PKCS#11 module, e.g. "
            "/usr/lib/softhsm/libsofthsm2.so"
        },
    )
    pkcs11_token_label: str = field(
        default="",
        metadata={"help": "With key_store = pkcs11: label of the token that holds the CA keys"},
    )
    pkcs11_pin: str = field(
        default="",
        repr=False,
        metadata={"help": "User PIN of the PKCS#11 token", "secret": True},
    )

    def __post_init__(self) -> None:
        if self.leaf_validity_years < 1:
            raise ValueError("leaf_validity_years must be at least 1")
        # The longest N calendar years can be (every one a leap year, plus a DST hour).
        if timedelta(days=366 * self.leaf_validity_years) >= self.issuing_validity:
            raise ValueError("leaf_validity_years must be shorter than issuing_validity")
        if self.crl_republish_before >= self.crl_validity:
            raise ValueError("crl_republish_before must be shorter than crl_validity")
        if self.key_store == "pkcs11" and not (self.pkcs11_module and self.pkcs11_token_label):
            raise ValueError(
                "key_store = pkcs11 needs pkcs11_module (the token's .so) and pkcs11_token_label"
            )
        if self.public_base_url is not None and not self.public_base_url.startswith(
            ("https://", "http://")
        ):
            raise ValueError("public_base_url must start with https:// (or http://)")
