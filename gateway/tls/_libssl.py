"""The libssl that CPython's ``_ssl`` module uses, reached through ``ctypes``, and the
``SSL_CTX`` inside an ``ssl.SSLContext`` (why: ``gateway.tls._context``).

Everything is checked before use: the library must be the very one ``_ssl`` loaded (same
version string), and the ``SSL_CTX`` pointer must carry the options and verify mode of the
``SSLContext`` it was read from; otherwise :class:`TLSSetupError` stops the start-up."""

from __future__ import annotations

import ctypes
import ctypes.util
import ssl
import sys

__all__ = [
    "ACCEPT_ANY_CHAIN",
    "SUPPORTED_OPENSSL",
    "SUPPORTED_PYTHON",
    "LibSSL",
    "TLSSetupError",
    "check_pointer",
    "check_runtime",
    "libssl",
    "ssl_ctx_pointer",
]


class TLSSetupError(RuntimeError):
    """The TLS server context cannot be set up as the gateway requires; start-up stops."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"TLS set-up failed: {problem}")


# The combinations the ctypes bridge is built for (README "Supported platforms"). Python:
# CPython only, 3.11-3.13, whose PySSLContext starts with the SSL_CTX pointer
# (Modules/_ssl.c); OpenSSL: the 3.x series, whose SSL_CTX_ctrl numbers and function names
# we call (1.1.1 is out of support, 4.x unknown). Inclusive (major, minor) ranges.
SUPPORTED_PYTHON = ((3, 11), (3, 13))
SUPPORTED_OPENSSL = ((3, 0), (3, 5))


def check_runtime(
    *,
    implementation: str = sys.implementation.name,
    python: tuple[int, int] = (sys.version_info.major, sys.version_info.minor),
    openssl: tuple[int, int] = (ssl.OPENSSL_VERSION_INFO[0], ssl.OPENSSL_VERSION_INFO[1]),
) -> None:
    """Refuse to start outside the supported Python/OpenSSL combinations (one line, what
    to do). The arguments default to this process; tests inject others.

    Raises:
        TLSSetupError: the interpreter or OpenSSL is not supported.
    """
    (py_low, py_high), (ssl_low, ssl_high) = SUPPORTED_PYTHON, SUPPORTED_OPENSSL
    wanted = (
        f"run the gateway on CPython {py_low[0]}.{py_low[1]}-{py_high[0]}.{py_high[1]} "
        f"linked against OpenSSL {ssl_low[0]}.{ssl_low[1]}-{ssl_high[0]}.{ssl_high[1]} "
        "(README: Supported platforms)"
    )
    if implementation != "cpython":
        raise TLSSetupError(f"{implementation} is not supported; {wanted}")
    if not py_low <= python <= py_high:
        raise TLSSetupError(f"Python {python[0]}.{python[1]} is not supported; {wanted}")
    if not ssl_low <= openssl <= ssl_high:
        raise TLSSetupError(f"OpenSSL {openssl[0]}.{openssl[1]} is not supported; {wanted}")


# int (*cb)(X509_STORE_CTX *ctx, void *arg): see SSL_CTX_set_cert_verify_callback(3).
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def _accept_any_chain(_store_ctx: int | None, _arg: int | None) -> int:
    # SECURITY: accepting here is deliberate: the application validates every presented
    # certificate (chain, time, EKU, revocation, user) before it grants anything. Possession
    # of the key is still proven by CertificateVerify, which OpenSSL checks regardless.
    return 1


# Kept for the life of the process: OpenSSL holds a raw pointer to it.
ACCEPT_ANY_CHAIN = _VERIFY_CB(_accept_any_chain)


class LibSSL:
    """The libssl already loaded by ``_ssl``, with the few prototypes we use."""

    def __init__(self) -> None:
        check_runtime()
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
        lib.OPENSSL_sk_new_null.restype = ctypes.c_void_p
        lib.OPENSSL_sk_new_null.argtypes = []
        lib.OPENSSL_sk_push.restype = ctypes.c_int
        lib.OPENSSL_sk_push.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.OPENSSL_sk_value.restype = ctypes.c_void_p
        lib.OPENSSL_sk_value.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.OPENSSL_sk_free.restype = None
        lib.OPENSSL_sk_free.argtypes = [ctypes.c_void_p]
        lib.X509_get_subject_name.restype = ctypes.c_void_p
        lib.X509_get_subject_name.argtypes = [ctypes.c_void_p]
        lib.X509_NAME_dup.restype = ctypes.c_void_p
        lib.X509_NAME_dup.argtypes = [ctypes.c_void_p]
        lib.X509_NAME_free.restype = None
        lib.X509_NAME_free.argtypes = [ctypes.c_void_p]
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


_LIB: list[LibSSL] = []


def libssl() -> LibSSL:
    if not _LIB:
        _LIB.append(LibSSL())
    return _LIB[0]


def ssl_ctx_pointer(context: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` inside a CPython ``_ssl._SSLContext`` (first field after the header).

    CPython's ``PySSLContext`` starts with ``PyObject_HEAD`` followed by ``SSL_CTX *ctx``
    (Modules/_ssl.c). The pointer is then checked against values only the real
    ``SSL_CTX`` can have (:func:`check_pointer`), so a layout change fails loudly.
    """
    address = id(context) + object.__basicsize__
    pointer = ctypes.c_void_p.from_address(address).value
    if not pointer:
        raise TLSSetupError("the SSLContext holds no SSL_CTX pointer at the expected place")
    return pointer


def check_pointer(lib: LibSSL, pointer: int, context: ssl.SSLContext) -> None:
    options = lib.lib.SSL_CTX_get_options(pointer)
    mode = lib.lib.SSL_CTX_get_verify_mode(pointer)
    if options != int(context.options) or mode != 1:  # SSL_VERIFY_PEER only
        raise TLSSetupError(
            "the SSL_CTX found does not match the SSLContext (options "
            f"{options:#x} vs {int(context.options):#x}, verify mode {mode}); this Python's "
            "ssl object layout is not supported"
        )
