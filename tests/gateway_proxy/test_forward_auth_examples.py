"""deploy/traefik: the documented Traefik example parses and keeps its security promises.

No Traefik binary runs here (none is installable on this machine); this checks the files
themselves. The decision endpoint's answer to Traefik's request shape is tested in
test_forward_auth.py (``test_traefik_request_shape_is_answered_within_auth_response_headers``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gateway.proxy._identity_headers import (
    ASSERTION,
    BROKER_NUMBER,
    CERT_DAYS_LEFT,
    CERT_NOT_AFTER,
    CERT_SERIAL,
    EMAIL,
    HEAD_OFFICE_NUMBER,
    LEVEL,
    METHOD,
    OFFICE_NUMBER,
    RENEWAL_URL,
    RIGHTS,
    ROLE,
    USER_ID,
)

TRAEFIK = Path(__file__).resolve().parents[2] / "deploy" / "traefik"
IDENTITY = {
    BROKER_NUMBER,
    USER_ID,
    EMAIL,
    LEVEL,
    METHOD,
    CERT_SERIAL,
    CERT_NOT_AFTER,
    CERT_DAYS_LEFT,
    RENEWAL_URL,
    OFFICE_NUMBER,
    HEAD_OFFICE_NUMBER,
    ROLE,
    RIGHTS,
    ASSERTION,
}


def traefik_dynamic() -> dict[str, Any]:
    with (TRAEFIK / "dynamic.toml").open("rb") as file:
        return tomllib.load(file)


def test_traefik_static_config_parses_and_loads_the_dynamic_file() -> None:
    with (TRAEFIK / "traefik.toml").open("rb") as file:
        static = tomllib.load(file)
    assert static["providers"]["file"]["filename"].endswith("dynamic.toml")
    assert "websecure" in static["entryPoints"]


def test_traefik_forward_auth_copies_every_identity_header_and_trusts_no_client() -> None:
    middlewares = traefik_dynamic()["http"]["middlewares"]
    auth = middlewares["brokergate-auth"]["forwardAuth"]
    assert auth["address"].endswith("/_gateway/auth")
    assert auth["trustForwardHeader"] is False
    assert set(auth["authResponseHeaders"]) == IDENTITY
    assert middlewares["brokergate-cert"]["passTLSClientCert"] == {"pem": True}
    stripped = middlewares["brokergate-strip"]["headers"]["customRequestHeaders"]
    assert IDENTITY <= set(stripped) and all(value == "" for value in stripped.values())


def test_traefik_asks_for_a_certificate_without_failing_the_handshake() -> None:
    dynamic = traefik_dynamic()
    assert dynamic["tls"]["options"]["default"]["clientAuth"]["clientAuthType"] == (
        "RequestClientCert"
    )
    routers = dynamic["http"]["routers"]
    # Every router clears client-sent identity and sets the certificate; the portal's also asks.
    for router in routers.values():
        assert router["middlewares"][:2] == ["brokergate-strip", "brokergate-cert"]
    assert routers["portal"]["middlewares"][-1] == "brokergate-auth"
