"""The connection, before any HTTP: TLS, the PROXY protocol, serving and workers.

A request's way starts here:

* ``_workers``: ``gateway serve`` — N worker processes on one port (SO_REUSEPORT), graceful
  drain on SIGTERM/SIGINT, the idle-connection read buffer.
* ``_listener``: :class:`GatewaySite`, every HTTPS listener — bounded TLS handshake, first
  request, request head and keep-alive, and ``max_connections`` per worker.
* ``_proxy_protocol`` / ``_proxy_header``: behind HAProxy passthrough, the PROXY v1/v2
  header read before TLS (the broker's real address).
* ``_context``: the server ``SSLContext`` — an optional client certificate that never
  breaks a handshake, up to ``CLIENT_CERTIFICATE_MESSAGE_LIMIT`` (256 KiB) in size.
* ``_client_ca_names``: the CA names in the CertificateRequest (only our issuing CAs).
* ``_libssl``: the ``ctypes`` bridge to the very libssl CPython uses, checked before use.
* ``_trusted_peers``: which peers are trusted proxies (``trusted_proxies``), and the client
  address a request is attributed to.

Next room: ``gateway.auth`` (who is there).
"""

from gateway.tls._context import CLIENT_CERTIFICATE_MESSAGE_LIMIT, max_client_certificate_message
from gateway.tls._libssl import SUPPORTED_OPENSSL, SUPPORTED_PYTHON, check_runtime
from gateway.tls._listener import CLOSE_REASONS, ConnectionLimits, GatewayServer, GatewaySite

__all__ = [
    "CLIENT_CERTIFICATE_MESSAGE_LIMIT",
    "CLOSE_REASONS",
    "SUPPORTED_OPENSSL",
    "SUPPORTED_PYTHON",
    "ConnectionLimits",
    "GatewayServer",
    "GatewaySite",
    "check_runtime",
    "max_client_certificate_message",
]
