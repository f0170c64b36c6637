"""Child processes vnfkit starts: tied to their parent's life, and stopped by pid, never by name."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence


def dying_with_parent(argv: Sequence[str], sig: str = "TERM") -> list[str]:
    """`argv`, run so that the kernel sends it SIG`sig` when its parent ends (PR_SET_PDEATHSIG,
    through util-linux's ``setpriv``, which keeps it across the exec): a daemon started by a parent
    killed with SIGKILL, or by SIGTERM with Python's default action, then stops too. The signal is
    tied to the *thread* that starts the child, so this applies only from the main thread (which
    ends with the process), and only where ``setpriv`` is installed; otherwise `argv` as it is. The
    daemon must not fork itself into the background (a forked child does not inherit it)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return list(argv)
    return [setpriv, f"--pdeathsig={sig}", *argv]


def stop_group(p: subprocess.Popen[bytes], grace_s: float = 3.0) -> int | None:
    """SIGTERM the process group led by ``p``, SIGKILL it after ``grace_s``; its exit code (None
    if it still has not exited 10 s after the SIGKILL)."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
    return p.returncode
