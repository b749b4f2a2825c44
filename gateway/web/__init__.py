"""The gateway's own pages under ``/_gateway/``: handlers, templates, translations.

* ``_routes``: the ONE route table (which path and method reach which handler) and the
  ``setup_logins`` extension.
* ``_core_pages``: login chooser, step-up, certificate problem, logout, 2FA "Not now".
* ``_policy_pages``: the route policy's decision as a page, for requests bound upstream.
* ``_error_pages``: the one middleware where domain errors become pages.
* ``_firm_access``: the firm's clear pages (issue 13): "you may not log in" (whom to ask)
  and "no right for this product".
* ``_login``, ``_broker_login``, ``_prompt``, ``_finish_login``: the login pages (password
  + second factor, passkey, broker number + TAN, the 2FA prompt, activation).
* ``_account``, ``_email_change``: "Mein Konto".
* ``_banner``: the expiry banner and the account menu on our pages.
* ``_endpoints``: ``/healthz``, JWKS, CRLs.
* ``_common``: what every login/account handler shares.
* ``_pages``, ``_i18n``: rendering (Jinja2) and translations; ``templates/``,
  ``locales/<lang>/*.json`` (German first), ``static/``.

The services behind the pages are in ``gateway.logins`` (no aiohttp there).
"""
