"""The fault suite's measured figures, kept as a JSON artifact (issue 18: "figures").

Each test asserts its bounds and records what it measured under the fault's name::

    figures.record("postgres_outage", granted_beyond_level=0, recovery_seconds=0.06, ...)

A fault run behind nginx (forward-auth) is recorded as ``"<fault> behind nginx"``; what both
runs pass as ``compared`` (recovery times, seconds) is put side by side under
``behind_nginx_vs_standalone`` once both are in, with the ratio nginx / standalone::

    figures.record("worker_killed", front=system.front, compared={"restart_seconds": 1.2})

The file is rewritten after every record, so a run that fails half-way keeps what the
earlier tests measured; each run starts it anew. Where: ``$BROKERGATE_FAULT_FIGURES``
(CI keeps it as an artifact), else ``build/fault-figures.json`` in the checkout (ignored
by git; pytest's temporary folders are pruned by the next runs); each record is printed
too (``pytest -s``). The machine (cores, load when the suite started) is written with them,
since every latency and recovery time depends on it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest import REPO

FIGURES_ENV = "BROKERGATE_FAULT_FIGURES"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    load = os.getloadavg()
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in load],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


@dataclass(kw_only=True)
class Figures:
    """The figures of one run; owns the JSON file at ``path``."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data.setdefault("machine", machine())

    def record(
        self,
        fault: str,
        *,
        front: str = "standalone",
        compared: dict[str, float] | None = None,
        **values: Any,
    ) -> None:
        """Add ``values`` under ``fault`` (seconds, counts …, JSON-serialisable) and save.

        Args:
            fault: the fault's name; the same for every front.
            front: ``"standalone"`` or ``"nginx"`` (the run behind nginx forward-auth).
            compared: seconds to put side by side with the other front's run of ``fault``.
            values: the figures.
        """
        key = fault if front == "standalone" else f"{fault} behind {front}"
        entry = self.data.setdefault(key, {"recorded": time.strftime("%H:%M:%S")})
        if compared is not None:
            values = {**values, "compared": compared}
        entry.update(values)
        print(f"figures {key}: {json.dumps(values, sort_keys=True, default=str)}")
        self._compare(fault)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str) + "\n")

    def _compare(self, fault: str) -> None:
        standalone = self.data.get(fault, {}).get("compared")
        nginx = self.data.get(f"{fault} behind nginx", {}).get("compared")
        if not standalone or not nginx:
            return
        side_by_side: dict[str, Any] = {}
        for name in sorted(set(standalone) & set(nginx)):
            a, b = standalone[name], nginx[name]
            # a ratio of two near-zero times says nothing: below 10 ms it is left out
            ratio = round(b / a, 2) if a >= 0.01 else None
            side_by_side[name] = {"standalone": a, "nginx": b, "nginx/standalone": ratio}
        self.data.setdefault("behind_nginx_vs_standalone", {})[fault] = side_by_side


def figures_path() -> Path:
    configured = os.environ.get(FIGURES_ENV)
    return Path(configured) if configured else REPO / "build" / "fault-figures.json"
