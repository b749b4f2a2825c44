"""The direct-mode TLS server context: optional client certificates that never break a handshake.

What the gateway needs from TLS, and why the stdlib alone cannot give it:

1. Ask every connection for an *optional* client certificate (``CERT_OPTIONAL``).
2. Never abort the handshake because of the certificate: an expired, not-yet-valid,
   revoked or foreign certificate must reach the application, which explains the
   problem on a page (DESIGN.md "Certificates at the TLS layer"). With
   ``CERT_OPTIONAL`` OpenSSL still verifies a presented chain and aborts on any error;
   ``VERIFY_X509_...`` flags can switch off the time check but never the
   "unable to get local issuer" failure of a foreign certificate.
3. Name only our issuing CAs in the CertificateRequest (RFC 8446 §4.2.4
   ``certificate_authorities``, RFC 5246 §7.4.4), so that browsers offer only our
   certificates instead of every certificate of every insurer the broker holds.
   The ``ssl`` module has no API for the list (CPython issue #75187 asks for one).

We therefore call two OpenSSL functions through ``ctypes`` on the very ``SSL_CTX``
that the ``ssl.SSLContext`` wraps, in the very ``libssl`` the ``_ssl`` module uses:

* ``SSL_CTX_set_cert_verify_callback`` with a callback that returns 1: OpenSSL skips
  its own chain building entirely (``X509_verify_cert`` is never called). All
  validation happens in code (``gateway.auth._chain_verification``, the store). The client still
  has to prove possession of the private key: CertificateVerify is checked by
  OpenSSL independently of this callback (RFC 8446 §4.4.3), so a client cannot
  present somebody else's certificate.
* ``SSL_CTX_set_client_CA_list`` / ``SSL_CTX_add_client_CA`` with the subjects of the
  trusted issuing CAs; :func:`set_client_ca_names` can replace the list at run time
  (after a CA rotation) and affects every later handshake.

Everything is checked at start-up and :class:`TLSSetupError` is raised when it cannot
be applied (a statically linked or different OpenSSL, an unknown object layout): the
gateway must not run with a TLS setup that silently differs from the one described.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.tls._client_ca_names import set_client_ca_names
from gateway.tls._libssl import (
    ACCEPT_ANY_CHAIN,
    TLSSetupError,
    check_pointer,
    libssl,
    ssl_ctx_pointer,
)

__all__ = [
    "CLIENT_CERTIFICATE_MESSAGE_LIMIT",
    "TLSSetupError",
    "create_server_context",
    "max_client_certificate_message",
    "peer_certificate_der",
    "set_client_ca_names",
]


# Mozilla's "intermediate" server-side TLS profile (ssl-config.mozilla.org, guidelines 5.7),
# the one the shipped nginx and HAProxy configurations use too (tests/test_tls_profile.py
# scans all three with sslyze). TLS 1.2: only AEAD suites with ECDHE (no CBC, no DHE);
# TLS 1.3: OpenSSL's default suites, which are the profile's. SECURITY: OpenSSL 3.0's
# defaults also offer CBC suites in TLS 1.2 and the X448 and P-521 groups.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
TLS_GROUPS = "X25519:P-256:P-384"
_SSL_CTRL_SET_GROUPS_LIST = 92  # ssl.h; the stdlib has only set_ecdh_curve (one curve)
# SSL_CTX_get/set_max_cert_list are macros over SSL_CTX_ctrl (ssl.h).
_SSL_CTRL_GET_MAX_CERT_LIST = 50
_SSL_CTRL_SET_MAX_CERT_LIST = 51
# The largest client Certificate handshake message OpenSSL reads (issue 17, item 4), set
# explicitly. OpenSSL's default (100 KiB, SSL_MAX_CERT_LIST_DEFAULT) is not the real bound:
# a client certificate over ~64 KB passes it and then fails the handshake with an
# "internal error" alert, because the session it would put in a stateless ticket no longer
# fits the ticket's 16-bit length (statem_srvr.c construct_stateless_ticket: at most 0xFF00
# bytes of session, which holds the leaf certificate). 60 KiB keeps the leaf plus the rest
# of the session (~0.5 KB, the SNI name at most 255 bytes) under that, so every message we
# read ends in a normal handshake and the certificate page
# (gateway.auth CLIENT_CERTIFICATE_DER_LIMIT answers big ones unparsed). A bigger message is
# refused by OpenSSL with an "illegal parameter" alert (EXCESSIVE_MESSAGE_SIZE), logged in
# one line and counted as ``handshake_message_too_large``. Raising it would mean giving up
# stateless tickets (a server-side session cache holding every peer certificate).
CLIENT_CERTIFICATE_MESSAGE_LIMIT = 60 * 1024


def create_server_context(
    *,
    cert_chain: Path,
    private_key: Path,
    client_ca_issuers: Sequence[x509.Certificate],
) -> ssl.SSLContext:
    """The HTTPS listener's context: TLS 1.2+, optional client certificate, never aborting on it.

    Args:
        cert_chain: PEM file with the server certificate (and its chain).
        private_key: PEM file with the server's private key.
        client_ca_issuers: the issuing CAs whose names the CertificateRequest carries
            (every non-retired generation: ``TrustMaterial.issuing_by_generation``).

    Raises:
        TLSSetupError: a file cannot be read, or OpenSSL cannot be set up as required.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)  # TLS 1.2 only; TLS 1.3 keeps its default suites
    try:
        context.load_cert_chain(certfile=str(cert_chain), keyfile=str(private_key))
    except (OSError, ssl.SSLError) as exc:
        raise TLSSetupError(
            f"cannot load the server certificate {cert_chain} / key {private_key}: {exc}"
        ) from None
    # SECURITY: OPTIONAL, never REQUIRED: a broker without a certificate gets the login page.
    context.verify_mode = ssl.CERT_OPTIONAL
    # SECURITY: no renegotiation, so the client certificate cannot change within a
    # connection (gateway.auth._decision_memo relies on it). OpenSSL 3 already refuses a
    # client's renegotiation unless SSL_OP_ALLOW_CLIENT_RENEGOTIATION is set; this keeps
    # server-side renegotiation off too (tests/gateway/test_tls_clients.py tries a client's).
    context.options |= ssl.OP_NO_RENEGOTIATION
    lib = libssl()
    pointer = ssl_ctx_pointer(context)
    check_pointer(lib, pointer, context)
    if lib.lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, TLS_GROUPS.encode()) != 1:
        raise TLSSetupError(f"OpenSSL refused the key exchange groups {TLS_GROUPS}")
    lib.lib.SSL_CTX_set_cert_verify_callback(pointer, ACCEPT_ANY_CHAIN, None)
    lib.lib.SSL_CTX_ctrl(
        pointer, _SSL_CTRL_SET_MAX_CERT_LIST, CLIENT_CERTIFICATE_MESSAGE_LIMIT, None
    )
    if max_client_certificate_message(context) != CLIENT_CERTIFICATE_MESSAGE_LIMIT:
        raise TLSSetupError(
            f"OpenSSL did not take max_cert_list {CLIENT_CERTIFICATE_MESSAGE_LIMIT}"
        )
    set_client_ca_names(context, client_ca_issuers)
    return context


def max_client_certificate_message(context: ssl.SSLContext) -> int:
    """The largest client Certificate message (bytes) OpenSSL accepts on ``context``
    (``SSL_CTX_get_max_cert_list``); a context of :func:`create_server_context` only."""
    lib = libssl()
    pointer = ssl_ctx_pointer(context)
    check_pointer(lib, pointer, context)
    return int(lib.lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_GET_MAX_CERT_LIST, 0, None))


def peer_certificate_der(ssl_object: Any) -> bytes | None:
    """The DER of the client certificate on this connection (also after resumption), or None.

    ``ssl_object`` is an ``ssl.SSLObject``/``ssl.SSLSocket`` (aiohttp:
    ``request.transport.get_extra_info("ssl_object")``). Nothing here says the
    certificate is valid: the caller validates it.
    """
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None
