"""Fallback logins and account services: password + TOTP, passkeys, broker number + TAN,
remembered devices, account activation, email change, the broker's own certificates, the
ops reset of second factors.

Pure services over the store, with the clock injected (``now``) and the transaction
handled inside each service (failures are committed, then raised). The pages in
``gateway.web`` call them; nothing here imports aiohttp. Every throttle they apply is in
``gateway.regulation``.
"""

from gateway.logins._accounts import find_user_for_login, normalise_broker_number
from gateway.logins._activation import (
    ACTIVATION_PATH,
    ActivationSent,
    activate,
    activation_link_base,
    change_password,
    check_activation,
    send_activation,
)
from gateway.logins._devices import (
    COOKIE_NAME as DEVICE_COOKIE,
)
from gateway.logins._devices import (
    list_devices,
    recognise_device,
    remember_device,
    revoke_devices,
)
from gateway.logins._errors import (
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
from gateway.logins._history import (
    METHOD_CERTIFICATE,
    METHOD_DEVICE,
    METHOD_EMAIL_TAN,
    METHOD_PASSKEY,
    METHOD_PASSWORD,
    METHOD_RECOVERY,
    METHOD_RESTRICTED,
    METHOD_TOTP,
    certificate_sign_on_is_a_login,
    record_login,
)
from gateway.logins._passkeys import (
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
from gateway.logins._password_login import PasswordAccepted, login_with_password
from gateway.logins._passwords import check_password, hash_password, validate_new_password
from gateway.logins._second_factor import verify_second_factor
from gateway.logins._second_factor_reset import SecondFactorsReset, reset_second_factors
from gateway.logins._settings import LoginSettings
from gateway.logins._tan import (
    TAN_KEY_PURPOSE,
    DeviceRecognised,
    RestrictedLogin,
    TanConfirmed,
    TanSent,
    confirm_tan,
    restricted_login,
    start_broker_login,
)
from gateway.logins._tokens import derive_key
from gateway.logins._totp import (
    TOTP_PURPOSE,
    TotpEnrolment,
    begin_enrolment,
    confirm_enrolment,
    pending_enrolment,
    remaining_recovery_codes,
    reset_totp,
)

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
    "RelyingParty",
    "RestrictedLogin",
    "SecondFactorInvalid",
    "SecondFactorsReset",
    "TanConfirmed",
    "TanInvalid",
    "TanSent",
    "TooSoon",
    "TotpEnrolment",
    "UnknownEmail",
    "activate",
    "activation_link_base",
    "authentication_options",
    "begin_enrolment",
    "certificate_sign_on_is_a_login",
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
    "recognise_device",
    "record_login",
    "registration_options",
    "relying_party",
    "remaining_recovery_codes",
    "remember_device",
    "remove_passkey",
    "reset_second_factors",
    "reset_totp",
    "restricted_login",
    "revoke_devices",
    "send_activation",
    "start_broker_login",
    "validate_new_password",
    "verify_second_factor",
]
