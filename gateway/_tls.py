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
  validation happens in code (``gateway._verification``, the store). The client still
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

import ctypes
import ctypes.util
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = [
    "TLSSetupError",
    "create_server_context",
    "peer_certificate_der",
    "set_client_ca_names",
]


class TLSSetupError(RuntimeError):
    """The TLS server context cannot be set up as the gateway requires; start-up stops."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"TLS set-up failed: {problem}")


# int (*cb)(X509_STORE_CTX *ctx, void *arg): see SSL_CTX_set_cert_verify_callback(3).
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def _accept_any_chain(_store_ctx: int | None, _arg: int | None) -> int:
    # SECURITY: accepting here is deliberate: the application validates every presented
    # certificate (chain, time, EKU, revocation, user) before it grants anything. Possession
    # of the key is still proven by CertificateVerify, which OpenSSL checks regardless.
    return 1


# Kept for the life of the process: OpenSSL holds a raw pointer to it.
_ACCEPT_ANY_CHAIN = _VERIFY_CB(_accept_any_chain)


class _LibSSL:
    """The libssl already loaded by ``_ssl``, with the few prototypes we use."""

    def __init__(self) -> None:
        path = _loaded_libssl_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise TLSSetupError(f"cannot load {path}: {exc}") from None
        lib.OpenSSL_version.restype = ctypes.c_char_p
        lib.OpenSSL_version.argtypes = [ctypes.c_int]
        version = (lib.OpenSSL_version(0) or b"").decode()
        # SECURITY: a different libssl would give us a different SSL_CTX layout; refuse.
        if version != ssl.OPENSSL_VERSION:
            raise TLSSetupError(
                f"{path} is {version!r} but Python's ssl module uses {ssl.OPENSSL_VERSION!r}"
            )
        if ssl.OPENSSL_VERSION_INFO < (3, 0):
            raise TLSSetupError(f"OpenSSL 3 is required, found {ssl.OPENSSL_VERSION}")
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_set_cert_verify_callback.restype = None
        lib.SSL_CTX_set_cert_verify_callback.argtypes = [
            ctypes.c_void_p,
            _VERIFY_CB,
            ctypes.c_void_p,
        ]
        lib.SSL_CTX_set_client_CA_list.restype = None
        lib.SSL_CTX_set_client_CA_list.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.SSL_CTX_get_client_CA_list.restype = ctypes.c_void_p
        lib.SSL_CTX_get_client_CA_list.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_add_client_CA.restype = ctypes.c_int
        lib.SSL_CTX_add_client_CA.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.d2i_X509.restype = ctypes.c_void_p
        lib.d2i_X509.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_long,
        ]
        lib.X509_free.restype = None
        lib.X509_free.argtypes = [ctypes.c_void_p]
        lib.OPENSSL_sk_num.restype = ctypes.c_int
        lib.OPENSSL_sk_num.argtypes = [ctypes.c_void_p]
        # SSL_CTX_set1_groups_list is a macro over SSL_CTX_ctrl (ssl.h).
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
        self.lib = lib
        self.path = path


def _loaded_libssl_path() -> str:
    """The libssl file mapped into this process by ``_ssl`` (Linux), else the system one."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) >= 6 and "/libssl.so" in parts[-1]:
                    return parts[-1]
    except OSError:
        pass
    found = ctypes.util.find_library("ssl")
    if not found:
        raise TLSSetupError("libssl is not found; the ssl module may be statically linked")
    return found


_LIB: list[_LibSSL] = []


def _libssl() -> _LibSSL:
    if not _LIB:
        _LIB.append(_LibSSL())
    return _LIB[0]


def _ssl_ctx_pointer(context: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` inside a CPython ``_ssl._SSLContext`` (first field after the header).

    CPython's ``PySSLContext`` starts with ``PyObject_HEAD`` followed by ``SSL_CTX *ctx``
    (Modules/_ssl.c). The pointer is then checked against values only the real
    ``SSL_CTX`` can have (:func:`_check_pointer`), so a layout change fails loudly.
    """
    address = id(context) + object.__basicsize__
    pointer = ctypes.c_void_p.from_address(address).value
    if not pointer:
        raise TLSSetupError("the SSLContext holds no SSL_CTX pointer at the expected place")
    return pointer


def _check_pointer(lib: _LibSSL, pointer: int, context: ssl.SSLContext) -> None:
    options = lib.lib.SSL_CTX_get_options(pointer)
    mode = lib.lib.SSL_CTX_get_verify_mode(pointer)
    if options != int(context.options) or mode != 1:  # SSL_VERIFY_PEER only
        raise TLSSetupError(
            "the SSL_CTX found does not match the SSLContext (options "
            f"{options:#x} vs {int(context.options):#x}, verify mode {mode}); this Python's "
            "ssl object layout is not supported"
        )


def set_client_ca_names(context: ssl.SSLContext, issuers: Sequence[x509.Certificate]) -> None:
    """Replace the CA names sent in the CertificateRequest with the subjects of ``issuers``.

    Safe to call while the server runs (from the event loop thread): later handshakes
    send the new list.

    Raises:
        TLSSetupError: the list could not be set (it is then empty, never half-set).
    """
    if not issuers:
        raise TLSSetupError("no issuing CA to name in the CertificateRequest")
    lib = _libssl()
    pointer = _ssl_ctx_pointer(context)
    _check_pointer(lib, pointer, context)
    lib.lib.SSL_CTX_set_client_CA_list(pointer, None)  # frees the previous list
    for cert in issuers:
        der = cert.public_bytes(Encoding.DER)
        buffer = ctypes.c_char_p(der)
        x509_ptr = lib.lib.d2i_X509(None, ctypes.byref(buffer), len(der))
        if not x509_ptr:
            lib.lib.SSL_CTX_set_client_CA_list(pointer, None)
            raise TLSSetupError(f"OpenSSL cannot parse the CA certificate {cert.subject}")
        try:
            # Copies the subject name; the X509 itself stays ours to free.
            if lib.lib.SSL_CTX_add_client_CA(pointer, x509_ptr) != 1:
                lib.lib.SSL_CTX_set_client_CA_list(pointer, None)
                raise TLSSetupError(f"SSL_CTX_add_client_CA failed for {cert.subject}")
        finally:
            lib.lib.X509_free(x509_ptr)
    names = lib.lib.SSL_CTX_get_client_CA_list(pointer)
    if not names or lib.lib.OPENSSL_sk_num(names) != len(issuers):
        raise TLSSetupError("the client CA list did not take effect")


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
    lib = _libssl()
    pointer = _ssl_ctx_pointer(context)
    _check_pointer(lib, pointer, context)
    if lib.lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, TLS_GROUPS.encode()) != 1:
        raise TLSSetupError(f"OpenSSL refused the key exchange groups {TLS_GROUPS}")
    lib.lib.SSL_CTX_set_cert_verify_callback(pointer, _ACCEPT_ANY_CHAIN, None)
    set_client_ca_names(context, client_ca_issuers)
    return context


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
