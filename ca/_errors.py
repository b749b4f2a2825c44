"""Errors of the certificate authority. Each message says what was wrong and what to do.

::

    CAError (RuntimeError)
    ├── CANotInitialised        no CA yet: run `brokergate ca init`
    ├── CAAlreadyInitialised
    ├── WrongPassphrase         the CA passphrase does not open the CA key
    ├── MissingPassphrase
    ├── KeyStoreError           the PKCS#11 module, token or key cannot be used
    │   └── WrongTokenPin
    ├── UnknownUser
    ├── UnknownCertificate
    ├── UnknownGeneration
    ├── GenerationInUse         retire refused while live certificates remain
    ├── InvalidUserData (ValueError too)
    │   ├── InvalidBrokerNumber
    │   └── InvalidEmail
    ├── DuplicateUser
    ├── SignerUnavailable       the signer cannot be reached or cannot answer now
    └── SignerSocketInUse       ``ca serve`` found a live socket, or no socket, at its path
"""

from __future__ import annotations


class CAError(RuntimeError):
    """Base class of the CA's errors."""


class CANotInitialised(CAError):
    def __init__(self) -> None:
        super().__init__("the CA is not initialised yet; run 'brokergate ca init' first")


class CAAlreadyInitialised(CAError):
    def __init__(self, generations: int) -> None:
        super().__init__(
            f"the CA is already initialised ({generations} generation(s)); use "
            "'brokergate ca rotate' for a new issuing CA"
        )


class WrongPassphrase(CAError):
    def __init__(self) -> None:
        super().__init__(
            "the CA passphrase does not open the CA private key; check "
            "BROKERGATE_CA__PASSPHRASE or ca.passphrase_file (nothing was changed)"
        )


class MissingPassphrase(CAError):
    def __init__(self) -> None:
        super().__init__(
            "no CA passphrase configured; set BROKERGATE_CA__PASSPHRASE or ca.passphrase_file"
        )


class KeyStoreError(CAError):
    """A CA key in a PKCS#11 token cannot be made or used; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class WrongTokenPin(KeyStoreError):
    def __init__(self, token_label: str) -> None:
        super().__init__(
            f"the PIN does not open PKCS#11 token {token_label!r}; check "
            "BROKERGATE_CA__PKCS11_PIN or ca.pkcs11_pin_file (nothing was changed)"
        )


class UnknownUser(CAError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no user {ref!r}; 'brokergate user list' shows the users")


class UnknownCertificate(CAError):
    def __init__(self, serial: str) -> None:
        self.serial = serial
        super().__init__(
            f"no certificate with serial {serial!r}; 'brokergate cert list' shows them"
        )


class UnknownGeneration(CAError):
    def __init__(self, generation: int) -> None:
        super().__init__(
            f"no CA generation {generation}; 'brokergate ca status' lists the generations"
        )


class GenerationInUse(CAError):
    def __init__(self, generation: int, live: int) -> None:
        self.generation = generation
        self.live = live
        super().__init__(
            f"generation {generation} still has {live} live certificate(s); renew or revoke them "
            "first, or pass --force to stop trusting them now"
        )


class InvalidGenerationState(CAError):
    def __init__(self, message: str) -> None:
        super().__init__(message)


class InvalidUserData(CAError, ValueError):
    """A field of a new user is malformed."""


class InvalidBrokerNumber(InvalidUserData):
    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(
            f"invalid broker number {value!r}: expected the format NN/NNN/NNNN, e.g. 60/123/4567"
        )


class InvalidEmail(InvalidUserData):
    def __init__(self, value: str, reason: str) -> None:
        self.value = value
        super().__init__(f"invalid email address {value!r}: {reason}")


class InvalidLocale(InvalidUserData):
    def __init__(self, value: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown locale {value!r}; use one of {', '.join(known)}")


class DuplicateUser(CAError):
    def __init__(self, email: str) -> None:
        self.email = email
        super().__init__(
            f"a user with email {email!r} exists already; 'brokergate user show {email}' shows it"
        )


class UnknownRight(InvalidUserData):
    def __init__(self, key: str, known: tuple[str, ...]) -> None:
        self.key = key
        super().__init__(
            f"unknown right {key!r}; the product catalogue ([firms] products) has "
            f"{', '.join(known)}"
        )


class RightNotInOffice(InvalidUserData):
    def __init__(self, keys: list[str], office: str) -> None:
        self.keys = keys
        super().__init__(
            f"office {office} does not have the right(s) {', '.join(keys)}; give them to the "
            "office first, or leave them out"
        )


class InvalidOfficeData(InvalidUserData):
    """A field of an office is malformed. ``field``: which one (``name``, ``number``,
    ``email``, ``address``, ``postcode``, ``city``, ``phone``), or ``None`` when the request
    as a whole cannot be done; forms put the error next to it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class DuplicateOffice(CAError):
    """``field``: ``number`` (taken in the firm) or ``email`` (taken by another office)."""

    def __init__(self, message: str, *, field: str) -> None:
        self.field = field
        super().__init__(message)


class UnknownOffice(CAError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no office {ref!r}; 'brokergate office list' shows them")


class OfficeInUse(CAError):
    def __init__(self, office: str) -> None:
        super().__init__(
            f"office {office} cannot be deleted: one of its users has logged in already; "
            "deactivate it instead"
        )


class NotPermitted(CAError):
    """The actor may not see or change this. Deliberately the same for "does not exist" and
    "belongs to someone else", so that ids of other firms cannot be probed."""

    def __init__(self) -> None:
        super().__init__("not found, or not yours to manage")


class SignerUnavailable(CAError):
    """The signer (``brokergate ca serve``) did not answer; nothing was issued."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"the signer cannot be reached: {detail}; try again later")


class SignerSocketInUse(CAError):
    def __init__(self, path: object, why: str) -> None:
        super().__init__(f"cannot listen on {path}: {why} (signer.socket_path)")
