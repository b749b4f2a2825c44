"""The mTLS gateway: TLS, client-certificate identity, sessions, logins, route policy, proxy."""

from gateway._settings import GatewaySettings

__all__ = ["GatewaySettings"]
