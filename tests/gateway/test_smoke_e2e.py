from __future__ import annotations

import aiohttp

from tests.gateway.conftest import PKI, echoed_headers


async def test_valid_certificate_reaches_upstream(pki: PKI, start_gateway, clock) -> None:
    gw = await start_gateway()
    user = pki.make_user(email="erika@example.org", broker="12/345/6789")
    cert = pki.issue(user)
    async with aiohttp.ClientSession() as client:
        async with client.get(gw.url + "/portal/home", ssl=cert.ssl_context(pki.server_ca)) as r:
            text = await r.text()
            assert r.status == 200, text
    headers = echoed_headers(text)
    assert headers["x-brokergate-broker-number"] == ["12/345/6789"]
