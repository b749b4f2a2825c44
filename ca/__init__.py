"""The certificate authority: keys, certificates, CRLs, PKCS#12, generations, issuance,
revocation.

Uses ``store``; used by ``gateway``, ``renewal`` and the CLI.
"""

from ca._authority import (
    CertificateAuthority,
    GenerationInfo,
    IssuedCertificate,
    fingerprint_sha256,
    make_authority,
    normalise_serial,
)
from ca._builders import (
    CERTIFICATE_SIGNING,
    DIGITAL_SIGNATURE_ONLY,
    LeafSubject,
    build_issuing,
    build_leaf,
    build_root,
    build_server_leaf,
    ca_name,
)
from ca._errors import (
    CAAlreadyInitialised,
    CAError,
    CANotInitialised,
    DuplicateUser,
    GenerationInUse,
    InvalidBrokerNumber,
    InvalidEmail,
    InvalidGenerationState,
    InvalidLocale,
    InvalidUserData,
    KeyStoreError,
    MissingPassphrase,
    SignerSocketInUse,
    SignerUnavailable,
    UnknownCertificate,
    UnknownGeneration,
    UnknownUser,
    WrongPassphrase,
    WrongTokenPin,
)
from ca._keys import generate_key
from ca._pkcs12 import PASSWORD_BITS, friendly_name, generate_password
from ca._settings import CASettings, KeyStoreKind, KeyType, P12Profile
from ca._signer import (
    RATE_LIMITED,
    SIGNER_PURPOSE,
    SIGNER_RATE_GLOBAL,
    SIGNER_RATE_USER,
    IssueRequest,
    SessionRules,
    Signer,
    SignerAnswer,
)
from ca._signer_client import SignerClient
from ca._signer_metrics import SignerMetrics
from ca._signer_server import bind_socket, run_signer, signer_app
from ca._signer_settings import SignerSettings
from ca._trust import TrustMaterial, load_trust_material
from ca._users import LOCALES, create_user, find_user, normalise_email, validate_broker_number
from ca._validity import BROKER_TIME_ZONE, add_calendar_years

__all__ = [
    "BROKER_TIME_ZONE",
    "CERTIFICATE_SIGNING",
    "DIGITAL_SIGNATURE_ONLY",
    "LOCALES",
    "PASSWORD_BITS",
    "RATE_LIMITED",
    "SIGNER_PURPOSE",
    "SIGNER_RATE_GLOBAL",
    "SIGNER_RATE_USER",
    "CAAlreadyInitialised",
    "CAError",
    "CANotInitialised",
    "CASettings",
    "CertificateAuthority",
    "DuplicateUser",
    "GenerationInUse",
    "GenerationInfo",
    "InvalidBrokerNumber",
    "InvalidEmail",
    "InvalidGenerationState",
    "InvalidLocale",
    "InvalidUserData",
    "IssueRequest",
    "IssuedCertificate",
    "KeyStoreError",
    "KeyStoreKind",
    "KeyType",
    "LeafSubject",
    "MissingPassphrase",
    "P12Profile",
    "SessionRules",
    "Signer",
    "SignerAnswer",
    "SignerClient",
    "SignerMetrics",
    "SignerSettings",
    "SignerSocketInUse",
    "SignerUnavailable",
    "TrustMaterial",
    "UnknownCertificate",
    "UnknownGeneration",
    "UnknownUser",
    "WrongPassphrase",
    "WrongTokenPin",
    "add_calendar_years",
    "bind_socket",
    "build_issuing",
    "build_leaf",
    "build_root",
    "build_server_leaf",
    "ca_name",
    "create_user",
    "find_user",
    "fingerprint_sha256",
    "friendly_name",
    "generate_key",
    "generate_password",
    "load_trust_material",
    "make_authority",
    "normalise_email",
    "normalise_serial",
    "run_signer",
    "signer_app",
    "validate_broker_number",
]
