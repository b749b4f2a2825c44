"""Errors of the renewal package.

::

    RenewalError (RuntimeError)
    ├── MailNotFound          `mail retry|show ID` with an id that is not in the outbox
    ├── MailNotRetryable      `mail retry` of a sent mail or one a worker holds now
    └── TemplateError         a mail cannot be rendered; the row fails permanently
        ├── UnknownTemplate   no such template name
        └── MissingMailValue  the row lacks a context or secret value the template needs
"""

from __future__ import annotations


class RenewalError(RuntimeError):
    """Base class of the renewal package's errors."""


class MailNotFound(RenewalError):
    def __init__(self, mail_id: int) -> None:
        self.mail_id = mail_id
        super().__init__(f"no mail with id {mail_id} in the outbox (see 'brokergate mail status')")


class MailNotRetryable(RenewalError):
    def __init__(self, mail_id: int, reason: str) -> None:
        self.mail_id = mail_id
        super().__init__(
            f"mail {mail_id} cannot be retried: {reason} (only failed or waiting mails can be)"
        )


class TemplateError(RenewalError):
    """The mail cannot be rendered; retrying the same row would fail the same way."""


class UnknownTemplate(TemplateError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(
            f"unknown mail template {name!r}; known templates: {', '.join(sorted(known))} "
            "(see docs/mail.md)"
        )


class MissingMailValue(TemplateError):
    def __init__(self, template: str, detail: str) -> None:
        self.template = template
        super().__init__(
            f"mail template {template!r} cannot be rendered: {detail} "
            "(the queueing code must supply it; see docs/mail.md)"
        )
