"""Headless Chromium helpers: render a report page to PNG (checks, docs, tests).

Uses the system Chromium (Debian's ``chromium`` package) and never downloads a
browser. The flags keep it off the network: the pages facepii writes are
self-contained and need none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def find_chromium() -> str | None:
    for name in (os.environ.get("FACEPII_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def screenshot(page: str | Path, png: str | Path, width: int = 1280, height: int = 2400,
               timeout: float = 90) -> Path:
    """Load ``page`` (a local HTML file) in headless Chromium and save a screenshot."""
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found (install Debian's chromium package)")
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", Path(page).resolve().as_uri()]
        subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not png.is_file():
        raise RuntimeError(f"Chromium wrote no screenshot for {page}")
    return png
