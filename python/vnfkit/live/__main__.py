"""``python -m vnfkit.live {master,backup} SPEC_FILE``: one node of a fault-tolerant live middlebox.

Started by the supervisor (:mod:`vnfkit.live.supervisor`), never by hand: it reads the
:class:`~vnfkit.live.frames.NodeSpec` JSON file, writes one JSON event per line on stdout (``ready``,
``live``, and a final ``summary``) and runs until SIGTERM (the backup: until SIGTERM, forwarding
after a failover).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _emit(ev: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(ev) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    from .frames import NodeSpec

    if len(argv) != 2 or argv[0] not in ("master", "backup"):
        print("usage: python -m vnfkit.live {master,backup} SPEC_FILE", file=sys.stderr)
        return 2
    spec = NodeSpec.loads(Path(argv[1]).read_text())
    if argv[0] == "master":
        from .master import run_master

        stats = run_master(spec, _emit)
    else:
        from .backup_node import run_backup

        stats = run_backup(spec, _emit)
    _emit({"event": "summary", "role": argv[0], **stats})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
