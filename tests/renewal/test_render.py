"""Mail rendering: every template in German (default), English and Dutch, text and HTML."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from renewal import TEMPLATES, MailRenderer, MissingMailValue, UnknownTemplate
from renewal._render import SECRET_MASK, format_date, format_datetime, pick_locale
from tests.renewal.conftest import PUBLIC_URL

CONTEXTS = {
    "certificate_password": {
        "name": "Erika Mustermann",
        "serial": "4f3a9c",
        "not_after": "2028-11-25",
        "friendly_name": "Erika Mustermann (60/123/4567) 2028-11-25",
        "broker_number": "60/123/4567",
    },
    "reminder": {
        "name": "Erika Mustermann",
        "serial": "4f3a9c",
        "not_after": "2026-12-09T09:00:00+00:00",
        "broker_number": "60/123/4567",
        "days_left": 14,
        "stage_days": 14,
    },
    "email_tan": {"name": "Erika Mustermann"},
    "activation": {"name": "Erika Mustermann", "broker_number": "60/123/4567"},
    "email_change_confirm": {"name": "Erika Mustermann"},
    "email_change_notice": {"name": "Erika Mustermann", "new_email": "n***@example.test"},
    "password_reset_link": {"name": "Erika Mustermann", "valid_minutes": 30},
    "password_reset_notice": {"name": "Erika Mustermann"},
    "second_factor_reset_notice": {"name": "Erika Mustermann"},
    "twofa_setup_code": {"name": "Erika Mustermann", "valid_minutes": 15},
    "generic": {"subject": "Wartung am Samstag", "body": "Erster Absatz.\n\nZweiter Absatz."},
}
SECRETS = {
    "certificate_password": {"password": "tiger-lamp-7731-orbit"},
    "email_tan": {"tan": "BCSWTE"},
    "activation": {"link": "https://portal.example.test/_gateway/activate?token=abc"},
    "email_change_confirm": {
        "link": "https://portal.example.test/_gateway/account/email/confirm/abc"
    },
    "password_reset_link": {"link": "https://portal.example.test/_gateway/password/reset/abc"},
    "twofa_setup_code": {"code": "402913"},
}
# One phrase per locale that only that language's version of each template contains.
MARKERS = {
    "de": {
        "certificate_password": "Passwort: tiger-lamp-7731-orbit",
        "reminder": "Gültig bis: 09.12.2026, 10:00 MEZ (noch 14 Tage)",
        "email_tan": "nur für 15 Minuten gültig",
        "activation": "7 Tage gültig",
        "email_change_confirm": "24 Stunden gültig",
        "email_change_notice": "auf n***@example.test",
        "password_reset_link": "30 Minuten gültig",
        "password_reset_notice": "Alle anderen Anmeldungen wurden beendet",
        "second_factor_reset_notice": "Ihre Maklerbetreuung hat soeben die Zwei-Faktor-Anmeldung",
        "twofa_setup_code": "Ihr Code: 402913",
        "generic": "Mit freundlichen Grüßen",
    },
    "en": {
        "certificate_password": "Password: tiger-lamp-7731-orbit",
        "reminder": "Valid until: 9 December 2026, 10:00 CET (14 days left)",
        "email_tan": "valid for 15 minutes only",
        "activation": "valid for 7 days",
        "email_change_confirm": "valid for 24 hours",
        "email_change_notice": "to n***@example.test",
        "password_reset_link": "valid for 30 minutes",
        "password_reset_notice": "All other sign-ins were ended",
        "second_factor_reset_notice": "support has just reset the two-factor sign-in",
        "twofa_setup_code": "Your code: 402913",
        "generic": "Kind regards",
    },
    "nl": {
        "certificate_password": "Wachtwoord: tiger-lamp-7731-orbit",
        "reminder": "Geldig tot: 9 december 2026, 10:00 CET (nog 14 dagen)",
        "email_tan": "slechts 15 minuten geldig",
        "activation": "7 dagen geldig",
        "email_change_confirm": "24 uur geldig",
        "email_change_notice": "naar n***@example.test",
        "password_reset_link": "30 minuten geldig",
        "password_reset_notice": "Alle andere aanmeldingen zijn beëindigd",
        "second_factor_reset_notice": "heeft zojuist de tweefactorauthenticatie",
        "twofa_setup_code": "Uw code: 402913",
        "generic": "Met vriendelijke groet",
    },
}


def test_every_template_is_covered_here() -> None:
    assert set(CONTEXTS) == set(TEMPLATES)


@pytest.mark.parametrize("locale", ["de", "en", "nl"])
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_each_template_renders_text_and_html_in_each_locale(template: str, locale: str) -> None:
    r = MailRenderer(public_url=PUBLIC_URL).render(
        template=template,
        locale=locale,
        context=CONTEXTS[template],
        secrets=SECRETS.get(template, {}),
    )
    assert r.locale == locale
    assert r.subject and "\n" not in r.subject
    assert MARKERS[locale][template] in r.text
    assert r.html.lstrip().startswith("<!DOCTYPE html>")
    assert f'<html lang="{locale}">' in r.html
    for other, phrases in MARKERS.items():
        if other != locale:
            assert phrases[template] not in r.text, f"{other} text leaked into {locale}"


def test_german_is_the_default_and_unknown_locales_fall_back_to_it() -> None:
    renderer = MailRenderer(public_url=PUBLIC_URL)
    for locale in (None, "", "fr", "xx-YY"):
        r = renderer.render(template="email_tan", locale=locale, context={}, secrets={"tan": "X"})
        assert r.locale == "de"
        assert "Ihre TAN: X" in r.text
    assert pick_locale("de-AT") == "de"
    assert pick_locale("EN_gb") == "en"
    assert pick_locale("nl") == "nl"


def test_password_mail_says_the_file_comes_separately_and_how_to_import() -> None:
    r = MailRenderer(public_url=PUBLIC_URL).render(
        template="certificate_password",
        locale="de",
        context=CONTEXTS["certificate_password"],
        secrets=SECRETS["certificate_password"],
    )
    assert "separat heruntergeladen" in r.text
    assert "Aktueller Benutzer" in r.text  # the import wizard step (seed 000)
    assert "tiger-lamp-7731-orbit" in r.html
    assert "60/123/4567" in r.text and "4f3a9c" in r.text and "25.11.2028" in r.text


def test_reminder_links_to_the_account_page() -> None:
    r = MailRenderer(public_url=PUBLIC_URL + "/").render(
        template="reminder", locale="en", context=CONTEXTS["reminder"], secrets={}
    )
    assert f"{PUBLIC_URL}/_gateway/account" in r.text
    assert f'href="{PUBLIC_URL}/_gateway/account"' in r.html
    assert "9 December 2026" in r.subject


def test_activation_link_can_be_built_from_a_bare_token() -> None:
    r = MailRenderer(public_url=PUBLIC_URL).render(
        template="activation", locale="de", context={"name": "E"}, secrets={"token": "a b/c"}
    )
    assert f"{PUBLIC_URL}/_gateway/activate/a%20b%2Fc" in r.text


def test_html_escapes_values_text_does_not() -> None:
    r = MailRenderer(public_url=PUBLIC_URL).render(
        template="email_tan",
        locale="de",
        context={"name": "<script>alert(1)</script> & Co"},
        secrets={"tan": "X"},
    )
    assert "<script>" not in r.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in r.html
    assert "<script>alert(1)</script> & Co" in r.text


def test_subject_cannot_carry_a_header_line_break() -> None:
    r = MailRenderer(public_url=PUBLIC_URL).render(
        template="generic",
        locale="de",
        context={"subject": "Hallo\r\nBcc: victim@example.org", "body": "x"},
        secrets={},
    )
    assert "\n" not in r.subject and "\r" not in r.subject


def test_unknown_template_is_a_clear_error() -> None:
    with pytest.raises(UnknownTemplate, match=r"unknown mail template 'nope'.*known templates"):
        MailRenderer(public_url=PUBLIC_URL).render(
            template="nope", locale="de", context={}, secrets={}
        )


@pytest.mark.parametrize(
    ("template", "context", "secrets", "missing"),
    [
        ("certificate_password", CONTEXTS["certificate_password"], {}, "secret password"),
        ("email_tan", {}, {}, "secret tan"),
        ("reminder", {"name": "E", "serial": "1"}, {}, "not_after"),
        ("activation", {"name": "E"}, {}, "link"),
        ("reminder", {**CONTEXTS["reminder"], "not_after": "not a date"}, {}, "wrong form"),
        (
            "reminder",
            {k: v for k, v in CONTEXTS["reminder"].items() if k != "days_left"},
            {},
            "days_left",
        ),
    ],
)
def test_missing_values_are_named(
    template: str, context: dict[str, object], secrets: dict[str, str], missing: str
) -> None:
    with pytest.raises(MissingMailValue, match=missing):
        MailRenderer(public_url=PUBLIC_URL).render(
            template=template, locale="de", context=context, secrets=secrets
        )


def test_masked_rendering_never_contains_a_secret() -> None:
    r = MailRenderer(public_url=PUBLIC_URL).render_masked(
        template="certificate_password", locale="de", context=CONTEXTS["certificate_password"]
    )
    assert SECRET_MASK in r.text


def test_dates_per_locale() -> None:
    d = datetime(2026, 3, 5, 22, 0, tzinfo=UTC)  # 23:00 in Berlin, still 5 March
    assert format_date(d, "de") == "05.03.2026"
    assert format_date(d, "en") == "5 March 2026"
    assert format_date(d, "nl") == "5 maart 2026"
    late = datetime(2026, 3, 5, 23, 30, tzinfo=UTC)  # 00:30 on 6 March in Berlin
    assert format_date(late, "de") == "06.03.2026"
    assert format_date(late, "de", ZoneInfo("Europe/London")) == "05.03.2026"
    assert format_date("2026-03-05", "de") == "05.03.2026"
    assert format_datetime(late, "de") == "06.03.2026, 00:30 MEZ"
    assert format_datetime(datetime(2026, 7, 1, 8, 0, tzinfo=UTC), "nl") == (
        "1 juli 2026, 10:00 CEST"
    )
    with pytest.raises(ValueError):
        format_date("5.3.2026", "de")


HYPHENS_NOTE = {
    "de": "Die Bindestriche gehören zum Passwort",
    "en": "The hyphens are part of the password",
    "nl": "De streepjes horen bij het wachtwoord",
}


@pytest.mark.parametrize("locale", ["de", "en", "nl"])
def test_password_mail_says_the_hyphens_are_part_of_the_password(locale: str) -> None:
    r = MailRenderer(public_url=PUBLIC_URL).render(
        template="certificate_password",
        locale=locale,
        context=CONTEXTS["certificate_password"],
        secrets=SECRETS["certificate_password"],
    )
    assert HYPHENS_NOTE[locale] in r.text and HYPHENS_NOTE[locale] in r.html


@pytest.mark.parametrize("locale", ["de", "en", "nl"])
def test_two_password_mails_of_one_day_have_different_subjects(locale: str) -> None:
    """Two certificates issued the same day expire the same day; the friendly name ends with
    the start of the serial (ca.friendly_name), so the subject tells the broker which mail
    is which file, naming the serial once."""
    renderer = MailRenderer(public_url=PUBLIC_URL)
    subjects = {
        renderer.render_masked(
            template="certificate_password",
            locale=locale,
            context={
                **CONTEXTS["certificate_password"],
                "serial": serial,
                "friendly_name": f"Erika Muster (60/123/4567) 2028-11-25 #{serial[:8]}",
            },
        ).subject
        for serial in ("4f3a9c0e11", "7b21d5aa02")
    }
    assert len(subjects) == 2
    assert all(s.count("4f3a9c0e") + s.count("7b21d5aa") == 1 for s in subjects)


def test_the_support_team_has_one_name_in_german_mails_and_pages() -> None:
    """'Maklerbetreuung' (the team, as the mails sign) everywhere; pages said 'Maklerbetreuer'."""
    from tests.conftest import REPO

    texts = [*(REPO / "renewal" / "_templates" / "de").glob("*")]
    texts += [p for p in (REPO / "gateway").rglob("*.json") if p.parent.name == "de"]
    assert texts
    stray = [str(p.relative_to(REPO)) for p in texts if "Maklerbetreuer" in p.read_text()]
    assert stray == []


@pytest.mark.parametrize(
    ("locale", "days", "stage", "subject"),
    [
        ("de", 59, 60, "Ihr Zertifikat läuft am 31.01.2027 ab – bitte erneuern"),  # noqa: RUF001 - the subjects use an en dash
        ("de", 14, 14, "Noch 14 Tage: Ihr Zertifikat läuft am 31.01.2027 ab"),
        ("de", 1, 14, "Noch 1 Tag: Ihr Zertifikat läuft am 31.01.2027 ab"),
        ("de", 3, 3, "Dringend: Ihr Zertifikat läuft in 3 Tagen ab – jetzt erneuern"),  # noqa: RUF001 - the subjects use an en dash
        ("de", 1, 3, "Dringend: Ihr Zertifikat läuft in 1 Tag ab – jetzt erneuern"),  # noqa: RUF001 - the subjects use an en dash
        ("de", 0, 3, "Dringend: Ihr Zertifikat läuft heute ab – jetzt erneuern"),  # noqa: RUF001 - the subjects use an en dash
        ("en", 59, 60, "Your certificate expires on 31 January 2027 – please renew it"),  # noqa: RUF001 - the subjects use an en dash
        ("en", 14, 14, "14 days left: your certificate expires on 31 January 2027"),
        ("en", 1, 3, "Urgent: your certificate expires in 1 day – renew it now"),  # noqa: RUF001 - the subjects use an en dash
        ("en", 2, 3, "Urgent: your certificate expires in 2 days – renew it now"),  # noqa: RUF001 - the subjects use an en dash
        ("nl", 14, 14, "Nog 14 dagen: uw certificaat verloopt op 31 januari 2027"),
        ("nl", 1, 3, "Dringend: uw certificaat verloopt over 1 dag – vernieuw het nu"),  # noqa: RUF001 - the subjects use an en dash
        ("nl", 3, 3, "Dringend: uw certificaat verloopt over 3 dagen – vernieuw het nu"),  # noqa: RUF001 - the subjects use an en dash
    ],
)
def test_reminders_grow_more_urgent_with_plural_forms(
    locale: str, days: int, stage: int, subject: str
) -> None:
    context = {
        **CONTEXTS["reminder"],
        "not_after": "2027-01-31T09:00:00+00:00",
        "days_left": days,
        "stage_days": stage,
    }
    mail = MailRenderer(public_url=PUBLIC_URL).render(
        template="reminder", locale=locale, context=context, secrets={}
    )
    assert mail.subject == subject
    left = {
        "de": "Tag)" if days == 1 else "Tage)",
        "en": "left)",
        "nl": "dag)" if days == 1 else "dagen)",
    }
    assert left[locale] in mail.text
    # What happens at expiry, and the import steps for every system the account page names.
    assert "10:00" in mail.text.split("Windows")[-1]
    for system in ("Windows", "macOS", "Firefox"):
        assert system in mail.text and system in mail.html


@pytest.mark.parametrize(
    ("locale", "by_head_user", "by_self"),
    [
        ("de", "Nick Groot, Hauptbenutzer Ihres Büros, hat", "Sie haben im Maklerportal"),
        ("en", "Nick Groot, the head user of your office, entered", "you entered this address"),
        ("nl", "Nick Groot, hoofdgebruiker van uw kantoor, heeft", "u heeft dit adres"),
    ],
)
def test_email_change_link_names_the_head_user_who_asked(
    locale: str, by_head_user: str, by_self: str
) -> None:
    """Issue 13: a head user changes an employee's address; the mail to the new address
    says who entered it instead of "you entered"."""
    renderer = MailRenderer(public_url=PUBLIC_URL)
    context = {**CONTEXTS["email_change_confirm"], "requested_by": "Nick <Groot>"}
    mail = renderer.render(
        template="email_change_confirm",
        locale=locale,
        context=context,
        secrets=SECRETS["email_change_confirm"],
    )
    assert by_head_user.replace("Nick Groot", "Nick <Groot>") in mail.text
    assert by_self not in mail.text
    assert "Nick &lt;Groot&gt;" in mail.html and "<Groot>" not in mail.html
    plain = renderer.render(
        template="email_change_confirm",
        locale=locale,
        context=CONTEXTS["email_change_confirm"],
        secrets=SECRETS["email_change_confirm"],
    )
    assert by_self in plain.text
