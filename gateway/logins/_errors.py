"""Errors of the login services; the pages turn ``key`` (+ ``params``) into translated text.

::

    LoginError (Exception)
    ├── InvalidCredentials      wrong identifier or password (never says which)
    ├── LockedOut               too many failures; ``until`` says when to try again
    ├── SecondFactorInvalid     TOTP or recovery code wrong, or a code used twice
    ├── InvalidBrokerNumber     seed 001: "This broker number is invalid."
    ├── UnknownEmail            seed 001: the email is not the one registered for the number
    ├── TanInvalid              TAN wrong, expired, already used or out of attempts
    ├── TooSoon                 a mail (TAN, activation) or download was requested too often
    ├── ActivationInvalid       activation link unknown, used or expired
    ├── PasswordRejected        a new password breaks the rules (``reason``)
    ├── EnrolmentError          TOTP/passkey enrolment in the wrong state
    ├── PasskeyRejected         the WebAuthn ceremony failed verification
    ├── EmailChangeRejected     the new address is malformed, unchanged or taken
    ├── EmailChangeLinkInvalid  the email-change link is unknown, used, expired or taken
    ├── PasswordResetLinkInvalid the "forgot password" link is unknown, used or expired
    ├── SetupCodeInvalid        the 2FA set-up's emailed code is missing, wrong, expired, void
    ├── SignerUnreachable       the signer did not answer: nothing issued, try again later
    └── DownloadRefused         the signer's own checks refused the download (session, rate)

A right factor of a user who may not log in (``ca.login_refusal``) raises
``gateway.LoginRefused`` instead, a page of its own (403), not a form's message.

``str(error)`` is English for logs and the CLI; it never contains a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class LoginError(Exception):
    """Base class: ``key`` names the message in the translations, ``params`` fill it in."""

    key: str = "error.generic"

    def __init__(self, message: str, **params: Any) -> None:
        self.params = params
        super().__init__(message)


class InvalidCredentials(LoginError):
    key = "error.invalid_credentials"

    def __init__(self) -> None:
        super().__init__("the email/broker number or the password is wrong")


class LockedOut(LoginError):
    key = "error.locked_out"

    def __init__(self, until: datetime) -> None:
        self.until = until
        super().__init__(
            f"too many failed attempts; try again after {until:%Y-%m-%d %H:%M} UTC", until=until
        )


class SecondFactorInvalid(LoginError):
    key = "error.second_factor_invalid"

    def __init__(self) -> None:
        super().__init__("the code is wrong, expired or was already used")


class InvalidBrokerNumber(LoginError):
    key = "error.invalid_broker_number"

    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(f"this broker number is invalid: {value!r}")


class UnknownEmail(LoginError):
    key = "error.unknown_email"

    def __init__(self, email: str, broker_number: str) -> None:
        self.email = email
        self.broker_number = broker_number
        super().__init__(
            f"{email!r} is not the email address registered for broker number {broker_number}",
            email=email,
        )


class TanInvalid(LoginError):
    key = "error.tan_invalid"

    def __init__(self, why: str) -> None:
        self.why = why  # "wrong", "expired", "used", "exhausted", "unknown": for the audit only
        super().__init__(f"the TAN is not valid ({why}); request a new one")


class TooSoon(LoginError):
    key = "error.too_soon"

    def __init__(self, what: str, until: datetime) -> None:
        self.what = what
        self.until = until
        super().__init__(
            f"{what} was requested too often; try again after {until:%Y-%m-%d %H:%M:%S} UTC",
            until=until,
        )


class ActivationInvalid(LoginError):
    key = "error.activation_invalid"

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(f"the activation link is not valid ({why}); ask for a new one")


class PasswordRejected(LoginError):
    key = "error.password_rejected"

    def __init__(self, reason: str, **params: Any) -> None:
        self.reason = reason  # a message key suffix: "too_short", "mismatch", ...
        super().__init__(f"the new password is not accepted: {reason}", reason=reason, **params)


class EnrolmentError(LoginError):
    key = "error.enrolment"

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class PasskeyRejected(LoginError):
    key = "error.passkey_rejected"

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"the passkey could not be verified: {problem}")


class EmailChangeRejected(LoginError):
    """The new address cannot be used: ``reason`` is ``invalid``, ``same`` or ``taken``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.key = f"error.email_change.{reason}"
        super().__init__(f"the new email address cannot be used ({reason})")


class EmailChangeLinkInvalid(LoginError):
    """The confirmation link is ``unknown``, ``used``, ``expired``, or the address ``taken``."""

    def __init__(self, why: str) -> None:
        self.why = why
        self.key = f"error.email_change_link.{why}"
        super().__init__(f"the email confirmation link is not valid ({why}); nothing was changed")


class SignerUnreachable(LoginError):
    """The signer (``brokergate ca serve``) did not answer; nothing was issued or sent."""

    key = "error.signer_unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(f"the signer did not answer ({detail}); nothing was issued")


class DownloadRefused(LoginError):
    """The signer re-checked the session in the store and refused (``reason``)."""

    key = "error.download_refused"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the signer refused the download ({reason})")


class PasswordResetLinkInvalid(LoginError):
    """The "forgot password" link is ``unknown``, ``used`` or ``expired`` (a newer link
    expires the older ones)."""

    def __init__(self, why: str) -> None:
        self.why = why
        self.key = f"error.password_reset_link.{why}"
        super().__init__(f"the password reset link is not valid ({why}); nothing was changed")


class SetupCodeInvalid(LoginError):
    """The emailed code of the 2FA set-up's step 1 is ``missing`` (none requested in this
    session), ``wrong``, ``expired`` or ``exhausted`` (too many wrong entries: void)."""

    def __init__(self, why: str, *, attempts_left: int = 0) -> None:
        self.why = why
        self.key = f"error.setup_code.{why}"
        super().__init__(
            f"the set-up code is not valid ({why}); request a new one", left=attempts_left
        )
