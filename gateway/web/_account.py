""" "My account" (seeds 000, 004): certificate status, download (= renewal) and revocation,
authenticator app and passkeys, remembered browsers, password, last login, logout."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from ca import CASettings
from gateway.auth._middleware import complete_login, request_state, require_csrf
from gateway.logins._activation import change_password
from gateway.logins._certificates import (
    certificate_overview,
    download_certificate,
    download_through_signer,
    revoke_own_certificate,
)
from gateway.logins._devices import list_devices, revoke_devices
from gateway.logins._errors import DownloadRefused, LoginError, SignerUnreachable
from gateway.logins._history import METHOD_TOTP
from gateway.logins._passkeys import (
    finish_registration,
    list_passkeys,
    registration_options,
    remove_passkey,
)
from gateway.logins._totp import (
    begin_enrolment,
    confirm_enrolment,
    pending_enrolment,
    remaining_recovery_codes,
    replace_recovery_codes,
    reset_totp,
)
from gateway.web._common import (
    CHALLENGE_KEY_ACCOUNT,
    P,
    client_addr,
    ctx,
    email_only_refusal,
    error_text,
    factory,
    form_text,
    json_body,
    next_of,
    now_of,
    read_form,
    refresh_session,
    require_fresh,
    require_user,
    see_other,
    show,
    update_session_data,
)
from gateway.web._formatting import date_for, duration_for, time_for
from gateway.web._twofa_setup import consume_setup, done_url, setup_needed
from store import Level, User, record_audit, transaction

ACCOUNT = f"{P}/account"
_FILENAME_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _load_account(request: web.Request, user_id: int) -> dict[str, Any]:
    now = now_of(request)
    c = ctx(request)
    authority = c.authority(factory(request))
    if authority is not None:
        # Renewed certificates: the old one goes as soon as the new one has been used.
        with transaction(factory(request)) as session:
            authority.supersede_replaced(session=session, user_id=user_id)
    with transaction(factory(request)) as session:
        user = session.get(User, user_id)
        assert user is not None
        certificates = certificate_overview(session, user_id, now)[:5]
        return {
            "user": {
                "name": user.name,
                "email": user.email,
                "broker_number": user.organisation.broker_number,
                "has_password": user.password_hash is not None,
                "totp_active": user.totp_confirmed_at is not None,
                "totp_since": user.totp_confirmed_at,
                "previous_login_at": user.previous_login_at,
                "previous_login_method": user.previous_login_method,
                "last_login_at": user.last_login_at,
                "last_login_method": user.last_login_method,
            },
            "certificates": certificates,
            "current": next((v for v in certificates if v.status == "valid"), None),
            "recovery_left": remaining_recovery_codes(session, user_id),
            "passkeys": [
                {
                    "id": p.id,
                    "name": p.name,
                    "created_at": p.created_at,
                    "last_used_at": p.last_used_at,
                }
                for p in list_passkeys(session, user_id)
            ],
            "devices": len(list_devices(session, user_id, now)),
            "can_download": authority is not None,
        }


def _grace_days(request: web.Request) -> int:
    authority = ctx(request).authority(factory(request))
    grace = authority.superseded_grace if authority else CASettings().superseded_grace
    return grace.days


async def account_page(
    request: web.Request, *, error: str | None = None, notice: str | None = None, status: int = 200
) -> web.Response:
    user_id = require_user(request, level=Level.BASIC)
    data = await asyncio.to_thread(_load_account, request, user_id)
    identity = request_state(request).identity
    assert identity is not None
    return show(
        request,
        "account.html",
        {
            **data,
            "error": error,
            "notice": notice,
            "session_level": identity.level.value,
            "session_method": identity.method,
            "fmt_time": lambda v: time_for(request, v),
            "fmt_date": lambda v: date_for(request, v),
            "fresh_within": duration_for(request, ctx(request).settings.fresh_login),
            "settings": ctx(request).settings,
            "superseded_grace_days": _grace_days(request),
        },
        status=status,
        script=True,
    )


async def account_get(request: web.Request) -> web.StreamResponse:
    notice = request.query.get("done")
    return await account_page(request, notice=notice if notice in _NOTICES else None)


_NOTICES = {
    "revoked",
    "totp_reset",
    "passkey_added",
    "passkey_removed",
    "devices_forgotten",
    "password_changed",
    "totp_active",
}


# --- certificate


async def download_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    require_user(request, level=Level.BASIC)
    if (refused := email_only_refusal(request, back=f"{ACCOUNT}#certificate")) is not None:
        return refused
    user_id = require_fresh(request, level=Level.BASIC, back=f"{ACCOUNT}#certificate")
    c = ctx(request)
    issued: Any
    if c.signer is not None:
        session = request_state(request).session
        try:
            if session is None:  # the signer issues only because of a stored session
                raise DownloadRefused("no session")
            issued = await download_through_signer(
                c.signer, user_id=user_id, session_id=session.id, client_addr=client_addr(request)
            )
        except SignerUnreachable as exc:
            # Signer down: say so clearly; nothing was issued, everything else works.
            return await account_page(request, error=error_text(request, exc), status=503)
        except DownloadRefused as exc:
            return await account_page(request, error=error_text(request, exc), status=403)
        except LoginError as exc:
            return await account_page(request, error=error_text(request, exc), status=429)
        return _pkcs12_response(request, issued)
    authority = c.authority(factory(request))
    if authority is None:
        return await account_page(
            request, error=error_text(request, LoginError("no CA")), status=503
        )
    try:
        issued = await asyncio.to_thread(
            download_certificate,
            factory(request),
            authority=authority,
            user_id=user_id,
            settings=c.settings,
            client_addr=client_addr(request),
            now=now_of(request),
        )
    except LoginError as exc:
        return await account_page(request, error=error_text(request, exc), status=429)
    return _pkcs12_response(request, issued)


def _pkcs12_response(request: web.Request, issued: Any) -> web.Response:
    identity = request_state(request).identity
    assert identity is not None  # require_fresh let us through
    broker = _FILENAME_SAFE.sub("-", identity.broker_number)
    filename = f"broker-certificate-{broker}-{issued.not_after:%Y-%m-%d}.p12"
    return web.Response(
        body=issued.pkcs12,
        headers={
            "Content-Type": "application/x-pkcs12",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def revoke_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    user_id = require_user(request, level=Level.BASIC)
    authority = ctx(request).authority(factory(request))
    try:
        certificate_id = int(form_text(form, "certificate", 20))
    except ValueError:
        raise web.HTTPBadRequest(text="certificate id expected") from None
    if authority is None:
        return await account_page(
            request, error=error_text(request, LoginError("no CA")), status=503
        )
    try:
        await asyncio.to_thread(
            revoke_own_certificate,
            factory(request),
            authority=authority,
            user_id=user_id,
            certificate_id=certificate_id,
            client_addr=client_addr(request),
            now=now_of(request),
        )
    except LoginError as exc:
        return await account_page(request, error=error_text(request, exc), status=400)
    return see_other(f"{ACCOUNT}?done=revoked#certificate")


# --- authenticator app (TOTP)


async def totp_page(request: web.Request) -> web.StreamResponse:
    require_user(request, level=Level.BASIC)
    if (refused := email_only_refusal(request, back=f"{P}/account/totp")) is not None:
        return refused
    user_id = require_fresh(request, level=Level.BASIC, back=request.path_qs)
    next_path = next_of(request.query)
    if (needed := await setup_needed(request, user_id, back=next_path)) is not None:
        return needed  # step 1 of the set-up first (issue 14)
    c = ctx(request)
    now = now_of(request)

    def enrolment() -> Any:
        found = pending_enrolment(
            factory(request), user_id=user_id, sealer=c.totp_sealer, issuer=c.settings.totp_issuer
        )
        if found is not None:
            return found
        return begin_enrolment(
            factory(request),
            user_id=user_id,
            sealer=c.totp_sealer,
            issuer=c.settings.totp_issuer,
            now=now,
        )

    try:
        data = await asyncio.to_thread(enrolment)
    except LoginError:
        return see_other(f"{ACCOUNT}#twofa")  # already active
    return show(request, "totp_setup.html", {"enrolment": data, "next": next_path})


async def totp_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    require_user(request, level=Level.BASIC)
    if (refused := email_only_refusal(request, back=f"{P}/account/totp")) is not None:
        return refused
    user_id = require_fresh(request, level=Level.BASIC, back=f"{P}/account/totp")
    if (needed := await setup_needed(request, user_id, back=next_of(form))) is not None:
        return needed
    c = ctx(request)
    try:
        codes = await asyncio.to_thread(
            confirm_enrolment,
            factory(request),
            user_id=user_id,
            code=form_text(form, "code", 16),
            sealer=c.totp_sealer,
            now=now_of(request),
        )
    except LoginError as exc:
        data = await asyncio.to_thread(
            pending_enrolment,
            factory(request),
            user_id=user_id,
            sealer=c.totp_sealer,
            issuer=c.settings.totp_issuer,
        )
        if data is None:
            return see_other(f"{P}/account/totp")
        return show(
            request,
            "totp_setup.html",
            {"enrolment": data, "next": next_of(form), "error": error_text(request, exc)},
            status=400,
        )
    await consume_setup(request)  # the next enrolment needs a new mailed code
    # The code just proved the second factor: the session becomes strong right away.
    await complete_login(request, user_id=user_id, level=Level.STRONG, method=METHOD_TOTP)
    return show(
        request, "recovery_codes.html", {"codes": codes, "next": done_url("totp", next_of(form))}
    )


async def totp_reset_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    require_user(request, level=Level.BASIC)
    if (refused := email_only_refusal(request, back=f"{ACCOUNT}#twofa")) is not None:
        return refused
    user_id = require_fresh(request, level=Level.STRONG, back=f"{ACCOUNT}#twofa")

    def run() -> None:
        with transaction(factory(request)) as session:
            reset_totp(session, user_id=user_id, actor=f"user:{user_id}", now=now_of(request))

    await asyncio.to_thread(run)
    return see_other(f"{ACCOUNT}?done=totp_reset#twofa")


async def recovery_codes_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    require_user(request, level=Level.BASIC)
    if (refused := email_only_refusal(request, back=f"{ACCOUNT}#twofa")) is not None:
        return refused
    user_id = require_fresh(request, level=Level.STRONG, back=f"{ACCOUNT}#twofa")

    def run() -> list[str]:
        with transaction(factory(request)) as session:
            user = session.get(User, user_id)
            if user is None or user.totp_confirmed_at is None:
                return []
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="totp.recovery_codes",
                now=now_of(request),
                user_id=user_id,
            )
            return replace_recovery_codes(session, user_id=user_id, now=now_of(request))

    codes = await asyncio.to_thread(run)
    if not codes:
        return see_other(f"{ACCOUNT}#twofa")
    return show(request, "recovery_codes.html", {"codes": codes, "next": ACCOUNT})


# --- passkeys


async def passkey_options(request: web.Request) -> web.StreamResponse:
    await json_body(request)
    require_user(request, level=Level.BASIC)
    if (
        refused := email_only_refusal(request, back=f"{ACCOUNT}#passkeys", as_json=True)
    ) is not None:
        return refused
    user_id = require_fresh(request, level=Level.BASIC, back=f"{ACCOUNT}#passkeys")
    if (needed := await setup_needed(request, user_id, back=ACCOUNT, as_json=True)) is not None:
        return needed
    ceremony = await asyncio.to_thread(
        registration_options, factory(request), user_id=user_id, rp=ctx(request).rp
    )
    await update_session_data(
        request,
        **{
            CHALLENGE_KEY_ACCOUNT: {
                "value": base64.b64encode(ceremony.challenge).decode(),
                "at": now_of(request).isoformat(),
            }
        },
    )
    return web.Response(text=ceremony.options_json, content_type="application/json")


async def passkey_register(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    require_user(request, level=Level.BASIC)
    if (
        refused := email_only_refusal(request, back=f"{ACCOUNT}#passkeys", as_json=True)
    ) is not None:
        return refused
    user_id = require_fresh(request, level=Level.BASIC, back=f"{ACCOUNT}#passkeys")
    if (needed := await setup_needed(request, user_id, back=ACCOUNT, as_json=True)) is not None:
        return needed
    await refresh_session(request)  # SECURITY: a challenge used on another replica is gone
    state = request_state(request)
    stored = state.session.data.get(CHALLENGE_KEY_ACCOUNT) if state.session else None
    await update_session_data(request, **{CHALLENGE_KEY_ACCOUNT: None})  # SECURITY: single use
    if not isinstance(stored, dict) or now_of(request) - datetime.fromisoformat(
        stored["at"]
    ) > timedelta(minutes=5):
        return web.json_response(
            {"error": error_text(request, LoginError("no challenge"))}, status=400
        )
    try:
        await asyncio.to_thread(
            finish_registration,
            factory(request),
            user_id=user_id,
            credential_json=json.dumps(body.get("credential")),
            challenge=base64.b64decode(stored["value"]),
            rp=ctx(request).rp,
            name=str(body.get("name") or "Passkey"),
            now=now_of(request),
        )
    except LoginError as exc:
        return web.json_response({"error": error_text(request, exc)}, status=400)
    await consume_setup(request)  # the next enrolment needs a new mailed code
    if body.get("flow") == "setup":
        return web.json_response({"redirect": done_url("passkey", next_of(body))})
    return web.json_response({"redirect": f"{ACCOUNT}?done=passkey_added#passkeys"})


async def passkey_remove_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    require_user(request, level=Level.BASIC)
    if (refused := email_only_refusal(request, back=f"{ACCOUNT}#passkeys")) is not None:
        return refused
    user_id = require_fresh(request, level=Level.STRONG, back=f"{ACCOUNT}#passkeys")
    try:
        passkey_id = int(form_text(form, "passkey", 20))
    except ValueError:
        raise web.HTTPBadRequest(text="passkey id expected") from None

    def run() -> None:
        with transaction(factory(request)) as session:
            remove_passkey(
                session,
                user_id=user_id,
                passkey_id=passkey_id,
                actor=f"user:{user_id}",
                now=now_of(request),
            )

    await asyncio.to_thread(run)
    return see_other(f"{ACCOUNT}?done=passkey_removed#passkeys")


# --- remembered browsers, password


async def devices_forget_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    user_id = require_user(request, level=Level.BASIC)

    def run() -> None:
        with transaction(factory(request)) as session:
            revoke_devices(session, user_id=user_id, actor=f"user:{user_id}", now=now_of(request))

    await asyncio.to_thread(run)
    return see_other(f"{ACCOUNT}?done=devices_forgotten#devices")


async def password_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    user_id = require_fresh(request, level=Level.BASIC, back=f"{ACCOUNT}#password")
    c = ctx(request)
    try:
        await asyncio.to_thread(
            change_password,
            factory(request),
            user_id=user_id,
            current=form_text(form, "current"),
            new=form_text(form, "new"),
            repeat=form_text(form, "repeat"),
            settings=c.settings,
            now=now_of(request),
        )
    except LoginError as exc:
        return await account_page(request, error=error_text(request, exc), status=400)
    return see_other(f"{ACCOUNT}?done=password_changed#password")
