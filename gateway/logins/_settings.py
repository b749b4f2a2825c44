"""Settings of the fallback logins (section ``[logins]``; read once by the CLI, passed down)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property

from gateway.regulation import _limits as limits
from gateway.regulation._counters import RatePolicy
from gateway.regulation._limits import Limits

# fresh_login's range: under 10 s nobody gets from the re-authentication to the action; over
# a day "fresh" would mean nothing (a session lives 12 hours by default).
FRESH_LOGIN_MIN = timedelta(seconds=10)
FRESH_LOGIN_MAX = timedelta(hours=24)


@dataclass(frozen=True, kw_only=True)
class LoginSettings:
    """The ``[logins]`` section. The throttles' numbers are explained in
    ``gateway.regulation._limits``; :attr:`limits` is that table as these settings fill it."""

    totp_issuer: str = field(
        default="brokergate",
        metadata={"help": "Issuer shown in authenticator apps (otpauth URI and QR code)"},
    )
    password_min_length: int = field(
        default=12, metadata={"help": "Shortest password accepted when a broker sets one"}
    )
    failures_per_account: int = field(
        default=limits.FAILURES_PER_ACCOUNT,
        metadata={
            "help": "Failed password/second-factor attempts per account and client address "
            "before the account is locked from that address"
        },
    )
    failures_per_account_global: int = field(
        default=limits.FAILURES_PER_ACCOUNT_GLOBAL,
        metadata={
            "help": "Failed password/second-factor attempts per account from all addresses "
            "within global_failure_window before the account is locked, except for the "
            "broker's remembered browsers and certificate"
        },
    )
    global_failure_window: timedelta = field(
        default=limits.GLOBAL_FAILURE_WINDOW,
        metadata={"help": "Fixed window of failures_per_account_global"},
    )
    global_lockout: timedelta = field(
        default=limits.GLOBAL_LOCKOUT,
        metadata={"help": "How long the global per-account lockout lasts"},
    )
    failures_per_address: int = field(
        default=limits.FAILURES_PER_ADDRESS,
        metadata={
            "help": "Failed login attempts per client address before that address is "
            "locked out (all accounts)"
        },
    )
    failure_window: timedelta = field(
        default=limits.FAILURE_WINDOW,
        metadata={"help": "Fixed window in which failed attempts are counted"},
    )
    lockout: timedelta = field(
        default=limits.LOCKOUT,
        metadata={"help": "How long a lockout lasts (the page says until when)"},
    )
    tan_validity: timedelta = field(
        default=timedelta(minutes=15),
        metadata={
            "help": "How long an emailed TAN is valid (seed 001: 15 minutes; whole minutes, "
            "1m to 60m)"
        },
    )
    tan_max_attempts: int = field(
        default=limits.TAN_MAX_ATTEMPTS,
        metadata={"help": "Wrong entries of one TAN before it is void"},
    )
    tan_resend_interval: timedelta = field(
        default=limits.TAN_RESEND_INTERVAL,
        metadata={"help": "Minimum time between two TAN mails for the same broker"},
    )
    tan_mails_per_window: int = field(
        default=limits.TAN_MAILS_PER_WINDOW,
        metadata={"help": "TAN mails per broker within one failure_window (mail bombing guard)"},
    )
    remember_device_for: timedelta = field(
        default=timedelta(days=30),
        metadata={"help": "How long a browser is remembered after a confirmed TAN (seed 001)"},
    )
    activation_validity: timedelta = field(
        default=timedelta(days=7),
        metadata={"help": "How long an emailed activation link is valid"},
    )
    fresh_login: timedelta = field(
        default=timedelta(minutes=5),
        metadata={
            "help": "A login counts as fresh (certificate download, security changes) for this "
            "long (10s to 24h)"
        },
    )
    downloads_per_day: int = field(
        default=limits.DOWNLOADS_PER_DAY,
        metadata={"help": "Certificate downloads per broker per 24 hours"},
    )
    passkey_rp_name: str = field(
        default="brokergate",
        metadata={"help": "Name shown by the browser when a passkey is registered"},
    )

    password_reset_validity: timedelta = field(
        default=timedelta(minutes=30),
        metadata={
            "help": 'How long a mailed "forgot password" link stays valid (whole minutes, '
            "1m to 24h)"
        },
    )
    recovery_mails_per_account: int = field(
        default=limits.RECOVERY_MAILS_PER_ACCOUNT,
        metadata={
            "help": "Password-reset and activation mails per account within "
            "recovery_mail_window (further requests get the same answer and no mail)"
        },
    )
    recovery_mail_window: timedelta = field(
        default=limits.RECOVERY_MAIL_WINDOW,
        metadata={
            "help": "Fixed window of recovery_mails_per_account and of "
            "recovery_requests_per_address"
        },
    )
    recovery_requests_per_address: int = field(
        default=limits.RECOVERY_REQUESTS_PER_ADDRESS,
        metadata={
            "help": "Password-reset and activation requests per client address within "
            "recovery_mail_window before the address gets no more mails"
        },
    )

    def __post_init__(self) -> None:
        if self.password_min_length < 8:
            raise ValueError("password_min_length must be at least 8")
        for name in (
            "failures_per_account",
            "failures_per_account_global",
            "failures_per_address",
            "tan_max_attempts",
            "tan_mails_per_window",
            "downloads_per_day",
            "recovery_mails_per_account",
            "recovery_requests_per_address",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "failure_window",
            "lockout",
            "global_failure_window",
            "global_lockout",
            "tan_validity",
            "remember_device_for",
            "activation_validity",
            "fresh_login",
            "password_reset_validity",
            "recovery_mail_window",
        ):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be a positive duration")
        for name, limit, longest, example in (
            ("tan_validity", timedelta(hours=1), "60m", "15m"),
            ("password_reset_validity", timedelta(hours=24), "24h", "30m"),
        ):
            value: timedelta = getattr(self, name)
            if value % timedelta(minutes=1) or not timedelta(minutes=1) <= value <= limit:
                # The TAN page and mail, and the reset page and mail, say "valid for N
                # minutes": 30 s would read "0 Minuten", 90 s "1 Minuten" (issue 16).
                raise ValueError(
                    f"{name} must be whole minutes from 1m to {longest} "
                    f"(pages and mails name it in minutes; got {value.total_seconds():g}s), "
                    f'e.g. {name} = "{example}"'
                )
        if not FRESH_LOGIN_MIN <= self.fresh_login <= FRESH_LOGIN_MAX:
            raise ValueError(
                "fresh_login must be between 10s and 24h (a person needs a few seconds from "
                'the re-authentication to the action), e.g. fresh_login = "5m"'
            )

    @cached_property
    def limits(self) -> Limits:
        """The throttles' table (``gateway.regulation``) as these settings fill it."""
        return Limits(
            per_account_address=RatePolicy(
                limit=self.failures_per_account, window=self.failure_window, lockout=self.lockout
            ),
            per_account=RatePolicy(
                limit=self.failures_per_account_global,
                window=self.global_failure_window,
                lockout=self.global_lockout,
            ),
            per_address=RatePolicy(
                limit=self.failures_per_address, window=self.failure_window, lockout=self.lockout
            ),
            tan_resend_interval=self.tan_resend_interval,
            tan_mails_per_window=self.tan_mails_per_window,
            tan_mail_window=self.failure_window,
            tan_max_attempts=self.tan_max_attempts,
            downloads_per_window=self.downloads_per_day,
            recovery_mails_per_window=self.recovery_mails_per_account,
            recovery_mail_window=self.recovery_mail_window,
            recovery_per_address=RatePolicy(
                limit=self.recovery_requests_per_address,
                window=self.recovery_mail_window,
                lockout=self.recovery_mail_window,
            ),
        )
