"""Shared pieces of the console's browser tests: the fixtures the Rust test prepared, one
chromium for the whole session (Debian's, through executable_path: nothing is downloaded),
and a logged-in page per user and language."""

import json
import os
import re

import pytest
from playwright.sync_api import sync_playwright

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

SHOTS = os.environ.get("HAECHI_CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="session")
def fx():
    with open(os.environ["HAECHI_CONSOLE_FIXTURES"]) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def pw():
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(pw):
    b = pw.chromium.launch(
        executable_path=os.environ.get("HAECHI_CHROMIUM", "/usr/bin/chromium"),
        headless=True,
        args=ARGS,
    )
    yield b
    b.close()


class Session:
    """A browser context (its own cookies) with one page."""

    def __init__(self, browser, fx, locale):
        self.fx = fx
        self.ctx = browser.new_context(
            ignore_https_errors=True,
            locale=locale,
            viewport={"width": 1400, "height": 1000},
        )
        self.page = self.ctx.new_page()
        self.dialogs = []
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def url(self, path):
        return self.fx["url"] + path

    def goto(self, path):
        return self.page.goto(self.url(path))

    def login(self, who, expect_ok=True):
        u = self.fx[who]
        self.goto("/console/login")
        self.page.get_by_label(re.compile("User ID|사용자 ID")).fill(u["user"])
        self.page.get_by_label(re.compile("^(Password|비밀번호)$")).fill(u["password"])
        with self.page.expect_navigation():
            self.page.get_by_role("button", name=re.compile("^(Log in|로그인)$")).click()
        if expect_ok:
            assert self.page.url.rstrip("/").endswith("/console"), self.page.url
        return self

    def shot(self, name):
        if SHOTS:
            os.makedirs(SHOTS, exist_ok=True)
            self.page.screenshot(path=os.path.join(SHOTS, name + ".png"))

    def close(self):
        self.ctx.close()


@pytest.fixture
def session(browser, fx):
    made = []

    def make(who=None, locale="en-US"):
        s = Session(browser, fx, locale)
        made.append(s)
        if who:
            s.login(who)
        return s

    yield make
    for s in made:
        s.close()
