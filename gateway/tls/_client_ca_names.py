"""The CA names in the CertificateRequest (RFC 8446 §4.2.4 ``certificate_authorities``,
RFC 5246 §7.4.4): only our issuing CAs, so browsers offer only our certificates.

The ``ssl`` module has no API for the list (CPython issue #75187): it is set on the
``SSL_CTX`` through ``gateway.tls._libssl``, at start-up and after every CA rotation or
retirement."""

from __future__ import annotations

import ctypes
import ctypes.util
import ssl
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = ["set_client_ca_names"]


from gateway.tls._libssl import LibSSL, TLSSetupError, check_pointer, libssl, ssl_ctx_pointer


def set_client_ca_names(context: ssl.SSLContext, issuers: Sequence[x509.Certificate]) -> None:
    """Replace the CA names sent in the CertificateRequest with the subjects of ``issuers``.

    Safe to call while the server runs (from the event loop thread): later handshakes
    send the new list. The new list is built completely on its own first and then handed
    to the ``SSL_CTX`` in one call, so a failure keeps the old list, never an empty or a
    half-built one.

    Raises:
        TLSSetupError: the list could not be built or set (the old list stays).
    """
    if not issuers:
        raise TLSSetupError("no issuing CA to name in the CertificateRequest")
    lib = libssl()
    pointer = ssl_ctx_pointer(context)
    check_pointer(lib, pointer, context)
    names = lib.lib.OPENSSL_sk_new_null()
    if not names:
        raise TLSSetupError("OpenSSL could not allocate the CA name list")
    try:
        for cert in issuers:
            _push_subject(lib, names, cert)
    except BaseException:
        _free_names(lib, names)
        raise
    if lib.lib.OPENSSL_sk_num(names) != len(issuers):
        _free_names(lib, names)
        raise TLSSetupError("the client CA list is incomplete")
    lib.lib.SSL_CTX_set_client_CA_list(pointer, names)  # takes the list, frees the old one
    current = lib.lib.SSL_CTX_get_client_CA_list(pointer)
    if not current or lib.lib.OPENSSL_sk_num(current) != len(issuers):
        raise TLSSetupError("the client CA list did not take effect")


def _push_subject(lib: LibSSL, names: int, cert: x509.Certificate) -> None:
    der = cert.public_bytes(Encoding.DER)
    buffer = ctypes.c_char_p(der)
    x509_ptr = lib.lib.d2i_X509(None, ctypes.byref(buffer), len(der))
    if not x509_ptr:
        raise TLSSetupError(f"OpenSSL cannot parse the CA certificate {cert.subject}")
    try:
        # X509_get_subject_name returns the certificate's own name: copy it.
        name = lib.lib.X509_NAME_dup(lib.lib.X509_get_subject_name(x509_ptr))
    finally:
        lib.lib.X509_free(x509_ptr)
    if not name:
        raise TLSSetupError(f"OpenSSL cannot copy the subject of {cert.subject}")
    if lib.lib.OPENSSL_sk_push(names, name) <= 0:
        lib.lib.X509_NAME_free(name)
        raise TLSSetupError(f"OpenSSL cannot add {cert.subject} to the CA name list")


def _free_names(lib: LibSSL, names: int) -> None:
    for index in range(lib.lib.OPENSSL_sk_num(names)):
        lib.lib.X509_NAME_free(lib.lib.OPENSSL_sk_value(names, index))
    lib.lib.OPENSSL_sk_free(names)
