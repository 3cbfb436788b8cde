"""Debian's Chromium for the page tests, driven by Playwright (which downloads no browser of
its own here), and where screenshots go for people to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.sync_api import Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium's own background traffic is refused on a closed network; turn it off.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("GRIDWATCH_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
