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


from gateway.tls._libssl import TLSSetupError, check_pointer, libssl, ssl_ctx_pointer


def set_client_ca_names(context: ssl.SSLContext, issuers: Sequence[x509.Certificate]) -> None:
    """Replace the CA names sent in the CertificateRequest with the subjects of ``issuers``.

    Safe to call while the server runs (from the event loop thread): later handshakes
    send the new list.

    Raises:
        TLSSetupError: the list could not be set (it is then empty, never half-set).
    """
    if not issuers:
        raise TLSSetupError("no issuing CA to name in the CertificateRequest")
    lib = libssl()
    pointer = ssl_ctx_pointer(context)
    check_pointer(lib, pointer, context)
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
