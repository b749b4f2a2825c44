"""Certificate expiry arithmetic shared by the renewal reminders and the gateway's banner.

Pure functions of values and the clock; they live in ``store`` so the gateway can show
the account page's renewal banner without importing ``renewal``.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def days_until_expiry(not_after: datetime, now: datetime) -> int:
    """Whole days until ``not_after`` (rounded down; 0 on the last day and after)."""
    return max(0, (not_after - now) // timedelta(days=1))


def reminder_banner_due(not_after: datetime, now: datetime, first_stage_days: int) -> bool:
    """Whether the portal shows the "your certificate expires soon" banner.

    Shown from the first reminder stage (``max(renewal.reminder_stages_days)``, 60 days by
    default: the mail and the banner start together, seed 000) until expiry. The caller
    decides about superseded certificates (a broker who already holds a newer valid one
    needs "import your new certificate", not "renew").
    """
    return now < not_after and not_after - now <= timedelta(days=first_stage_days)
