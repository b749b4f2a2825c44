"""To the upstream portal and back: the reverse proxy and what it tells the portal.

* ``_upstream_handler``: the catch-all route — identity headers + signed assertion, then
  forward.
* ``_identity_headers``: the ``X-Brokergate-*`` headers the portal receives (names and
  values).
* ``_assertion``: the signed assertion (JWT, ES256) and its keys (JWKS).
* ``_header_rewrite``: the request and response header rewrite (pure, property-tested):
  hop-by-hop headers, X-Forwarded-*, every client-sent identity header stripped.
* ``_reverse_proxy``: one request or WebSocket, streamed both ways.
* ``_http1_pool``: the lean pooled HTTP/1.1 client of the plain-HTTP leg.
* ``_upstream``: the upstream connections of one app (pool + WebSocket client).
* ``_websocket_guard``: a proxied WebSocket closes when its session ends.
* ``_forwarder``: the proxy and terminator mode wired into ``create_app``.
"""
