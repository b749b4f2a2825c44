"""The full gateway behind an L4 balancer that sends PROXY headers (``proxy_protocol``).

Real TLS on loopback, broker certificates from our CA, the real echo upstream: the
certificate single sign-on works unchanged over such connections, and the upstream and
the session records see the client's address, not the balancer's.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from gateway import RouteRule
from store import Level, WebSession
from tests.gateway.conftest import Brokers, ServerTLS
from tests.gateway.helpers import client_context
from tests.gateway_proxy._proxy_client import (
    ClosedBeforeTLS,
    proxied_request,
    v1_header,
    v2_header,
    v2_local,
)

BEHIND_BALANCER: dict[str, Any] = {
    "proxy_protocol": True,
    "trusted_proxies": ("127.0.0.1/32",),  # where the "balancer" (this test) connects from
    "routes": (RouteRule(prefix="/antrag", level=Level.STRONG),),
}


def _port(gw: Any) -> int:
    return int(gw.url.rsplit(":", 1)[1])


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (v2_header("203.0.113.7", 50123), "203.0.113.7"),
        (v1_header("2001:db8::9", 1), "2001:db8::9"),
    ],
    ids=["v2-ipv4", "v1-ipv6"],
)
async def test_certificate_single_sign_on_behind_the_balancer(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, header: bytes, client: str
) -> None:
    gw = await start_gateway(**BEHIND_BALANCER)
    user = brokers.user(email="erika@example.org", broker="60/123/4567")
    cert = brokers.issue(user)
    response = await proxied_request(
        _port(gw),
        header,
        context=client_context(server_tls.ca, cert),
        target="/antrag/neu",
        headers=[("X-Forwarded-For", "10.9.9.9")],  # SECURITY: the client's, not believed
    )
    assert response.status == 200, response.body  # no page in between: single sign-on
    seen = response.echoed()
    assert seen["x-brokergate-method"] == ["certificate"]
    assert seen["x-brokergate-level"] == ["strong"]
    assert seen["x-brokergate-user-id"] == [str(user)]
    assert seen["x-brokergate-cert-serial"] == [cert.serial]
    assert seen["x-forwarded-for"] == [client]
    # The session the certificate opened records the client (client_address), not 127.0.0.1.
    with brokers.sessions() as db:
        (session,) = db.scalars(select(WebSession)).all()
    assert session.client_addr == client and session.user_id == user


async def test_no_certificate_behind_the_balancer_gets_the_login_page(
    start_gateway: Any, server_tls: ServerTLS
) -> None:
    gw = await start_gateway(**BEHIND_BALANCER)
    response = await proxied_request(
        _port(gw),
        v2_header("203.0.113.7", 1),
        context=client_context(server_tls.ca),
        target="/antrag/neu",
    )
    assert response.status == 401 and b"<h1>Anmelden</h1>" in response.body


async def test_health_check_with_local_and_a_direct_client(
    start_gateway: Any, server_tls: ServerTLS
) -> None:
    """HAProxy's health check sends LOCAL; a client that skips the balancer is refused."""
    gw = await start_gateway(**BEHIND_BALANCER)
    response = await proxied_request(
        _port(gw), v2_local(), context=client_context(server_tls.ca), target="/healthz"
    )
    assert response.status == 200
    with pytest.raises(ClosedBeforeTLS):  # TLS straight away, as a browser would
        await proxied_request(_port(gw), b"", context=client_context(server_tls.ca), coalesce=False)
