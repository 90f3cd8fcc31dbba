"""Small helpers for the processes around a Prefect server (no side effects on import)."""

from __future__ import annotations

import subprocess
import urllib.request


def healthy(api_url: str) -> bool:
    """Whether a Prefect API answers its health check."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    """Ask a process to stop, and kill it if it has not within 30 seconds."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
