"""``brokergate dev run``: the whole system on one machine, on embedded defaults.

Bootstrap (secrets, schema, CA, dev server certificate, demo users and PKCS#12), a
demo upstream, an SMTP sink, and a supervisor for the real gateway and renewal
processes. Development only: it binds loopback addresses and keeps keys in
``certs-dev/`` and ``data/``.
"""

from brokergate._dev._bootstrap import (
    DEMO_BROKER,
    FALLBACK_USER,
    BootstrapReport,
    DemoUser,
    DevState,
    bootstrap,
    render_dev_config,
)
from brokergate._dev._layout import LOOPBACK, DevLayout, DevPorts
from brokergate._dev._mail_sink import MailSink, ReceivedMail, read_mail, start_mail_sink, text_body
from brokergate._dev._secrets import DevError, DevSecretError, ensure_secret_file
from brokergate._dev._server_certs import ServerCertPaths, ensure_server_certificates
from brokergate._dev._supervisor import Supervisor, child_commands, child_environment
from brokergate._dev._upstream import AssertionVerifier, UpstreamSettings, create_upstream_app
from brokergate._dev._welcome import curl_command, welcome_lines

__all__ = [
    "DEMO_BROKER",
    "FALLBACK_USER",
    "LOOPBACK",
    "AssertionVerifier",
    "BootstrapReport",
    "DemoUser",
    "DevError",
    "DevLayout",
    "DevPorts",
    "DevSecretError",
    "DevState",
    "MailSink",
    "ReceivedMail",
    "ServerCertPaths",
    "Supervisor",
    "UpstreamSettings",
    "bootstrap",
    "child_commands",
    "child_environment",
    "create_upstream_app",
    "curl_command",
    "ensure_secret_file",
    "ensure_server_certificates",
    "read_mail",
    "render_dev_config",
    "start_mail_sink",
    "text_body",
    "welcome_lines",
]
