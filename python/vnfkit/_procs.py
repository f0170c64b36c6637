"""Stopping a child process group that vnfkit started (by its pid, never by name)."""

from __future__ import annotations

import os
import signal
import subprocess


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
