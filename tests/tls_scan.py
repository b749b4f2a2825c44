"""A real TLS scanner (sslyze) and Mozilla's "intermediate" profile, for the gateway and the
shipped nginx and HAProxy configurations (tests/test_tls_profile.py, tests/devrun/test_haproxy.py).

The profile is read from the copy sslyze ships (``sslyze/mozilla_tls_profile/5.7.json``),
so the check follows Mozilla's published guidelines rather than our own list. One
deliberate narrowing: the profile still allows three DHE suites in TLS 1.2; we offer none
(ECDHE only: no finite-field DH parameters to generate, size and rotate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from sslyze import (
    ScanCommand,
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)

_PROTOCOLS = {
    "SSLv2": ScanCommand.SSL_2_0_CIPHER_SUITES,
    "SSLv3": ScanCommand.SSL_3_0_CIPHER_SUITES,
    "TLSv1": ScanCommand.TLS_1_0_CIPHER_SUITES,
    "TLSv1.1": ScanCommand.TLS_1_1_CIPHER_SUITES,
    "TLSv1.2": ScanCommand.TLS_1_2_CIPHER_SUITES,
    "TLSv1.3": ScanCommand.TLS_1_3_CIPHER_SUITES,
}


# One name per group: Mozilla writes OpenSSL's (prime256v1), sslyze reports SECG's (secp256r1).
_GROUP_NAMES = {"prime256v1": "P-256", "secp256r1": "P-256", "secp384r1": "P-384"}
_GROUP_NAMES |= {"secp521r1": "P-521"}


def group_name(name: str) -> str:
    return _GROUP_NAMES.get(name, name)


@dataclass(frozen=True, kw_only=True)
class ScannedTls:
    """What a server accepted: cipher suites per protocol (IANA names), key exchange groups."""

    accepted: dict[str, frozenset[str]]
    groups: frozenset[str]


@dataclass(frozen=True, kw_only=True)
class TlsProfile:
    protocols: frozenset[str]
    tls12_ciphers: frozenset[str]  # IANA names
    tls13_ciphers: frozenset[str]
    groups: frozenset[str]  # X25519, P-256, P-384 (group_name)


def mozilla_intermediate() -> TlsProfile:
    text = resources.files("sslyze.mozilla_tls_profile").joinpath("5.7.json").read_text()
    profile = json.loads(text)["configurations"]["intermediate"]
    return TlsProfile(
        protocols=frozenset(profile["tls_versions"]),
        # No DHE (see the module docstring): ECDHE + AEAD only.
        tls12_ciphers=frozenset(c for c in profile["ciphers"]["iana"] if "_DHE_" not in c),
        tls13_ciphers=frozenset(profile["ciphersuites"]),
        groups=frozenset(group_name(g) for g in profile["tls_curves"]),
    )


def scan(port: int, host: str = "127.0.0.1") -> ScannedTls:
    """Scan ``host:port`` with sslyze (every protocol's suites, the supported groups)."""
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=host, port=port, ip_address=host),
        scan_commands={*_PROTOCOLS.values(), ScanCommand.ELLIPTIC_CURVES},
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    scans = result.scan_result
    assert scans is not None
    accepted: dict[str, frozenset[str]] = {}
    for protocol, command in _PROTOCOLS.items():
        attempt = getattr(scans, command.value)
        assert attempt.result is not None, f"{protocol} scan failed: {attempt.error_trace}"
        accepted[protocol] = frozenset(
            c.cipher_suite.name for c in attempt.result.accepted_cipher_suites
        )
    curves = scans.elliptic_curves
    assert curves.result is not None, f"group scan failed: {curves.error_trace}"
    groups = frozenset(group_name(c.name) for c in curves.result.supported_curves or [])
    return ScannedTls(accepted=accepted, groups=groups)


def profile_violations(scanned: ScannedTls, profile: TlsProfile | None = None) -> list[str]:
    """Everything ``scanned`` offers beyond (or lacks of) the profile; empty: it complies."""
    profile = profile or mozilla_intermediate()
    problems = []
    offered = {p for p, suites in scanned.accepted.items() if suites}
    if extra := offered - profile.protocols:
        problems.append(f"protocols beyond the profile: {sorted(extra)}")
    if missing := profile.protocols - offered:
        problems.append(f"protocols of the profile not offered: {sorted(missing)}")
    if extra := scanned.accepted.get("TLSv1.2", frozenset()) - profile.tls12_ciphers:
        problems.append(f"TLS 1.2 suites beyond the profile: {sorted(extra)}")
    if extra := scanned.accepted.get("TLSv1.3", frozenset()) - profile.tls13_ciphers:
        problems.append(f"TLS 1.3 suites beyond the profile: {sorted(extra)}")
    if missing := profile.tls13_ciphers - scanned.accepted.get("TLSv1.3", frozenset()):
        problems.append(f"TLS 1.3 suites of the profile not offered: {sorted(missing)}")
    if extra := scanned.groups - profile.groups:
        problems.append(f"groups beyond the profile: {sorted(extra)}")
    if missing := profile.groups - scanned.groups:
        problems.append(f"groups of the profile not offered: {sorted(missing)}")
    return problems
