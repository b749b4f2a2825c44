"""Runs the dev system: mail sink and demo upstream in this process, gateway and renewal
as child processes; stops all of it on Ctrl-C (SIGINT) or SIGTERM.

Children run in their own session (process group), so a Ctrl-C in the terminal reaches
only the supervisor, which then stops each child in order with SIGTERM (the children's
graceful path) and, after a bounded wait, SIGKILL. On Linux each child also asks the
kernel for SIGTERM when the supervisor dies, so even ``kill -9`` of the supervisor leaves
no orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from brokergate._dev._layout import LOOPBACK, DevLayout, DevPorts
from brokergate._dev._mail_sink import MailSink, ReceivedMail, start_mail_sink
from brokergate._dev._upstream import UpstreamSettings, create_upstream_app
from store import Clock

READY_TIMEOUT = 90.0  # seconds; the gateway's first start makes its signing key
STOP_TIMEOUT = 15.0  # seconds a child gets after SIGTERM before SIGKILL
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True, kw_only=True)
class Child:
    name: str
    argv: tuple[str, ...]


def child_commands(layout: DevLayout) -> tuple[Child, ...]:
    """The processes ``dev run`` starts: the real entry points, with the generated config."""
    base = (sys.executable, "-m", "brokergate", "--config", str(layout.config_file))
    return (
        Child(name="gateway", argv=(*base, "gateway", "serve")),
        Child(name="renewal", argv=(*base, "renewal", "run")),
    )


def child_environment() -> dict[str, str]:
    """This environment without BROKERGATE_* (the generated config decides everything)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKERGATE_")}
    env["PYTHONUNBUFFERED"] = "1"  # log lines arrive as they are written
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    """Owns the sink, the upstream and the children from :meth:`run` until it returns.

    Args:
        on_ready: called once the gateway answers (prints the welcome text).
        on_mail: called for each mail the sink keeps.
    """

    def __init__(
        self,
        *,
        layout: DevLayout,
        ports: DevPorts,
        clock: Clock,
        out: TextIO,
        on_ready: Callable[[], None],
        on_mail: Callable[[ReceivedMail], None],
        ready_timeout: float = READY_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self._layout = layout
        self._ports = ports
        self._clock = clock
        self._out = out
        self._on_ready = on_ready
        self._on_mail = on_mail
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._children: dict[str, asyncio.subprocess.Process] = {}
        self._relays: list[asyncio.Task[None]] = []

    def say(self, text: str) -> None:
        print(f"[dev] {text}", file=self._out, flush=True)

    async def run(self) -> int:
        """Start everything, wait for a signal or a failing child, stop everything.

        Returns:
            0 after a requested stop; 1 if a part failed to start or died.
        """
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sink_server: asyncio.Server | None = None
        runner: web.AppRunner | None = None
        try:
            sink = MailSink(
                folder=self._layout.mail_dir,
                out=self._out,
                clock=self._clock,
                on_mail=self._on_mail,
            )
            sink_server = await start_mail_sink(sink, host=LOOPBACK, port=self._ports.smtp)
            self.say(
                f"mail sink on smtp://{LOOPBACK}:{self._ports.smtp} -> "
                f"{self._layout.relative(self._layout.mail_dir)}/"
            )
            runner = await self._start_upstream()
            self.say(f"demo upstream on {self._ports.upstream_url}")
            for child in child_commands(self._layout):
                await self._start_child(child)
            outcome = await self._wait_ready(stop)
            if outcome == "ready":
                self._on_ready()
                outcome = await self._wait_end(stop)
            return 0 if outcome == "stopped" else 1
        except OSError as exc:
            self.say(
                f"cannot start: {exc} (is another 'make run' still running? the ports "
                "can be changed with --gateway-port, --upstream-port, --smtp-port)"
            )
            return 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self._stop_children()
            if runner is not None:
                await runner.cleanup()
            if sink_server is not None:
                sink_server.close()
                await sink_server.wait_closed()
            self.say("stopped")

    async def _start_upstream(self) -> web.AppRunner:
        settings = UpstreamSettings(
            gateway_url=self._ports.gateway_url,
            own_url=self._ports.upstream_url,
            gateway_ca_file=str(self._layout.server_ca_cert),
        )
        runner = web.AppRunner(
            create_upstream_app(settings, clock=self._clock), access_log=None, handle_signals=False
        )
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, self._ports.upstream).start()
        return runner

    async def _start_child(self, child: Child) -> None:
        proc = await asyncio.create_subprocess_exec(
            *child.argv,
            cwd=self._layout.root,
            env=child_environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops us in order
            preexec_fn=_die_with_parent,
        )
        self._children[child.name] = proc
        assert proc.stdout is not None
        self._relays.append(asyncio.create_task(self._relay(child.name, proc.stdout)))
        self.say(f"started {child.name} (pid {proc.pid})")

    async def _relay(self, name: str, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            print(f"[{name}] {text}", file=self._out, flush=True)

    def _exited(self) -> str | None:
        for name, proc in self._children.items():
            if proc.returncode is not None:
                return name
        return None

    async def _wait_ready(self, stop: asyncio.Event) -> str:
        """Poll the gateway's /healthz (bounded) while watching the children and the stop."""
        context = ssl.create_default_context(cafile=str(self._layout.server_ca_cert))
        # 127.0.0.1 (not "localhost", which may resolve to ::1 first): where the gateway binds.
        url = f"https://{LOOPBACK}:{self._ports.gateway}/healthz"
        deadline = asyncio.get_running_loop().time() + self._ready_timeout
        async with ClientSession(timeout=ClientTimeout(total=3)) as client:
            while asyncio.get_running_loop().time() < deadline:
                if stop.is_set():
                    return "stopped"
                if (name := self._exited()) is not None:
                    self._report_exit(name)
                    return "failed"
                with contextlib.suppress(ClientError, OSError, TimeoutError):
                    async with client.get(url, ssl=context) as response:
                        if response.status == 200:
                            return "ready"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
        self.say(f"the gateway did not answer on {url} within {self._ready_timeout:.0f} s")
        return "failed"

    async def _wait_end(self, stop: asyncio.Event) -> str:
        waits = {asyncio.create_task(p.wait()): name for name, p in self._children.items()}
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
        for task in [stopper, *waits]:
            task.cancel()
        if stopper in done:
            self.say("stopping (Ctrl-C or SIGTERM) ...")
            return "stopped"
        name = next(waits[t] for t in done if t in waits)
        self._report_exit(name)
        return "failed"

    def _report_exit(self, name: str) -> None:
        code = self._children[name].returncode
        self.say(f"{name} exited with code {code}; stopping everything (its output is above)")

    async def _stop_children(self) -> None:
        """SIGTERM to each child's process group, bounded wait, then SIGKILL."""
        for name, proc in reversed(self._children.items()):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), self._stop_timeout)
                except TimeoutError:
                    self.say(f"{name} did not stop within {self._stop_timeout:.0f} s; killing it")
            # The group also holds whatever the child started (gateway workers): none may stay.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if self._relays:
            await asyncio.gather(*self._relays, return_exceptions=True)
