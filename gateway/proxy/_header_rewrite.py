"""Pure header rewriting for the reverse proxy (no I/O; property-tested).

Request side, in this order:

1. drop hop-by-hop headers (RFC 9110 §7.6.1) and every header the Connection header names;
2. SECURITY: drop every client-sent identity header (``is_identity_header``: any case,
   ``_`` spelled for ``-``) and any header the caller names (the terminator's certificate
   header), then add the gateway's own identity headers;
3. drop the gateway's own cookies (``__Host-bg…``, ``__Host-brokergate…`` and the
   configured session cookie) from Cookie: the session cookie is a
   bearer credential for the gateway and means nothing to the upstream;
4. SECURITY: drop every header a portal (or the framework under it) might trust for the
   client's address (``CLIENT_ADDRESS_HEADERS``), its certificate
   (``CLIENT_CERTIFICATE_HEADERS`` and ``CLIENT_CERTIFICATE_PREFIXES``: ``X-SSL-Client-*``,
   ``SSL_CLIENT_*``, RFC 9440 ``Client-Cert``, Envoy's ``X-Forwarded-Client-Cert`` …) or
   the request's path or method (``REQUEST_OVERRIDE_HEADERS``: ``X-Original-URL`` …),
   from every peer, trusted proxies included: the portal learns the address from our
   X-Forwarded-For and the certificate from our identity headers only (issue 17);
5. X-Forwarded-For/-Proto/-Host: when the peer is NOT a trusted proxy, every client-sent
   X-Forwarded-* and Forwarded header is replaced by what the gateway itself saw; when the
   peer IS a trusted proxy (terminator mode), its X-Forwarded-For chain is kept and the peer
   appended (as nginx's ``$proxy_add_x_forwarded_for`` does), and its -Proto/-Host, other
   ``X-Forwarded-*`` (Port …) and Forwarded kept (exact spellings only).

Response side: drop hop-by-hop headers; everything else (Location, Set-Cookie, …) unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy, istr

from gateway.proxy._identity_headers import (
    IDENTITY_HEADER_PREFIX,
    is_identity_header,
    normalise_header_name,
)

# RFC 9110 §7.6.1 names Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and
# Upgrade; Trailer and the Proxy-Authenticate/-Authorization pair are hop-by-hop per RFC 2616
# §13.5.1, which every proxy still honours. Expect is answered by the gateway itself (aiohttp
# sends 100-continue), so forwarding it would make the upstream wait for a second one.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
_REQUEST_ONLY_DROPS = frozenset({"expect", "host"})
_DEFAULT_DROPS = HOP_BY_HOP | _REQUEST_ONLY_DROPS
_FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"})
# SECURITY (issue 17): names as normalised (lower case, "_" as "-"); docs/gateway-proxy.md
# "Headers a portal might trust" lists them. Dropped from every peer.
CLIENT_ADDRESS_HEADERS = frozenset(
    {
        "x-real-ip",  # nginx's realip convention
        "true-client-ip",  # Akamai, Cloudflare Enterprise
        "cf-connecting-ip",  # Cloudflare
        "cf-connecting-ipv6",
        "fastly-client-ip",  # Fastly
        "x-client-ip",
        "x-cluster-client-ip",  # Rackspace, Riverbed
        "x-forwarded",  # pre-RFC 7239 forms some frameworks still read
        "forwarded-for",
        "x-originating-ip",  # Microsoft
        "x-remote-ip",
        "x-remote-addr",
        "client-ip",
        "x-proxyuser-ip",  # Google
        "wl-proxy-client-ip",  # WebLogic
        "proxy-client-ip",  # WebLogic/Tomcat RemoteIpValve setups
        "x-azure-clientip",  # Azure Front Door
        "x-azure-socketip",
        "x-envoy-external-address",  # Envoy
    }
)
CLIENT_CERTIFICATE_HEADERS = frozenset(
    {
        "client-cert",  # RFC 9440
        "client-cert-chain",  # RFC 9440
        "x-forwarded-client-cert",  # Envoy (XFCC)
        "x-arr-clientcert",  # IIS Application Request Routing, Azure App Service
        "x-client-verify",
        "x-client-dn",
        "x-client-cert",
    }
)
CLIENT_CERTIFICATE_PREFIXES = (
    "x-ssl-",  # X-SSL-Client-Cert/-Verify/-S-DN/-I-DN, X-SSL-Cert, X-SSL-Issuer … (nginx, F5)
    "ssl-client-",  # SSL_CLIENT_S_DN, SSL_CLIENT_VERIFY, SSL_CLIENT_CERT (Apache mod_ssl names)
    "x-client-cert-",  # X-Client-Cert-Chain, X-Client-Cert-Dn …
    "x-client-ssl-",
    "x-tls-client-",
    "x-amzn-mtls-clientcert",  # AWS ALB mTLS: X-Amzn-Mtls-Clientcert[-Leaf|-Serial-Number …]
)
REQUEST_OVERRIDE_HEADERS = frozenset(
    {
        # IIS URL Rewrite, Symfony, Zend and Laminas take the path from these: another path
        # than the one the route policy matched.
        "x-original-url",
        "x-rewrite-url",
        # Method overrides (Rails, Spring's HiddenHttpMethodFilter setups, Google APIs):
        # another method than the one a method-specific route rule matched.
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
_ALWAYS_DROPPED = CLIENT_ADDRESS_HEADERS | CLIENT_CERTIFICATE_HEADERS | REQUEST_OVERRIDE_HEADERS


def is_trusted_by_portals(normalised: str) -> bool:
    """``normalised`` (lower case, ``_`` as ``-``) names a header a portal might trust for
    the client's address or certificate, or for the request's path or method."""
    return normalised in _ALWAYS_DROPPED or normalised.startswith(CLIENT_CERTIFICATE_PREFIXES)


# Every cookie the gateway (or its login pages) sets starts with one of these; they are
# bearer credentials for the gateway and never go to the upstream. The configured session
# cookie name is added by the caller (gateway.session_cookie_name).
GATEWAY_COOKIE_PREFIXES = ("__host-bg", "__host-brokergate")

X_FORWARDED_FOR = istr("X-Forwarded-For")
X_FORWARDED_PROTO = istr("X-Forwarded-Proto")
X_FORWARDED_HOST = istr("X-Forwarded-Host")


@functools.lru_cache(maxsize=64)  # the proxy passes the same few tuples on every request
def _normalised_cached(names: tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    return frozenset(normalise_header_name(name) for name in names)


def _normalised(names: Iterable[str]) -> frozenset[str]:
    """``names`` normalised like identity headers; computed once per distinct tuple (the
    forwarder's strip list, the response side's drop lists), not per request (issue 11)."""
    if isinstance(names, tuple | frozenset):
        return _normalised_cached(names)
    return frozenset(normalise_header_name(name) for name in names)


@functools.lru_cache(maxsize=64)
def _lowered_cached(names: tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    return frozenset(map(str.lower, names))


def _lowered(names: Collection[str]) -> frozenset[str]:
    if isinstance(names, tuple | frozenset):
        return _lowered_cached(names)
    return frozenset(map(str.lower, names))


# Only the gateway's own code names identity headers (a bounded set of constants), so
# whether a name is one is worked out once per name, not once per request (issue 11).
_checked_identity_header = functools.lru_cache(maxsize=256)(is_identity_header)


def connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    """Header names listed in (all) Connection headers, normalised ("_" as "-")."""
    names: set[str] = set()
    for value in headers.getall("Connection", ()):
        names.update(normalise_header_name(token) for token in value.split(",") if token.strip())
    return frozenset(names)


def strip_gateway_cookies(cookie_header: str, names: Collection[str] = ()) -> str:
    """Cookie header value without the gateway's cookies (RFC 6265 §4.2.1: ``; ``-separated).

    Names are compared case-insensitively: browsers match cookie names exactly, so
    ``__host-bg…`` is not ours, but it is no business of the upstream either and dropping
    it keeps the rule simple.
    """
    exact = _lowered(names)
    kept = []
    for pair in (part.strip() for part in cookie_header.split(";")):
        name = pair.split("=", 1)[0].strip().lower()
        if pair and not name.startswith(GATEWAY_COOKIE_PREFIXES) and name not in exact:
            kept.append(pair)
    return "; ".join(kept)


def upstream_request_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    *,
    identity_headers: Mapping[str, str],
    peer: str | None,
    peer_trusted: bool,
    scheme: str,
    host: str | None,
    strip: Collection[str] = (),
    gateway_cookies: Collection[str] = (),
    keep_host: bool = True,
) -> CIMultiDict[str]:
    """The headers to send upstream for a client request with ``headers``.

    Args:
        headers: the client's request headers (duplicates preserved).
        identity_headers: the gateway's identity headers for this request (may be empty).
        peer: the TCP peer's address as text (None for a unix socket).
        peer_trusted: the peer is one of the configured trusted proxies.
        scheme: ``https`` or ``http`` as the gateway received it.
        host: the Host the client asked for.
        strip: further header names to drop (compared like identity headers).
        gateway_cookies: cookie names of the gateway beyond GATEWAY_COOKIE_PREFIXES (the
            configured session cookie), removed from Cookie.
        keep_host: send the client's Host upstream (so its absolute URLs name the gateway).

    Returns:
        A new multidict; ``headers`` is not modified.
    """
    connection = connection_tokens(headers) if "Connection" in headers else frozenset()
    drop = HOP_BY_HOP | connection | _REQUEST_ONLY_DROPS if connection else _DEFAULT_DROPS
    strip_normalised = _normalised(strip)
    out: CIMultiDict[str] = CIMultiDict()
    forwarded_for: list[str] = []
    forwarded_proto: str | None = None
    forwarded_host: str | None = None
    for name, value in headers.items():
        # SECURITY: every check compares the normalised name (any case, "_" as "-"), so
        # X_BROKERGATE_LEVEL, x-brokergate_level or Transfer_Encoding cannot slip past it
        # to an upstream that treats "_" like "-" (CGI/WSGI environ keys do).
        # (Header names from aiohttp's parser carry no whitespace: llhttp rejects it.)
        normalised = name.lower().replace("_", "-")
        if (
            normalised in drop
            or normalised.startswith(IDENTITY_HEADER_PREFIX)
            or normalised in strip_normalised
            or is_trusted_by_portals(normalised)
        ):
            continue
        if normalised.startswith("x-forwarded-") and normalised not in _FORWARDING:
            # X-Forwarded-Port/-Ssl/-Scheme/-Prefix …: a trusted proxy's (exact spelling)
            # pass, nobody else's: we build none of them.
            if peer_trusted and normalised == name.lower():
                out.add(name, value)
            continue
        if normalised in _FORWARDING:
            if peer_trusted and normalised == name.lower():  # exact spellings only
                if normalised == "x-forwarded-for":
                    forwarded_for.append(value)
                elif normalised == "x-forwarded-proto" and forwarded_proto is None:
                    forwarded_proto = value
                elif normalised == "x-forwarded-host" and forwarded_host is None:
                    forwarded_host = value
                elif normalised == "forwarded":
                    out.add(name, value)
            # From anyone else, any spelling of a forwarding header is dropped and replaced.
            continue
        if normalised == "cookie":
            value = strip_gateway_cookies(value, gateway_cookies)
            if not value:
                continue
        out.add(name, value)
    if keep_host and host:
        out["Host"] = host
    chain = [*forwarded_for, peer] if peer else forwarded_for
    if chain:
        out[X_FORWARDED_FOR] = ", ".join(chain)
    out[X_FORWARDED_PROTO] = forwarded_proto or scheme
    if forwarded_host or host:
        out[X_FORWARDED_HOST] = forwarded_host or host or ""
    for name, value in identity_headers.items():
        if not _checked_identity_header(name):  # a programming error, not client input
            raise ValueError(f"{name!r} is not an identity header (X-Brokergate-…)")
        out[name] = value
    return out


def downstream_response_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    *,
    drop: Iterable[str] = (),
    gateway_cookies: Collection[str] = (),
) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones; Location unchanged, and every
    Set-Cookie unchanged except one that would set a gateway cookie.

    # SECURITY: an upstream (or anything injecting into its responses) must not be able to
    # replace the gateway's session cookie in the browser (session fixation).
    """
    skip = HOP_BY_HOP | connection_tokens(headers) | _normalised(drop)
    exact = _lowered(gateway_cookies)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        # Compared normalised ("_" as "-"), as connection_tokens() and the request side do:
        # a header the upstream's Connection names as "X_Foo" is hop-by-hop too.
        if lowered.replace("_", "-") in skip:
            continue
        if lowered == "set-cookie":
            cookie = value.split("=", 1)[0].strip().lower()
            if cookie in exact or cookie.startswith(GATEWAY_COOKIE_PREFIXES):
                continue
        out.add(name, value)
    return out
