"""Drives the dashboard in real headless Chromium (Playwright), against a host
the e2e test started and filled: topic `jobs`, subscription `jobs` (plugin
`flaky`, two attempts), and message `job-7` in its dead letters.

Usage: dashboard.py BASE_URL ADMIN_TOKEN READ_TOKEN OUT_DIR
Exits non-zero on the first expectation that fails; screenshots of the main
pages go to OUT_DIR; a JSON line with the page's weight and load time is
printed last.
"""

import json
import os
import sys
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, ADMIN, READ, OUT = sys.argv[1:5]
CHROMIUM = os.environ.get("SWITCHYARD_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 30_000


def shot(page, name):
    page.screenshot(path=os.path.join(OUT, f"{name}.png"), full_page=True)


def sign_in(page, token):
    page.goto(f"{BASE}/ui")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def publish(base, token, topic, message_id, payload):
    """Publish one message through the API, as a producer would."""
    body = json.dumps({"id": message_id, "payload": payload}).encode()
    request = urllib.request.Request(
        f"{base}/v1/topics/{topic}/messages",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200, answer.status


def main():
    os.makedirs(OUT, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: d.accept())

        # The page's weight and its first load, measured on the login page.
        sizes = {}
        page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body())) if "/ui" in r.url else None)
        sign_in(page, ADMIN)
        timing = page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return { dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd }; }"
        )

        # Overview: health, lag and dead letters by subscription.
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        expect(page.locator("#total-lag")).to_have_text("0")
        expect(page.get_by_role("cell", name="jobs", exact=True)).to_be_visible()
        shot(page, "overview")

        # Subscriptions, then the subscription: its lag and dead-letter count.
        page.get_by_role("link", name="Subscriptions").click()
        expect(page.get_by_role("heading", name="Subscriptions")).to_be_visible()
        page.get_by_role("link", name="jobs", exact=True).click()
        expect(page.get_by_role("heading", name="Subscription jobs")).to_be_visible()
        expect(page.locator("#sub-lag")).to_have_text("0")
        expect(page.locator("#sub-dead-lettered")).to_have_text("1")
        expect(page.locator("#sub-state")).to_have_text("running")
        expect(page.locator("#sub-plugin")).to_have_text("flaky@1 (latest)")
        shot(page, "subscription")

        # The dead letter: every attempt's error and the plugin's log line.
        page.get_by_role("link", name="job-7").click()
        expect(page.get_by_role("heading", name="Dead letter job-7")).to_be_visible()
        attempts = page.get_by_role("table", name="Attempts")
        expect(attempts).to_contain_text("flaky: attempt 1")
        expect(attempts).to_contain_text("flaky: attempt 2")
        expect(attempts).to_contain_text("flaky: attempt 1 of 5")
        expect(page.locator("#reason")).to_contain_text("flaky: attempt 2")
        shot(page, "dead-letter")

        # Pause, so the redriven message waits; redrive; it leaves the list.
        page.get_by_role("link", name="jobs", exact=True).click()
        page.get_by_role("button", name="Pause").click()
        expect(page.locator("#sub-state")).to_have_text("paused")
        page.get_by_role("link", name="job-7").click()
        page.get_by_role("button", name="Redrive", exact=True).click()
        expect(page.get_by_role("heading", name="Subscription jobs")).to_be_visible()
        expect(page.locator("#no-dead-letters")).to_be_visible()
        expect(page.get_by_role("link", name="job-7")).to_have_count(0)
        page.get_by_role("button", name="Resume").click()
        expect(page.locator("#sub-state")).to_have_text("running")

        # A message trace by id.
        page.get_by_role("link", name="Trace").click()
        page.get_by_label("Message id").fill("job-7")
        page.get_by_role("button", name="Trace").click()
        expect(page.get_by_role("heading", name="jobs")).to_be_visible()
        expect(page.get_by_role("table", name="Attempts")).to_contain_text("flaky: attempt 1")
        shot(page, "trace")

        # Topics, browsing a partition, plugins.
        page.get_by_role("link", name="Topics").click()
        page.get_by_role("link", name="jobs", exact=True).click()
        expect(page.get_by_role("heading", name="Topic jobs")).to_be_visible()
        expect(page.locator("main")).to_contain_text('"order": 7')
        shot(page, "topic")
        page.get_by_role("link", name="Plugins").click()
        expect(page.get_by_role("cell", name="flaky", exact=True)).to_be_visible()
        expect(page.get_by_role("row", name="flaky")).to_contain_text("Rust")
        shot(page, "plugins")

        # Live: a tail of the topic shows a message published after it began
        # (a streamed fetch that sends the token).
        page.get_by_role("link", name="Live").click()
        page.get_by_label("Topic").select_option("jobs")
        page.get_by_role("button", name="Tail new messages").click()
        expect(page.locator("main")).to_contain_text("Following topic jobs (connected)")
        publish(BASE, ADMIN, "jobs", "live-1", "seen live")
        expect(page.locator(".feed")).to_contain_text("seen live")
        shot(page, "live")

        # Keyboard: the navigation is in tab order and Enter follows it.
        page.locator("header .brand").focus()
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement.textContent")
        assert focused == "Topics", focused
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Topics")).to_be_visible()

        # A read-only token sees everything, with the buttons disabled.
        reader = browser.new_context(viewport={"width": 1280, "height": 900})
        reader.set_default_timeout(TIMEOUT_MS)
        rpage = reader.new_page()
        sign_in(rpage, READ)
        expect(rpage.locator("#who")).to_contain_text("read")
        rpage.goto(f"{BASE}/ui#/subscriptions/jobs")
        expect(rpage.locator("#sub-state")).to_be_visible()
        expect(rpage.get_by_role("button", name="Pause")).to_be_disabled()
        expect(rpage.get_by_role("button", name="Redrive all")).to_be_disabled()

        # A phone: nothing wider than the screen.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        phone.set_default_timeout(TIMEOUT_MS)
        ppage = phone.new_page()
        sign_in(ppage, ADMIN)
        expect(ppage.locator("#total-lag")).to_be_visible()
        overflow = ppage.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow} px wider than a phone"
        shot(ppage, "overview-phone")

        assert not errors, f"script errors: {errors}"
        browser.close()
    weight = sum(v for k, v in sizes.items())
    print(json.dumps({"page_bytes": weight, "assets": len(sizes), **timing}))


if __name__ == "__main__":
    main()
