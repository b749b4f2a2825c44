"""The table of every limit the gateway enforces, with its default and its reason.

This is the one place that answers "how many … may a broker …": how many wrong passwords
lock an account, how many TANs a broker may request, how often a TAN may be guessed, how
many certificates a broker may download. The numbers are configurable in ``[logins]``
(docs/configuration.md); the defaults below are what a broker is promised.

| limit | default | counted per | what happens |
| --- | --- | --- | --- |
| wrong password or second factor | 5 in 15 min | account + address | locked 15 min from there |
| wrong password or second factor | 30 in 60 min | account | locked 15 min (*) |
| wrong logins of any kind | 20 in 15 min | client address | address locked 15 min |
| TAN mails | 1 per 60 s, 5 in 15 min | broker | "try again from …" |
| wrong entries of one TAN | 5 | TAN | the TAN is void |
| 2FA set-up codes (issue 14) | as TAN mails, entries | broker / code | as for TANs |
| certificate downloads | 3 per 24 h | broker | "try again from …" |
| recovery mails (reset link, activation) | 3 in 60 min | account | no further mail; same answer |
| recovery requests | 10 in 60 min | client address | address locked 60 min; same answer |

(*) not for the broker's remembered browsers (a TAN confirmed in them) nor with her
certificate; certificate single sign-on is never throttled.

Why per account *and* address (issue 17): counted per account alone, anyone could lock a
broker's password login from anywhere by failing five times. Per (account, address) a
stranger locks only their own address; the global back-off per account needs six times
as many failures, spread over at least seven addresses (each stops at 5), before it
locks, and even then a broker in a browser she confirmed a TAN in (OWASP's "device
cookies") or with her certificate is not held up. Guessing stays bounded: 5 per address
per 15 min, 30 per account per hour from everywhere together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from gateway.regulation._counters import RatePolicy

__all__ = [
    "DOWNLOADS_PER_DAY",
    "DOWNLOAD_WINDOW",
    "FAILURES_PER_ACCOUNT",
    "FAILURES_PER_ACCOUNT_GLOBAL",
    "FAILURES_PER_ADDRESS",
    "FAILURE_WINDOW",
    "GLOBAL_FAILURE_WINDOW",
    "GLOBAL_LOCKOUT",
    "LOCKOUT",
    "RECOVERY_MAILS_PER_ACCOUNT",
    "RECOVERY_MAIL_WINDOW",
    "RECOVERY_REQUESTS_PER_ADDRESS",
    "TAN_MAILS_PER_WINDOW",
    "TAN_MAX_ATTEMPTS",
    "TAN_RESEND_INTERVAL",
    "Limits",
]

FAILURES_PER_ACCOUNT = 5  # per account and address; NIST SP 800-63B §5.2.2 allows up to 100
# The global back-off per account: 6x the per-address limit, so a stranger needs at least
# seven addresses; counted over an hour, so guessing from many addresses stays at 30/hour.
FAILURES_PER_ACCOUNT_GLOBAL = 30
GLOBAL_FAILURE_WINDOW = timedelta(hours=1)
GLOBAL_LOCKOUT = timedelta(minutes=15)  # no longer than the per-address lock: it hits brokers
FAILURES_PER_ADDRESS = 20  # one office behind one NAT address holds several brokers
FAILURE_WINDOW = timedelta(minutes=15)  # the window failures and TAN mails are counted in
LOCKOUT = timedelta(minutes=15)  # the page says until when
TAN_MAX_ATTEMPTS = 5  # 10**6 TANs, 5 guesses: a 1 in 200,000 chance per TAN
TAN_RESEND_INTERVAL = timedelta(seconds=60)  # "resend" cannot flood a mailbox
TAN_MAILS_PER_WINDOW = 5  # mail-bombing guard per broker within FAILURE_WINDOW
DOWNLOADS_PER_DAY = 3  # each download issues a certificate: a stolen session cannot mint many
DOWNLOAD_WINDOW = timedelta(hours=24)
# Issue 14: "Passwort vergessen?" and "Konto aktivieren" mail whoever knows an address; these
# stop them from filling a mailbox or probing many addresses. The answer never changes (it
# would tell which accounts exist): an over-limit request is silently not mailed.
RECOVERY_MAILS_PER_ACCOUNT = 3  # a broker who mistyped the new password twice still gets one
RECOVERY_MAIL_WINDOW = timedelta(hours=1)
RECOVERY_REQUESTS_PER_ADDRESS = 10  # one office behind one NAT address holds several brokers


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The limits in force, built once from the ``[logins]`` settings.

    Attributes:
        per_account_address: wrong passwords / second factors per account and address.
        per_account: wrong passwords / second factors per account from every address (the
            global back-off; not applied to the broker's remembered browsers and
            certificate).
        per_address: wrong logins (password, second factor, TAN) per client address.
        tan_resend_interval: the least time between two TAN mails for one broker.
        tan_mails_per_window: TAN mails per broker within ``tan_mail_window``.
        tan_mail_window: the window TAN mails are counted in.
        tan_max_attempts: wrong entries of one TAN before it is void.
        downloads_per_window: certificate downloads per broker within ``download_window``.
        download_window: the window downloads are counted in.
        recovery_mails_per_window: recovery mails (reset links, activation mails) per
            account within ``recovery_mail_window``.
        recovery_mail_window: the window recovery mails are counted in.
        recovery_per_address: recovery requests per client address (locks the address for
            the window once reached).
    """

    per_account_address: RatePolicy
    per_account: RatePolicy
    per_address: RatePolicy
    tan_resend_interval: timedelta = TAN_RESEND_INTERVAL
    tan_mails_per_window: int = TAN_MAILS_PER_WINDOW
    tan_mail_window: timedelta = FAILURE_WINDOW
    tan_max_attempts: int = TAN_MAX_ATTEMPTS
    downloads_per_window: int = DOWNLOADS_PER_DAY
    download_window: timedelta = DOWNLOAD_WINDOW
    recovery_mails_per_window: int = RECOVERY_MAILS_PER_ACCOUNT
    recovery_mail_window: timedelta = RECOVERY_MAIL_WINDOW
    recovery_per_address: RatePolicy = field(
        default_factory=lambda: RatePolicy(
            limit=RECOVERY_REQUESTS_PER_ADDRESS,
            window=RECOVERY_MAIL_WINDOW,
            lockout=RECOVERY_MAIL_WINDOW,
        )
    )

    def __post_init__(self) -> None:
        for name in (
            "tan_mails_per_window",
            "tan_max_attempts",
            "downloads_per_window",
            "recovery_mails_per_window",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
