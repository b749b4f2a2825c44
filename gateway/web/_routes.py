"""The route table of the gateway's own pages, in one place, and the extension that adds
the login and account pages to an app.

Every page module owns its handlers; this module owns which path and method reach which
handler. aiohttp matches in registration order: the caller registers the upstream
catch-all after these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.orm import Session, sessionmaker

from ca import FirmSettings, SignerClient
from gateway._state import SETTINGS
from gateway.logins._certificates import (
    Authority,
)
from gateway.logins._passkeys import relying_party
from gateway.logins._settings import LoginSettings
from gateway.web import _account as account
from gateway.web import _broker_login as broker
from gateway.web import _core_pages as core
from gateway.web import _email_change as email_change
from gateway.web import _endpoints as endpoints
from gateway.web import _firm_offices as firm_offices
from gateway.web import _firm_users as firm_users
from gateway.web import _language as language
from gateway.web import _login as login
from gateway.web import _password_reset as password_reset
from gateway.web import _prompt as prompt
from gateway.web import _twofa_setup as twofa_setup
from gateway.web._banner import account_nav, expiry_banner, logins_middleware
from gateway.web._common import LOGINS, LoginContext, P
from gateway.web._firm import OFFICES, USERS
from gateway.web._pages import JINJA
from store import OUTBOX_PURPOSE, Level, Sealer

STATIC_DIR = Path(__file__).parent / "static"


def ca_authority_factory(
    *,
    ca_settings: Any,
    secret_key: bytes,
    clock: Callable[[], datetime],
    keyless: bool = False,
) -> Callable[[sessionmaker[Session]], Authority] | None:
    """``make_authority`` for :func:`setup_logins` from ``config.ca``.

    ``keyless`` (a signer is configured): an authority that never opens a CA key, for
    revocations and supersession only; downloads go to the signer. Otherwise ``None``
    without a CA passphrase (the gateway then offers no certificate download)."""
    if not keyless and not getattr(ca_settings, "passphrase", ""):
        return None

    def make(factory: sessionmaker[Session]) -> Authority:
        from ca import CertificateAuthority

        authority: Authority = CertificateAuthority(
            settings=ca_settings,
            sessions=factory,
            clock=clock,
            outbox_sealer=Sealer(secret=secret_key, purpose=OUTBOX_PURPOSE),
            keyless=keyless,
        )
        return authority

    return make


def setup_logins(
    *,
    settings: LoginSettings,
    secret_key: bytes,
    make_authority: Callable[[sessionmaker[Session]], Authority] | None = None,
    signer: SignerClient | None = None,
    firms: FirmSettings | None = None,
) -> Callable[[web.Application], None]:
    """The ``create_app`` extension that adds the login and account pages.

    Args:
        settings: the ``[logins]`` section.
        secret_key: the application secret (seals TOTP secrets and mail secrets, keys TANs).
        make_authority: builds the ``ca.CertificateAuthority`` from the app's session factory
            (e.g. ``lambda f: CertificateAuthority(settings=config.ca, sessions=f,
            clock=clock, outbox_sealer=...)``); ``None``: no certificate downloads here.
        signer: the client of the signer (``brokergate ca serve``); when given, downloads
            are issued there and this process needs no CA key (pair it with a keyless
            ``make_authority``). The app closes it on cleanup.
        firms: the product catalogue (``config.firms``) of the head users' pages.
    """

    def setup(app: web.Application) -> None:
        from gateway.web._pages import LOGIN_OPTIONS, LoginOption

        app[LOGINS] = LoginContext(
            settings=settings,
            secret_key=secret_key,
            make_authority=make_authority,
            signer=signer,
            firms=firms or FirmSettings(),
            rp=relying_party(app[SETTINGS].public_url, settings.passkey_rp_name),
        )
        if signer is not None:

            async def close_signer(app: web.Application) -> None:
                await signer.close()

            app.on_cleanup.append(close_signer)
        jinja = app[JINJA]
        jinja.globals["expiry_banner"] = expiry_banner
        jinja.globals["account_nav"] = account_nav
        # The core's 2FA and step-up pages link to the set-up when it is there (issue 14).
        jinja.globals["twofa_setup_url"] = twofa_setup.SETUP
        # Before the policy middleware (create_app's last): a certificate's first use is
        # noted also when the policy answers with a page of ours (the renewal reminder, a
        # step-up) instead of the portal.
        app.middlewares.insert(len(app.middlewares) - 1, logins_middleware())
        app[LOGIN_OPTIONS].extend(
            [
                LoginOption(label_key="logins.option.password", url=f"{P}/login/password"),
                LoginOption(label_key="logins.option.passkey", url=f"{P}/login/passkey"),
                # SECURITY: broker number + TAN proves the mailbox only: it never reaches
                # strong, so the step-up page for strong does not offer it (issue 14).
                LoginOption(
                    label_key="logins.option.broker",
                    url=f"{P}/login/broker",
                    reaches=Level.BASIC,
                ),
            ]
        )
        add_routes(app.router, LOGIN_ROUTES)

    return setup


Route = tuple[str, str, Handler]
"""(method, path, handler)."""

CORE_ROUTES: tuple[Route, ...] = (
    ("GET", f"{P}/login", core.login_page),
    ("GET", f"{P}/step-up", core.step_up_page),
    ("GET", f"{P}/certificate", core.certificate_page),
    ("POST", f"{P}/logout", core.logout_handler),
    ("POST", f"{P}/logout-everywhere", core.logout_everywhere_handler),
    ("POST", f"{P}/2fa/not-now", core.twofa_not_now_handler),
    ("POST", f"{P}/language", language.language_submit),
)
"""The core's pages: always there, with or without the login pages."""

_ACCOUNT = f"{P}/account"
LOGIN_ROUTES: tuple[Route, ...] = (
    # password (+ TOTP / recovery code / passkey), passkey alone, re-authentication
    ("GET", f"{P}/login/password", login.password_page),
    ("POST", f"{P}/login/password", login.password_submit),
    ("GET", f"{P}/login/second-factor", login.second_factor_page),
    ("POST", f"{P}/login/second-factor", login.second_factor_submit),
    ("GET", f"{P}/login/passkey", login.passkey_page),
    ("POST", f"{P}/login/passkey/options", login.passkey_options),
    ("POST", f"{P}/login/passkey/verify", login.passkey_verify),
    # "Passwort vergessen?" (issue 14, seeds 002/004): an access link by mail
    ("GET", password_reset.FORGOT, password_reset.forgot_page),
    ("POST", password_reset.FORGOT, password_reset.forgot_submit),
    ("GET", password_reset.RESET + "/{token}", password_reset.reset_page),
    ("POST", password_reset.RESET + "/{token}", password_reset.reset_submit),
    ("GET", password_reset.ACTIVATION_REQUEST, password_reset.activation_request_page),
    ("POST", password_reset.ACTIVATION_REQUEST, password_reset.activation_request_submit),
    ("GET", f"{P}/reauth", login.reauth_page),
    ("POST", f"{P}/reauth", login.reauth_submit),
    # broker number + TAN (seed 001), restricted session
    ("GET", f"{P}/login/broker", broker.broker_page),
    ("POST", f"{P}/login/broker", broker.broker_submit),
    ("GET", f"{P}/login/broker/tan", broker.tan_page),
    ("POST", f"{P}/login/broker/tan", broker.tan_submit),
    ("POST", f"{P}/login/broker/restricted", broker.restricted_submit),
    # the 2FA prompt after a password login (seed 000), account activation (seed 003)
    ("GET", f"{P}/2fa/prompt", prompt.twofa_prompt_page),
    ("POST", f"{P}/2fa/prompt", prompt.twofa_prompt_submit),
    # the 2FA set-up in three steps (issue 14, seed 000)
    ("GET", twofa_setup.SETUP, twofa_setup.setup_page),
    ("POST", twofa_setup.SETUP, twofa_setup.setup_submit),
    ("GET", twofa_setup.METHOD, twofa_setup.method_page),
    ("GET", twofa_setup.DONE, twofa_setup.done_page),
    ("GET", f"{P}/activate/{{token}}", prompt.activation_page),
    ("POST", f"{P}/activate/{{token}}", prompt.activation_submit),
    # "My account" (seeds 000, 004)
    ("GET", _ACCOUNT, account.account_get),
    ("POST", f"{_ACCOUNT}/certificate/download", account.download_submit),
    ("POST", f"{_ACCOUNT}/certificate/revoke", account.revoke_submit),
    ("GET", f"{_ACCOUNT}/totp", account.totp_page),
    ("POST", f"{_ACCOUNT}/totp", account.totp_submit),
    ("POST", f"{_ACCOUNT}/totp/reset", account.totp_reset_submit),
    ("POST", f"{_ACCOUNT}/recovery-codes", account.recovery_codes_submit),
    ("POST", f"{_ACCOUNT}/passkeys/options", account.passkey_options),
    ("POST", f"{_ACCOUNT}/passkeys/register", account.passkey_register),
    ("POST", f"{_ACCOUNT}/passkeys/remove", account.passkey_remove_submit),
    ("POST", f"{_ACCOUNT}/devices/forget", account.devices_forget_submit),
    ("POST", f"{_ACCOUNT}/password", account.password_submit),
    # the email change (issue 4: needs a fresh strong login)
    ("GET", email_change.EMAIL, email_change.email_page),
    ("POST", email_change.EMAIL, email_change.email_submit),
    ("GET", email_change.CONFIRM + "/{token}", email_change.confirm_page),
    ("POST", email_change.CONFIRM + "/{token}", email_change.confirm_submit),
    # the head users' pages (issue 13, seed 003): users and sub-offices of their firm
    ("GET", USERS, firm_users.users_page),
    ("GET", f"{USERS}/new", firm_users.user_new_page),
    ("POST", f"{USERS}/new", firm_users.user_new_submit),
    ("GET", f"{USERS}/{{user_id}}", firm_users.user_edit_page),
    ("POST", f"{USERS}/{{user_id}}", firm_users.user_edit_submit),
    ("POST", f"{USERS}/{{user_id}}/deactivate", firm_users.user_deactivate_submit),
    ("POST", f"{USERS}/{{user_id}}/reactivate", firm_users.user_reactivate_submit),
    ("POST", f"{USERS}/{{user_id}}/activation", firm_users.user_activation_submit),
    ("GET", OFFICES, firm_offices.offices_page),
    ("GET", f"{OFFICES}/new", firm_offices.office_new_page),
    ("POST", f"{OFFICES}/new", firm_offices.office_new_submit),
    ("GET", f"{OFFICES}/{{office_id}}", firm_offices.office_edit_page),
    ("POST", f"{OFFICES}/{{office_id}}", firm_offices.office_edit_submit),
    (
        "POST",
        f"{OFFICES}/{{office_id}}/deactivate",
        firm_offices.office_deactivate_submit,
    ),
    (
        "POST",
        f"{OFFICES}/{{office_id}}/reactivate",
        firm_offices.office_reactivate_submit,
    ),
    ("POST", f"{OFFICES}/{{office_id}}/delete", firm_offices.office_delete_submit),
)
"""The fallback logins and the account pages (added by :func:`setup_logins`)."""


def add_routes(router: web.UrlDispatcher, routes: Sequence[Route]) -> None:
    """Register ``routes`` in their order."""
    for method, path, handler in routes:
        router.add_route(method, path, handler)


def add_core_routes(router: web.UrlDispatcher) -> None:
    """The machine endpoints, the static files and the core pages (see :data:`CORE_ROUTES`).

    The machine endpoints and the static files are named: the auth middleware lets them
    through without a session (``UNAUTHENTICATED_ROUTES``).
    """
    router.add_get("/healthz", endpoints.healthz, name="healthz")
    router.add_get("/.well-known/jwks.json", endpoints.jwks, name="jwks")
    router.add_get(f"{P}/crl/{{generation:[0-9]{{1,6}}}}.crl", endpoints.crl, name="crl")
    router.add_static(f"{P}/static/", STATIC_DIR, append_version=False, name="gateway_static")
    add_routes(router, CORE_ROUTES)
