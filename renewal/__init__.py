"""The renewal process: expiry reminders, mail delivery from the outbox, CRL re-publication,
clean-up of expired rows.

Public face (everything else is internal):

* :class:`RenewalJobs` + :func:`run_until_stopped` / :func:`build_scheduler`: the
  ``brokergate renewal run`` process.
* :class:`OutboxDelivery`: sends due outbox rows (aiosmtplib), exactly once per row.
* :func:`queue_due_reminders`, :func:`reminder_stage_due`: expiry reminders.
* :class:`MailRenderer`: the mail templates (German, English, Dutch; text + HTML).
* :func:`delete_expired`: the clean-up job.
* ``list_mails`` / ``count_by_status`` / ``get_mail`` / ``requeue_mail``: what
  ``brokergate mail`` shows and does.
"""

from renewal._cleanup import delete_expired
from renewal._delivery import DeliveryReport, OutboxDelivery
from renewal._errors import (
    MailNotFound,
    MailNotRetryable,
    MissingMailValue,
    RenewalError,
    TemplateError,
    UnknownTemplate,
)
from renewal._message import build_message, message_id_for
from renewal._ops import MailSummary, count_by_status, get_mail, list_mails, requeue_mail
from renewal._outbox import WorkerId, retry_delay
from renewal._process import RenewalJobs, build_scheduler, run_until_stopped
from renewal._reminders import ReminderReport, days_left, queue_due_reminders, reminder_stage_due
from renewal._render import TEMPLATES, MailRenderer, RenderedMail
from renewal._settings import DEFAULT_REMINDER_STAGES, MailSettings, RenewalSettings

__all__ = [
    "DEFAULT_REMINDER_STAGES",
    "TEMPLATES",
    "DeliveryReport",
    "MailNotFound",
    "MailNotRetryable",
    "MailRenderer",
    "MailSettings",
    "MailSummary",
    "MissingMailValue",
    "OutboxDelivery",
    "ReminderReport",
    "RenderedMail",
    "RenewalError",
    "RenewalJobs",
    "RenewalSettings",
    "TemplateError",
    "UnknownTemplate",
    "WorkerId",
    "build_message",
    "build_scheduler",
    "count_by_status",
    "days_left",
    "delete_expired",
    "get_mail",
    "list_mails",
    "message_id_for",
    "queue_due_reminders",
    "reminder_stage_due",
    "requeue_mail",
    "retry_delay",
    "run_until_stopped",
]
