"""The fault suite's measured figures, kept as a JSON artifact (issue 18: "figures").

Each test asserts its bounds and records what it measured under the fault's name::

    figures.record("postgres_outage", granted_beyond_level=0, recovery_seconds=0.06, ...)

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

    def record(self, fault: str, **values: Any) -> None:
        """Add ``values`` under ``fault`` (seconds, counts …, JSON-serialisable) and save."""
        entry = self.data.setdefault(fault, {"recorded": time.strftime("%H:%M:%S")})
        entry.update(values)
        print(f"figures {fault}: {json.dumps(values, sort_keys=True, default=str)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str) + "\n")


def figures_path() -> Path:
    configured = os.environ.get(FIGURES_ENV)
    return Path(configured) if configured else REPO / "build" / "fault-figures.json"
