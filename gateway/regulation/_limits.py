"""The table of every limit the gateway enforces, with its default and its reason.

This is the one place that answers "how many … may a broker …": how many wrong passwords
lock an account, how many TANs a broker may request, how often a TAN may be guessed, how
many certificates a broker may download. The numbers are configurable in ``[logins]``
(docs/configuration.md); the defaults below are what a broker is promised.

| limit | default | counted per | what happens |
| --- | --- | --- | --- |
| wrong password or second factor | 5 in 15 min | account | account locked 15 min |
| wrong logins of any kind | 20 in 15 min | client address | address locked 15 min |
| TAN mails | 1 per 60 s, 5 in 15 min | broker | "try again from …" |
| wrong entries of one TAN | 5 | TAN | the TAN is void |
| certificate downloads | 3 per 24 h | broker | "try again from …" |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from gateway.regulation._counters import RatePolicy

__all__ = [
    "DOWNLOADS_PER_DAY",
    "DOWNLOAD_WINDOW",
    "FAILURES_PER_ACCOUNT",
    "FAILURES_PER_ADDRESS",
    "FAILURE_WINDOW",
    "LOCKOUT",
    "TAN_MAILS_PER_WINDOW",
    "TAN_MAX_ATTEMPTS",
    "TAN_RESEND_INTERVAL",
    "Limits",
]

FAILURES_PER_ACCOUNT = 5  # NIST SP 800-63B §5.2.2 allows up to 100; 5 is what brokers know
FAILURES_PER_ADDRESS = 20  # one office behind one NAT address holds several brokers
FAILURE_WINDOW = timedelta(minutes=15)  # the window failures and TAN mails are counted in
LOCKOUT = timedelta(minutes=15)  # the page says until when
TAN_MAX_ATTEMPTS = 5  # 10**6 TANs, 5 guesses: a 1 in 200,000 chance per TAN
TAN_RESEND_INTERVAL = timedelta(seconds=60)  # "resend" cannot flood a mailbox
TAN_MAILS_PER_WINDOW = 5  # mail-bombing guard per broker within FAILURE_WINDOW
DOWNLOADS_PER_DAY = 3  # each download issues a certificate: a stolen session cannot mint many
DOWNLOAD_WINDOW = timedelta(hours=24)


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The limits in force, built once from the ``[logins]`` settings.

    Attributes:
        per_account: wrong passwords / second factors per account.
        per_address: wrong logins (password, second factor, TAN) per client address.
        tan_resend_interval: the least time between two TAN mails for one broker.
        tan_mails_per_window: TAN mails per broker within ``tan_mail_window``.
        tan_mail_window: the window TAN mails are counted in.
        tan_max_attempts: wrong entries of one TAN before it is void.
        downloads_per_window: certificate downloads per broker within ``download_window``.
        download_window: the window downloads are counted in.
    """

    per_account: RatePolicy
    per_address: RatePolicy
    tan_resend_interval: timedelta = TAN_RESEND_INTERVAL
    tan_mails_per_window: int = TAN_MAILS_PER_WINDOW
    tan_mail_window: timedelta = FAILURE_WINDOW
    tan_max_attempts: int = TAN_MAX_ATTEMPTS
    downloads_per_window: int = DOWNLOADS_PER_DAY
    download_window: timedelta = DOWNLOAD_WINDOW

    def __post_init__(self) -> None:
        for name in ("tan_mails_per_window", "tan_max_attempts", "downloads_per_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
