"""Every mail the system sends, as its HTML part renders in Chromium, in German, English and
Dutch (issue 15: "every text reviewed in a screenshot"), the reminder at each of its three
stages. The screenshots land in $BROKERGATE_SCREENSHOT_DIR (mail-<template>-<language>.png);
the text part is checked by tests/renewal/test_render.py."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from renewal import TEMPLATES, MailRenderer
from tests.logins.web.chrome import BROWSER_TEST_MARKS, Chrome, start_chrome
from tests.renewal.conftest import PUBLIC_URL
from tests.renewal.test_render import CONTEXTS, MARKERS, SECRETS

# No store here: the marks without the database parametrisation.
pytestmark = [mark for mark in BROWSER_TEST_MARKS if mark.name != "parametrize"]

# What each reminder stage must say besides the common reminder text, per language.
STAGES = {
    "de": {60: "noch 60 Tage", 14: "noch 14 Tage", 3: "noch 3 Tage"},
    "en": {60: "60 days left", 14: "14 days left", 3: "3 days left"},
    "nl": {60: "nog 60 dagen", 14: "nog 14 dagen", 3: "nog 3 dagen"},
}
# Every mail that names the import steps names these three systems.
SYSTEMS = ("Windows", "macOS", "Firefox")


def _mails(language: str) -> dict[str, tuple[str, str, list[str]]]:
    """name → (subject, html, phrases the rendered page must show)."""
    renderer = MailRenderer(public_url=PUBLIC_URL)
    mails: dict[str, tuple[str, str, list[str]]] = {}
    for template in sorted(TEMPLATES):
        variants = [(template, CONTEXTS[template], [MARKERS[language][template]])]
        if template == "reminder":
            variants = [
                (
                    f"reminder-{days}",
                    {
                        **CONTEXTS[template],
                        # as the scan sends it (renewal/_reminders.py): the friendly name too
                        "friendly_name": "Erika Mustermann (60/123/4567) 2026-12-09 4f3a9c",
                        "days_left": days,
                        "stage_days": days,
                    },
                    [phrase, *SYSTEMS],
                )
                for days, phrase in STAGES[language].items()
            ]
        elif template == "certificate_password":
            # The HTML part shows the password in a box of its own, without the label.
            variants[0][2][:] = [SECRETS[template]["password"], *SYSTEMS]
        for name, context, phrases in variants:
            mail = renderer.render(
                template=template,
                locale=language,
                context=context,
                secrets=SECRETS.get(template, {}),
            )
            mails[name] = (mail.subject, mail.html, phrases)
    return mails


@pytest.mark.parametrize("language", sorted(STAGES))
async def test_every_mail_renders_in_a_browser(
    language: str, chromes: list[Chrome], screenshots: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mails"
    folder.mkdir()
    chrome = start_chrome(home=tmp_path / "home", base=folder.as_uri(), language=language)
    chromes.append(chrome)
    subjects: dict[str, str] = {}
    for name, (subject, body, phrases) in _mails(language).items():
        # The subject as a mail client shows it, above the HTML part.
        header = f"<p><b>{html.escape(subject)}</b></p><hr>"
        page = re.sub(r"(<body[^>]*>)", rf"\g<1>{header}", body, count=1)
        assert page != body, f"{name}: no <body> in the HTML part"
        (folder / f"{name}.html").write_text(page, encoding="utf-8")
        await chrome.open(f"/{name}.html")
        await chrome.screenshot(screenshots / f"mail-{name}-{language}.png")
        seen = await chrome.visible_text()
        missing = [phrase for phrase in (subject, *phrases) if phrase not in seen]
        assert not missing, f"{name} ({language}) does not show {missing}:\n{seen}"
        assert "{{" not in seen and "{%" not in seen, f"{name}: template syntax left"
        subjects[name] = subject
    # The reminder grows more urgent: the three stages have three different subjects.
    assert len({subjects[f"reminder-{days}"] for days in (60, 14, 3)}) == 3, subjects
