"""How the load names what a client got (tests/faults/_load.py ``classify_page``): a form
page with an error says which one, so a failing fault test explains itself."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO
from tests.faults._load import classify_page


def _catalogue(language: str, name: str) -> dict[str, str]:
    path = REPO / "gateway" / "web" / "locales" / language / name
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("language", ["de", "en", "nl"])
def test_a_form_alert_is_named_by_its_key(language: str) -> None:
    text = _catalogue(language, "logins.json")["error.too_soon"].replace("{until}", "22:10")
    body = f'<h1>Login</h1><div class="alert" role="alert" id="form-error">{text}</div>'
    assert classify_page(401, body, language, language) == "status:401:alert:too_soon"


def test_an_unknown_alert_and_a_page_without_one() -> None:
    assert classify_page(401, '<div role="alert">something else</div>', "de", "de") == (
        "status:401:alert:?"
    )
    assert classify_page(401, "<h1>Anmeldung</h1>", "de", "de") == "status:401"
    # a success page's alert is nobody's failure
    assert classify_page(200, '<div role="alert">x</div>', "de", "de") == "status:200"


def test_the_fault_pages_are_still_recognised() -> None:
    title = _catalogue("en", "gateway.json")["error.store_unavailable.title"]
    assert classify_page(503, f"<h1>{title}</h1>", "en", "en") == "page:store_unavailable"
