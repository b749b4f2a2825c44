"""The renewal process: expiry reminders, mail delivery from the outbox, CRL re-publication."""

from renewal._settings import MailSettings, RenewalSettings

__all__ = ["MailSettings", "RenewalSettings"]
