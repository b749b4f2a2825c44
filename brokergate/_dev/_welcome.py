"""What ``dev run`` tells the developer once everything answers: a few lines, copyable."""

from __future__ import annotations

from brokergate._dev._bootstrap import DEMO_BROKER, FALLBACK_USER, BootstrapReport
from brokergate._dev._layout import DevLayout, DevPorts


def curl_command(layout: DevLayout, ports: DevPorts, password: str = "PASSWORD") -> str:
    """The curl line that logs the demo broker in by certificate."""
    return (
        f"curl --cacert {layout.relative(layout.server_ca_cert)} "
        f"--cert {layout.relative(layout.demo_p12)}:{password} --cert-type P12 "
        f"{ports.gateway_url}/"
    )


def password_mail_line(layout: DevLayout, report: BootstrapReport) -> str:
    if report.state.password_mail:
        return f"password mail:  {report.state.password_mail}"
    return (
        f"password mail:  arriving in {layout.relative(layout.mail_dir)}/ within seconds "
        "(the [mail] lines show it)"
    )


def welcome_lines(layout: DevLayout, ports: DevPorts, report: BootstrapReport) -> list[str]:
    """The text printed when the gateway answers (secrets: none; the password stays in
    the mail, which the dev user reads in the sink)."""
    lines = []
    if report.created:
        lines.append(f"created {len(report.created)} item(s): " + "; ".join(report.created))
    lines += [
        f"ready: {ports.gateway_url}/  (Ctrl-C stops everything)",
        f"demo broker {DEMO_BROKER.email} (broker number {DEMO_BROKER.broker_number}),"
        " logged in by certificate without any prompt:",
        f"  PKCS#12:        {layout.relative(layout.demo_p12)}",
        f"  {password_mail_line(layout, report)}",
        f"  try it:         {curl_command(layout, ports)}",
        f"                  (PASSWORD: {_password_source(report)})",
        f"  in a browser:   import {layout.relative(layout.server_ca_cert)} as an authority"
        " (Firefox: Settings > Privacy & Security > View Certificates > Authorities > Import),",
        f"                  then {layout.relative(layout.demo_p12)} under Your Certificates >"
        " Import with the mailed password; open the URL above (docs/broker-guide.md)",
        f"without a certificate: {ports.gateway_url}/_gateway/login/broker with broker number "
        f"{FALLBACK_USER.broker_number} and {FALLBACK_USER.email}; the TAN arrives as a"
        " [mail] line",
        f"the upstream alone (no gateway, no identity): {ports.upstream_url}/",
        "the CLI against this system (cert issue writes to "
        f"{layout.relative(layout.pkcs12_dir)}/):",
        f"  export BROKERGATE_CONFIG={layout.config_file}",
        f"your own settings: {_overlay_line(layout, report)}",
    ]
    return lines


def _password_source(report: BootstrapReport) -> str:
    """Where the password is to be read: the mail; printed by the sink only when the mail
    arrives during this run (a restart reuses the mail of an earlier one)."""
    if report.state.password_mail:
        return 'the "Passwort:" line of that mail'
    return 'the "Passwort:" line of that mail, printed as a [mail] line when it arrives'


def _overlay_line(layout: DevLayout, report: BootstrapReport) -> str:
    if report.overlay is not None:
        return f"{layout.relative(report.overlay)} applied (read on every start, never written)"
    return (
        f"none; put them in {layout.relative(layout.overlay_file)} (read on every start, "
        "never written; README)"
    )
