"""Who is there, and may they: certificate identity, sessions, route policy.

* ``_middleware``: the per-request authentication (certificate, session, single sign-on)
  and the session API the pages use (``complete_login``, ``logout``, ``require_csrf``).
* ``_certificate_identity``: a presented certificate → an identity or a clear problem
  (expired, revoked, unknown CA, retired generation…), one pure decision.
* ``_chain_verification``: the ONE use of ``cryptography.x509.verification``.
* ``_trust_cache``: the per-replica cache of certificate rows, users and trust material,
  with its staleness bound (revocation within 5 s on every replica).
* ``_terminator``: the client certificate as a TLS terminator in front forwards it.
* ``_sessions``: server-side sessions in the store, and their per-replica cache.
* ``_session_rules``: the pure session rules — idle timeout, absolute lifetime, CSRF,
  the cookie.
* ``_decision_memo``: the per-connection memo of a plain allow (direct TLS mode, issue
  11): what is reused, until when, and what ends it.
* ``_route_policy``: which level a path needs, and the decision (allow, login, step-up,
  2FA prompt, certificate problem) as a pure function of values and the clock.

Next rooms: ``gateway.web`` (the gateway's own pages) or ``gateway.proxy`` (upstream).
"""
