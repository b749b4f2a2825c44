"""Fallback logins and account services: password + TOTP, passkeys, broker number + TAN,
remembered devices, account activation.

Pure services over the store, with the clock injected (``now``) and the transaction
handled inside each service (failures are committed, then raised). The gateway's pages
call them; nothing here knows about HTTP.
"""

from gateway._logins._accounts import find_user_for_login, normalise_broker_number
from gateway._logins._activation import (
    ACTIVATION_PATH,
    ActivationSent,
    activate,
    change_password,
    check_activation,
    send_activation,
)
from gateway._logins._devices import (
    COOKIE_NAME as DEVICE_COOKIE,
)
from gateway._logins._devices import (
    list_devices,
    recognise_device,
    remember_device,
    revoke_devices,
)
from gateway._logins._errors import (
    AccountNotActive,
    ActivationInvalid,
    EnrolmentError,
    InvalidBrokerNumber,
    InvalidCredentials,
    LockedOut,
    LoginError,
    PasskeyRejected,
    PasswordRejected,
    SecondFactorInvalid,
    TanInvalid,
    TooSoon,
    UnknownEmail,
)
from gateway._logins._history import (
    METHOD_CERTIFICATE,
    METHOD_DEVICE,
    METHOD_EMAIL_TAN,
    METHOD_PASSKEY,
    METHOD_PASSWORD,
    METHOD_RECOVERY,
    METHOD_RESTRICTED,
    METHOD_TOTP,
    record_login,
)
from gateway._logins._passkeys import (
    Ceremony,
    PasskeyLogin,
    RelyingParty,
    authentication_options,
    finish_authentication,
    finish_registration,
    list_passkeys,
    registration_options,
    relying_party,
    remove_passkey,
)
from gateway._logins._password_login import PasswordAccepted, login_with_password
from gateway._logins._passwords import check_password, hash_password, validate_new_password
from gateway._logins._ratelimit import RatePolicy, purge_expired
from gateway._logins._second_factor import verify_second_factor
from gateway._logins._settings import LoginSettings
from gateway._logins._tan import (
    TAN_KEY_PURPOSE,
    DeviceRecognised,
    RestrictedLogin,
    TanConfirmed,
    TanSent,
    confirm_tan,
    restricted_login,
    start_broker_login,
)
from gateway._logins._tokens import derive_key
from gateway._logins._totp import (
    TOTP_PURPOSE,
    TotpEnrolment,
    begin_enrolment,
    confirm_enrolment,
    pending_enrolment,
    remaining_recovery_codes,
    reset_totp,
)
from gateway._logins._web import ca_authority_factory, setup_logins

__all__ = [
    "ACTIVATION_PATH",
    "DEVICE_COOKIE",
    "METHOD_CERTIFICATE",
    "METHOD_DEVICE",
    "METHOD_EMAIL_TAN",
    "METHOD_PASSKEY",
    "METHOD_PASSWORD",
    "METHOD_RECOVERY",
    "METHOD_RESTRICTED",
    "METHOD_TOTP",
    "TAN_KEY_PURPOSE",
    "TOTP_PURPOSE",
    "AccountNotActive",
    "ActivationInvalid",
    "ActivationSent",
    "Ceremony",
    "DeviceRecognised",
    "EnrolmentError",
    "InvalidBrokerNumber",
    "InvalidCredentials",
    "LockedOut",
    "LoginError",
    "LoginSettings",
    "PasskeyLogin",
    "PasskeyRejected",
    "PasswordAccepted",
    "PasswordRejected",
    "RatePolicy",
    "RelyingParty",
    "RestrictedLogin",
    "SecondFactorInvalid",
    "TanConfirmed",
    "TanInvalid",
    "TanSent",
    "TooSoon",
    "TotpEnrolment",
    "UnknownEmail",
    "activate",
    "authentication_options",
    "begin_enrolment",
    "ca_authority_factory",
    "change_password",
    "check_activation",
    "check_password",
    "confirm_enrolment",
    "confirm_tan",
    "derive_key",
    "find_user_for_login",
    "finish_authentication",
    "finish_registration",
    "hash_password",
    "list_devices",
    "list_passkeys",
    "login_with_password",
    "normalise_broker_number",
    "pending_enrolment",
    "purge_expired",
    "recognise_device",
    "record_login",
    "registration_options",
    "relying_party",
    "remaining_recovery_codes",
    "remember_device",
    "remove_passkey",
    "reset_totp",
    "restricted_login",
    "revoke_devices",
    "send_activation",
    "setup_logins",
    "start_broker_login",
    "validate_new_password",
    "verify_second_factor",
]
