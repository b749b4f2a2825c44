"""The CA's settings (read once by the CLI, passed down)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

KeyType = Literal["rsa2048", "rsa3072", "rsa4096", "ec-p256", "ec-p384"]
P12Profile = Literal["compat", "modern"]

# Two years, as brokers were promised (seed 000: "zwei Jahre gültig").
DEFAULT_LEAF_VALIDITY = timedelta(days=730)
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
    leaf_validity: timedelta = field(
        default=DEFAULT_LEAF_VALIDITY, metadata={"help": "Validity of a broker certificate"}
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

    def __post_init__(self) -> None:
        if self.leaf_validity <= timedelta(0):
            raise ValueError("leaf_validity must be positive")
        if self.leaf_validity >= self.issuing_validity:
            raise ValueError("leaf_validity must be shorter than issuing_validity")
        if self.crl_republish_before >= self.crl_validity:
            raise ValueError("crl_republish_before must be shorter than crl_validity")
        if self.public_base_url is not None and not self.public_base_url.startswith(
            ("https://", "http://")
        ):
            raise ValueError("public_base_url must start with https:// (or http://)")
