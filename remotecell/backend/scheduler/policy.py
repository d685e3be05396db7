"""How many runners a control plane keeps, and for how long: the runner policy.

Declared once, here beside the queue that applies it (``scheduler/queue.py``); each
field's ``help`` is what ``remotecell serve --help`` says of its flag
(``backend/config.py`` turns the fields into ``serve`` options).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunnerPolicy:
    scaledown_window: float = field(
        default=60.0, metadata={"help": "Seconds an idle runner stays warm."}
    )
    session_idle_timeout: float = field(
        default=1800.0,
        metadata={"help": "Seconds a session's runner (session=...) stays after its last cell."},
    )
    min_containers: int = field(default=0, metadata={"help": "Runners kept warm at all times."})
    max_runners: int = field(
        default=8, metadata={"help": "Runners at most, busy or idle.", "minimum": 1}
    )
    prewarm: int = field(default=0, metadata={"help": "Runners to start at once, before any job."})
