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
from ca._builders import CERTIFICATE_SIGNING, DIGITAL_SIGNATURE_ONLY, user_uri
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
    MissingPassphrase,
    UnknownCertificate,
    UnknownGeneration,
    UnknownUser,
    WrongPassphrase,
)
from ca._keys import generate_key
from ca._pkcs12 import PASSWORD_BITS, generate_password
from ca._settings import CASettings, KeyType, P12Profile
from ca._trust import TrustMaterial, load_trust_material
from ca._users import LOCALES, create_user, find_user, normalise_email, validate_broker_number

__all__ = [
    "CERTIFICATE_SIGNING",
    "DIGITAL_SIGNATURE_ONLY",
    "LOCALES",
    "PASSWORD_BITS",
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
    "IssuedCertificate",
    "KeyType",
    "MissingPassphrase",
    "P12Profile",
    "TrustMaterial",
    "UnknownCertificate",
    "UnknownGeneration",
    "UnknownUser",
    "WrongPassphrase",
    "create_user",
    "find_user",
    "fingerprint_sha256",
    "generate_key",
    "generate_password",
    "load_trust_material",
    "make_authority",
    "normalise_email",
    "normalise_serial",
    "user_uri",
    "validate_broker_number",
]
