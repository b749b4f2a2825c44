"""Terminator mode: the client certificate as forwarded by a TLS terminator in front of us.

Supported forwarding formats (``gateway.terminator_format``):

``nginx``
    ``proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;`` — the PEM,
    URL-encoded (nginx ≥ 1.13.5). The older ``$ssl_client_cert`` (PEM with every line
    after the first indented by a tab) is accepted too.
``haproxy``
    ``http-request set-header X-SSL-Client-Cert %[ssl_c_der,base64]`` — base64 DER;
    an empty value means no certificate.
``envoy``
    ``X-Forwarded-Client-Cert`` (XFCC) with ``forward_client_cert_details`` and
    ``set_current_client_cert_details: {cert: true}``: ``By=…;Hash=…;Cert="<url-encoded
    PEM>";Subject="…"``. With several proxies in a row each appends an element
    (``,``-separated); the LAST one is the hop that talks to us and is the one we read.

``rfc9440``
    ``Client-Cert: :<base64 DER>:`` (RFC 9440 §2.2: a Structured Field Byte Sequence),
    e.g. nginx ``proxy_set_header Client-Cert ":$ssl_client_raw_cert_b64:"`` or a front
    that implements the RFC.
``caddy``
    ``header_up X-SSL-Client-Cert {http.request.tls.client.certificate_der_base64}`` (or
    ``copy``-ed into a forward_auth subrequest): base64 DER; empty, or the placeholder left
    unfilled (Caddy's way of saying there is no certificate), means none.
``traefik``
    Traefik's ``passTLSClientCert: {pem: true}``: ``X-Forwarded-Tls-Client-Cert`` with the
    PEM's base64 body (no BEGIN/END lines), URL-escaped; a chain is ``,``-separated and
    its first element is the client's certificate.

# SECURITY: the header is believed only when the TCP peer of the connection lies in
# ``gateway.trusted_proxies``. From anyone else it is ignored here and stripped by the proxy
# (:func:`forwarded_certificate_headers`), so a client that reaches the gateway directly
# cannot claim a certificate it does not hold. The certificate returned here is then
# validated exactly as one from our own TLS handshake.
"""

from __future__ import annotations

import base64
import binascii
import logging
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway._errors import GatewayError
from gateway._log_safety import log_safe
from gateway._settings import GatewaySettings
from gateway.tls._trusted_peers import is_trusted_peer

log = logging.getLogger(__name__)

DEFAULT_HEADERS = {
    "nginx": "X-SSL-Client-Cert",
    "haproxy": "X-SSL-Client-Cert",
    "envoy": "X-Forwarded-Client-Cert",
    "rfc9440": "Client-Cert",
    "caddy": "X-SSL-Client-Cert",
    "traefik": "X-Forwarded-Tls-Client-Cert",
}
# A PEM RSA-4096 certificate with a long subject is ~2.5 KB, URL-encoded ~3.5 KB; anything
# far beyond is not a single client certificate and is refused before parsing.
MAX_HEADER_LENGTH = 16 * 1024


class ForwardedCertificateInvalid(GatewayError):
    """A trusted terminator sent a certificate header we cannot read (400 page).

    Usually a configuration mismatch (``terminator_format`` does not match what the
    terminator sends); the detail (for the log) says what was wrong.
    """

    status = 400
    page = "forwarded_certificate_invalid"

    def __init__(self, header: str, problem: str) -> None:
        super().__init__(
            f"{header}: {problem}; check gateway.terminator_format and the terminator's "
            "header configuration (docs/deployment-nginx.md)"
        )


def certificate_header_name(settings: GatewaySettings) -> str | None:
    """The header the configured terminator uses, or None in direct mode."""
    if settings.terminator_format == "none":
        return None
    return settings.client_cert_header or DEFAULT_HEADERS[settings.terminator_format]


def forwarded_certificate_headers(settings: GatewaySettings) -> tuple[str, ...]:
    """Every certificate-forwarding header name the proxy must never pass upstream.

    In direct mode too: the upstream might read one of them, and no client should be able
    to plant it there.
    """
    names = {
        *DEFAULT_HEADERS.values(),
        "X-SSL-Client-Escaped-Cert",
        "X-Client-Cert",
        "Client-Cert-Chain",  # RFC 9440 §2.3
    }
    if settings.client_cert_header:
        names.add(settings.client_cert_header)
    return tuple(sorted(names))


def certificate_from_terminator(
    request: web.Request, settings: GatewaySettings
) -> x509.Certificate | None:
    """The client certificate a trusted terminator forwarded with ``request``.

    Returns:
        The certificate; None in direct mode, when the peer is not a trusted proxy (the
        header is then ignored), or when the terminator forwarded no certificate.

    Raises:
        ForwardedCertificateInvalid: a trusted terminator sent the header more than once,
            too long, or in a form that is not a certificate in the configured format.
    """
    found = _forwarded_value(request, settings)
    if found is None:
        return None
    header, value = found
    return parse_forwarded_certificate(value, settings.terminator_format, header=header)


def _forwarded_value(request: web.Request, settings: GatewaySettings) -> tuple[str, str] | None:
    """``(header, value)`` of the certificate header a trusted terminator sent, or None."""
    header = certificate_header_name(settings)
    if header is None:
        return None
    values = request.headers.getall(header, ())
    if not values:
        return None
    if not is_trusted_peer(request, settings.trusted_networks):
        # SECURITY: not from the terminator: whoever sent it, it proves nothing.
        log.warning(
            "ignored %s from %s, which is not in gateway.trusted_proxies",
            header,
            log_safe(request.remote),
        )
        return None
    if len(values) > 1:
        # SECURITY: a terminator that appends instead of replacing would let the client
        # put its own copy first; refuse rather than guess which one is real.
        raise ForwardedCertificateInvalid(header, f"sent {len(values)} times; expected once")
    return header, values[0]


# Distinct header values remembered per app, and the longest one remembered: ours are
# ~2 KB URL-encoded PEM; 10,000 x 4 KiB bounds the memory at ~40 MB even if clients present
# many self-made certificates through the front. Longer values are decoded every time.
FORWARDED_MEMO_LIMIT = 10_000
FORWARDED_MEMO_VALUE_LIMIT = 4 * 1024
_UNSEEN = object()


class ForwardedCertificates:
    """The app's certificate source in terminator mode: the DER of the certificate a
    trusted terminator forwarded with a request (None: none), decoded once per distinct
    header value (issue 11: URL-decoding and parsing the PEM was an eighth of a
    forward-auth decision).

    The memo maps a header value to what :func:`parse_forwarded_certificate` makes of it,
    a pure function of the value, so it never goes stale; whether the certificate is
    valid, revoked or retired is decided afterwards on every request (trust cache). Values
    that fail to decode are not remembered and fail again each time. Owned by the app
    that ``gateway.proxy._forwarder.certificate_source_for`` built it for; used from the
    event loop only.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        limit: int = FORWARDED_MEMO_LIMIT,
        value_limit: int = FORWARDED_MEMO_VALUE_LIMIT,
    ) -> None:
        self._settings = settings
        self._limit = limit
        self._value_limit = value_limit
        self._memo: dict[str, bytes | None] = {}

    def __len__(self) -> int:
        return len(self._memo)

    def __call__(self, request: web.Request) -> bytes | None:
        """Raises: ForwardedCertificateInvalid, as :func:`certificate_from_terminator`."""
        found = _forwarded_value(request, self._settings)
        if found is None:
            return None
        header, value = found
        known = self._memo.get(value, _UNSEEN)
        if known is not _UNSEEN:
            assert known is None or isinstance(known, bytes)
            return known
        cert = parse_forwarded_certificate(value, self._settings.terminator_format, header=header)
        der = cert.public_bytes(serialization.Encoding.DER) if cert is not None else None
        if len(value) <= self._value_limit:
            if len(self._memo) >= self._limit:
                self._memo.clear()  # bounded: start again rather than grow
            self._memo[value] = der
        return der


def parse_forwarded_certificate(
    value: str, terminator_format: str, *, header: str = "certificate header"
) -> x509.Certificate | None:
    """Decode one header value in ``terminator_format``; None if it carries no certificate."""
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_HEADER_LENGTH:
        raise ForwardedCertificateInvalid(header, f"{len(value)} characters is too long")
    if terminator_format == "nginx":
        return _load_pem(_nginx_pem(value), header)
    if terminator_format == "caddy" and value.startswith("{") and value.endswith("}"):
        # Caddy 2.6 sends a placeholder it cannot fill as it is: on a connection without
        # a client certificate the header is the literal {http.request.tls.client....}.
        return None
    if terminator_format in ("haproxy", "caddy"):
        return _load_base64_der(value, header, "expected base64 DER")
    if terminator_format == "rfc9440":
        if len(value) < 2 or value[0] != ":" or value[-1] != ":":
            raise ForwardedCertificateInvalid(
                header, "not an RFC 9440 byte sequence (expected :base64 DER:)"
            )
        return _load_base64_der(value[1:-1], header, "expected :base64 DER:")
    if terminator_format == "traefik":
        first = unquote(value).split(",", 1)[0].strip()
        return _load_base64_der(first, header, "expected passTLSClientCert pem")
    if terminator_format == "envoy":
        cert = xfcc_last_element(value).get("cert")
        if not cert:
            return None
        return _load_pem(unquote(cert), header)
    raise ValueError(f"unknown terminator_format {terminator_format!r}")


def _load_base64_der(value: str, header: str, expected: str) -> x509.Certificate:
    try:
        der = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ForwardedCertificateInvalid(header, f"not base64 ({expected})") from None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ForwardedCertificateInvalid(header, f"not a DER certificate ({exc})") from None


def _nginx_pem(value: str) -> str:
    pem = unquote(value) if "%" in value else value
    # $ssl_client_cert (deprecated) indents continuation lines with a tab.
    return pem.replace("\n\t", "\n")


def _load_pem(pem: str, header: str) -> x509.Certificate:
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise ForwardedCertificateInvalid(header, "no PEM certificate in the value")
    try:
        return x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ForwardedCertificateInvalid(header, f"not a PEM certificate ({exc})") from None


def xfcc_last_element(value: str) -> dict[str, str]:
    """Key/value pairs (keys lower-cased) of the last element of an XFCC header.

    Hand-written because no maintained Python library parses XFCC; the grammar (Envoy docs,
    "x-forwarded-client-cert") is: elements separated by ``,``, pairs by ``;``, ``key=value``,
    values optionally in double quotes in which ``,`` ``;`` ``=`` are literal and ``\\"``
    is an escaped quote.
    """
    elements: list[list[str]] = [[]]
    current: list[str] = []
    in_quotes = False
    escaped = False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and in_quotes:
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == ";" and not in_quotes:
            elements[-1].append("".join(current))
            current = []
        elif char == "," and not in_quotes:
            elements[-1].append("".join(current))
            current = []
            elements.append([])
        else:
            current.append(char)
    elements[-1].append("".join(current))
    pairs: dict[str, str] = {}
    for pair in elements[-1]:
        key, sep, item = pair.partition("=")
        if sep:
            pairs[key.strip().lower()] = item
    return pairs
