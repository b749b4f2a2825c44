"""The identifiers brokers are known by: broker numbers and email addresses.

Broker numbers have the portal's format NN/NNN/NNNN (seed 001, e.g. 60/123/4567).
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email

from ca._errors import InvalidBrokerNumber, InvalidEmail

BROKER_NUMBER = re.compile(r"^\d{2}/\d{3}/\d{4}$")
LOCALES = ("de", "en", "nl")


def validate_broker_number(value: str) -> str:
    """The broker number, stripped; raises :class:`InvalidBrokerNumber` if malformed."""
    cleaned = value.strip()
    if not BROKER_NUMBER.fullmatch(cleaned):
        raise InvalidBrokerNumber(value)
    return cleaned


def normalise_email(value: str) -> str:
    """The address as stored: syntax-checked (no DNS), domain and local part lower-cased.

    Lower-casing the local part is not RFC-correct in general, but brokers type their
    address in any case and no mail system in this market distinguishes them.
    """
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(value, str(exc)) from None
    return result.normalized.lower()
