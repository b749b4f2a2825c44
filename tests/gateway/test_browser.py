"""Real headless Chromium with TWO client certificates (ours and another insurer's).

What is measured (docs/gateway.md "Browsers"): with an auto-select rule that filters on
nothing, Chromium picks among the certificates whose issuer the server named in its
CertificateRequest — so our CA names alone make it choose our certificate; when the
server names the other CA instead, the same browser picks the other certificate.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.gateway.conftest import Brokers, ClientCert, ServerTLS, foreign_certificate
from tests.gateway.helpers import run_tool

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not shutil.which("chromium") or not shutil.which("pk12util"),
        reason="chromium and libnss3-tools are needed (make system-deps)",
    ),
]


def _foreign_p12(cert: ClientCert) -> bytes:
    key = serialization.load_pem_private_key(cert.key_path.read_bytes(), None)
    return pkcs12.serialize_key_and_certificates(
        b"foreign",
        key,
        cert.certificate,
        None,
        serialization.BestAvailableEncryption(b"pw"),  # type: ignore[arg-type]
    )


async def _nss_home(
    tmp: Path, server_tls: ServerTLS, ours: ClientCert, foreign: ClientCert
) -> Path:
    home = tmp / "home"
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    assert (await run_tool("certutil", "-N", "-d", f"sql:{db}", "--empty-password"))[0] == 0
    foreign_p12 = tmp / "foreign.p12"
    foreign_p12.write_bytes(_foreign_p12(foreign))
    # the foreign one first: a browser that takes "the first certificate" would take it
    for p12, password in ((foreign_p12, "pw"), (ours.p12_path, ours.password)):
        code, _out, err = await run_tool(
            "pk12util", "-i", str(p12), "-d", f"sql:{db}", "-W", password, "-K", ""
        )
        assert code == 0, err
    code, _, err = await run_tool(
        "certutil",
        "-A",
        "-d",
        f"sql:{db}",
        "-n",
        "server CA",
        "-t",
        "C,,",
        "-a",
        "-i",
        str(server_tls.ca),
    )
    assert code == 0, err
    return home


async def _chromium(home: Path, profile: Path, url: str, filters: list[dict[str, Any]]) -> str:
    origin = url.split("/", 3)[:3]
    prefs = {
        "profile": {
            "content_settings": {
                "exceptions": {
                    "auto_select_certificate": {
                        f"{'/'.join(origin)},*": {"setting": {"filters": filters}}
                    }
                }
            }
        }
    }
    (profile / "Default").mkdir(parents=True)
    (profile / "Default" / "Preferences").write_text(json.dumps(prefs))
    _code, out, _err = await run_tool(
        "env",
        f"HOME={home}",
        "timeout",
        "60",
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
        limit=90,
    )
    return out


async def test_chromium_picks_our_certificate_by_the_ca_names(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, tmp_path: Path
) -> None:
    gw = await start_gateway()
    ours = brokers.issue(brokers.user(email="browser@example.org"))
    foreign = foreign_certificate(tmp_path)
    home = await _nss_home(tmp_path, server_tls, ours, foreign)
    # 1. a rule that filters on nothing: the server's CA names decide
    page = await _chromium(home, tmp_path / "p1", f"{gw.url}/portal", [{}])
    assert "browser@example.org" in page, page[:2000]
    assert "X-Brokergate-Cert-Serial" in page and ours.serial in page
    # 2. the usual deployment rule: filter on our issuing CA
    with brokers.sessions() as db:
        from ca import load_trust_material

        issuing_cn = (
            load_trust_material(db)
            .issuing_by_generation[1]
            .subject.rfc4514_string()
            .split(",")[0]
            .removeprefix("CN=")
        )
    page = await _chromium(
        home, tmp_path / "p2", f"{gw.url}/portal", [{"ISSUER": {"CN": issuing_cn}}]
    )
    assert "browser@example.org" in page


async def test_chromium_follows_the_names_the_server_sends(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, tmp_path: Path
) -> None:
    """Negative control: name the OTHER insurer's CA and Chromium offers that certificate,
    which the gateway then explains as not ours."""
    from cryptography import x509

    from gateway import set_client_ca_names

    gw = await start_gateway()
    ours = brokers.issue(brokers.user(email="browser2@example.org"))
    foreign = foreign_certificate(tmp_path)
    foreign_ca = x509.load_pem_x509_certificate((tmp_path / "foreign-ca.pem").read_bytes())
    set_client_ca_names(gw.tls, [foreign_ca])
    home = await _nss_home(tmp_path, server_tls, ours, foreign)
    page = await _chromium(home, tmp_path / "p3", f"{gw.url}/portal", [{}])
    assert "We do not know this certificate" in page, page[:2000]  # headless Chromium sends en-US


@pytest.mark.slow
async def test_chromium_without_a_rule_waits_on_its_picker(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, tmp_path: Path
) -> None:
    """Measured: with no auto-select rule Chromium does not choose by itself, even though
    only one certificate matches our CA names: it waits for the broker at its picker
    (headless: forever, so `timeout` ends it). The CA names shorten the picker's list;
    selecting without a prompt needs the AutoSelectCertificateForUrls policy."""
    gw = await start_gateway()
    ours = brokers.issue(brokers.user(email="browser3@example.org"))
    home = await _nss_home(tmp_path, server_tls, ours, foreign_certificate(tmp_path))
    profile = tmp_path / "p4"
    profile.mkdir()
    code, page, _err = await run_tool(
        "env",
        f"HOME={home}",
        "timeout",
        "15",
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--dump-dom",
        f"{gw.url}/portal",
        limit=60,
    )
    assert code == 124 and page == "", (code, page[:500])  # killed by timeout, nothing loaded
