"""Signing in to the console in Chromium: by the link ``errands token --operator
--console-url`` prints, or by pasting a token; the token never travels in a URL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page, Request, expect

from errands.sync.auth import make_token
from tests.client.processes import SECRET, SyncServer

pytestmark = pytest.mark.browser


def test_the_link_signs_in_and_keeps_the_token_out_of_urls(
    open_tab: Callable[..., Page], sign_in_link: str, service: SyncServer
) -> None:
    token = sign_in_link.partition("#token=")[2]
    sent: list[Request] = []
    tab = open_tab("about:blank")
    tab.on("request", lambda request: sent.append(request))  # noqa: PLW0108 -- Playwright cannot wrap a bound builtin

    tab.goto(sign_in_link)

    tab.locator("#view-jobs[data-loaded=true]").wait_for()
    expect(tab.locator("#user")).to_have_text("ops")
    expect(tab.locator("#live")).to_have_attribute("data-status", "live")
    assert tab.url == f"{service.url}/console#/jobs"  # out of the address bar and history
    assert tab.evaluate("sessionStorage.getItem('errands.console.token')") == token
    assert tab.evaluate("localStorage.getItem('errands.console.token')") is None
    assert {r.url.split("?")[0] for r in sent} >= {
        f"{service.url}/console",
        f"{service.url}/v1/me",
        f"{service.url}/v1/shapes/background_jobs/stream",
    }
    assert all(token not in r.url for r in sent)
    assert all(not r.headers.get("referer") for r in sent)
    assert any(r.headers.get("authorization") == f"Bearer {token}" for r in sent)


def test_a_pasted_token_signs_in_and_sign_out_forgets_it(
    open_tab: Callable[..., Page], service: SyncServer
) -> None:
    tab = open_tab(f"{service.url}/console")
    tab.locator("#token").fill(make_token(SECRET, "night-shift", operator=True))
    tab.locator("#remember").check()
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator("#user")).to_have_text("night-shift")
    assert tab.evaluate("localStorage.getItem('errands.console.token')")

    tab.reload()  # remembered: still signed in
    expect(tab.locator("#user")).to_have_text("night-shift")
    tab.get_by_role("button", name="Sign out").click()

    expect(tab.locator("#signin")).to_be_visible()
    expect(tab.locator("#app")).to_be_hidden()
    assert tab.evaluate("localStorage.getItem('errands.console.token')") is None
    assert tab.evaluate("sessionStorage.getItem('errands.console.token')") is None


def test_a_users_token_is_refused_with_a_reason(
    open_tab: Callable[..., Page], service: SyncServer
) -> None:
    tab = open_tab(f"{service.url}/console", refusals=True)
    tab.locator("#token").fill(make_token(SECRET, "alice"))
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator("#signin-error")).to_contain_text("alice, who is not an operator")
    expect(tab.locator("#app")).to_be_hidden()

    tab.locator("#token").fill("not-a-token")
    tab.get_by_role("button", name="Sign in").click()
    expect(tab.locator("#signin-error")).to_contain_text("the token is not valid")
    assert tab.evaluate("sessionStorage.getItem('errands.console.token')") is None


def test_a_link_with_a_users_token_does_not_sign_in(
    open_tab: Callable[..., Page], service: SyncServer
) -> None:
    token = make_token(SECRET, "alice")
    tab = open_tab(f"{service.url}/console#token={token}", refusals=True)
    expect(tab.locator("#signin-error")).to_contain_text("not an operator")
    assert token not in tab.url
    assert tab.evaluate("sessionStorage.getItem('errands.console.token')") is None
