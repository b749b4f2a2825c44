"""brokergate's persistence: models, engine, migrations, and the few queries many packages share.

``store`` imports nothing of ours; ``ca``, ``gateway``, ``renewal`` and the CLI use it.
"""

from store._audit import record_audit
from store._engine import make_engine, session_factory, transaction
from store._errors import SchemaOutOfDate, SealError, StoreError
from store._expiry import (
    DEFAULT_TIME_ZONE,
    REMINDER_WINDOW_DAYS,
    days_until_expiry,
    local_date,
    reminder_banner_due,
    time_zone,
)
from store._local_time import format_local_date, format_local_datetime, plural_category
from store._migrate import current_revisions, ensure_current, head_revisions, upgrade
from store._models import (
    ActivationToken,
    AssertionKey,
    AuditEvent,
    Base,
    CAGeneration,
    CARoot,
    Certificate,
    CertificateStatus,
    EmailChangeToken,
    EmailTan,
    GenerationStatus,
    Level,
    MailOutbox,
    MailStatus,
    Organisation,
    PasskeyCredential,
    PasswordResetToken,
    RateLimit,
    RecoveryCode,
    RememberedDevice,
    ReminderSent,
    RevocationReason,
    RootStatus,
    User,
    UserRole,
    UserStatus,
    WebSession,
)
from store._outbox import OUTBOX_PURPOSE, open_mail_secrets, queue_mail
from store._sealing import Sealer
from store._settings import StoreSettings
from store._types import Clock, UTCDateTime, system_clock

__all__ = [
    "DEFAULT_TIME_ZONE",
    "OUTBOX_PURPOSE",
    "REMINDER_WINDOW_DAYS",
    "ActivationToken",
    "AssertionKey",
    "AuditEvent",
    "Base",
    "CAGeneration",
    "CARoot",
    "Certificate",
    "CertificateStatus",
    "Clock",
    "EmailChangeToken",
    "EmailTan",
    "GenerationStatus",
    "Level",
    "MailOutbox",
    "MailStatus",
    "Organisation",
    "PasskeyCredential",
    "PasswordResetToken",
    "RateLimit",
    "RecoveryCode",
    "RememberedDevice",
    "ReminderSent",
    "RevocationReason",
    "RootStatus",
    "SchemaOutOfDate",
    "SealError",
    "Sealer",
    "StoreError",
    "StoreSettings",
    "UTCDateTime",
    "User",
    "UserRole",
    "UserStatus",
    "WebSession",
    "current_revisions",
    "days_until_expiry",
    "ensure_current",
    "format_local_date",
    "format_local_datetime",
    "head_revisions",
    "local_date",
    "make_engine",
    "open_mail_secrets",
    "plural_category",
    "queue_mail",
    "record_audit",
    "reminder_banner_due",
    "session_factory",
    "system_clock",
    "time_zone",
    "transaction",
    "upgrade",
]
