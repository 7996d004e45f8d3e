#!/usr/bin/env python3
"""Warren's web UI in a real headless Chromium, driven through Selenium, as self-checking tests.

Each test works the UI the way an operator would (log in, fill forms, click, read the page) and
checks the result through the management API (and, for the connection test, through pika).
Chromium and chromedriver are Debian's (/usr/bin/chromium, /usr/bin/chromedriver; override with
CHROMIUM and CHROMEDRIVER); Selenium Manager never downloads anything.

Environment: MGMT_URL (http://127.0.0.1:15672), AMQP_URL (amqp://guest:guest@127.0.0.1:5672/%2F),
UI_SCREENSHOTS (a directory: the screenshot test saves PNGs there; unset: it only renders them),
UI_SCREENSHOTS_SETTLE (seconds the queue page and then the overview stay open before their
screenshots, so that the charts have a few points; default 3 each). Output: `PASS ui <name> (<secs>s)` / `FAIL ui <name>:
<reason>` lines, then a summary; exit 1 if anything failed. run.sh counts the PASS/FAIL lines.
A test name (or part of one) on the command line runs only the matching tests.
"""

import base64
import json
import os
import secrets
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import pika
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

SUITE = "ui"
MGMT_URL = os.environ.get("MGMT_URL", "http://127.0.0.1:15672").rstrip("/")
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SCREENSHOTS = os.environ.get("UI_SCREENSHOTS", "")
SETTLE = float(os.environ.get("UI_SCREENSHOTS_SETTLE", "3"))
WAIT = float(os.environ.get("UI_WAIT_SECONDS", "10"))
RUN = secrets.token_hex(3)
LAPTOP = (1366, 900)
PHONE = (390, 844)


# --------------------------------------------------------------------------------------
# The management API, for setting up and checking

def api(method, path, body=None, user="guest", password="guest"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(MGMT_URL + path, method=method, data=data,
                                 headers={"content-type": "application/json"})
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("authorization", "Basic " + token)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def q(name):
    return urllib.parse.quote(name, safe="")


def poll(fn, what, timeout=WAIT):
    """Calls fn until it returns something true; fails with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


# --------------------------------------------------------------------------------------
# The browser

def chromium():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--no-first-run", "--disable-extensions", f"--window-size={LAPTOP[0]},{LAPTOP[1]}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # INTEROP_VERBOSE prints it
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    return driver


class UI:
    """The app in one browser tab, with the few moves the tests repeat."""

    def __init__(self, driver):
        self.d = driver

    def viewport(self, size, mobile=False):
        # The exact viewport (a window size would include the browser's frame).
        self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile})

    def fresh(self):
        """A new page load without a session: nothing carried over from the previous test."""
        self.d.get(MGMT_URL + "/")
        self.d.execute_script("sessionStorage.clear()")
        self.d.refresh()

    def wait(self, fn, what, timeout=WAIT):
        # Lists and details are re-rendered when a 5-s poll brings new values: an element found
        # a moment ago may be gone, so a stale element means "look again".
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: fn())
        except TimeoutException:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}") from None

    def find(self, css, root=None):
        return (root or self.d).find_elements(By.CSS_SELECTOR, css)

    def one(self, css, what=None, root=None, timeout=WAIT):
        return self.wait(lambda: (self.find(css, root) or [None])[0], what or css, timeout)

    def visible(self, css):
        return self.wait(lambda: next((e for e in self.find(css) if e.is_displayed()), None), css)

    def login(self, user="guest", password="guest", expect_ok=True, landing=None):
        """Logs in through the form; `landing` is the page to arrive at (default: the overview)."""
        self.fresh()
        if landing:
            self.go(landing)  # any page asked for without a session shows the login form
        f = self.one("form[data-form=login]", "the login form")
        self.type(f.find_element(By.NAME, "username"), user)
        self.type(f.find_element(By.NAME, "password"), password)
        f.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        if expect_ok:
            self.one("#nav:not([hidden])", "the navigation after logging in")

    def go(self, hash_):
        self.d.execute_script("location.hash = arguments[0]", hash_)

    @staticmethod
    def type(element, text):
        element.clear()
        element.send_keys(text)

    def form(self, name):
        """A form by its data-form name, its <details> opened if it sits in one."""
        f = self.one(f"form[data-form={name}]")
        self.d.execute_script("const d = arguments[0].closest('details'); if (d) d.open = true;", f)
        return f

    def fill(self, form, **values):
        for name, value in values.items():
            el = form.find_element(By.NAME, name)
            if el.tag_name == "select":
                Select(el).select_by_value(value)
            elif el.get_attribute("type") == "checkbox":
                if el.is_selected() != bool(value):
                    el.click()
            else:
                self.type(el, value)

    def kv(self, form, field, rows):
        """Fills the key/value/type rows of a kv editor: rows = [(key, value, type)]."""
        editor = form.find_element(By.CSS_SELECTOR, f"[data-kv={field}]")
        for i, (key, value, kind) in enumerate(rows):
            row = editor.find_elements(By.CSS_SELECTOR, ".kv-row")[i]
            self.type(row.find_element(By.CSS_SELECTOR, ".kv-key"), key)
            self.type(row.find_element(By.CSS_SELECTOR, ".kv-value"), value)
            Select(row.find_element(By.CSS_SELECTOR, ".kv-type")).select_by_value(kind)

    def submit(self, form, expect=None):
        """Submits and waits for the form's own status line (its success message)."""
        form.find_element(By.CSS_SELECTOR, ".form-actions button[type=submit]").click()
        status = form.find_element(By.CSS_SELECTOR, ".form-status")
        self.wait(lambda: status.text or self.error_toast(), f"the answer to form {form.get_attribute('data-form')}")
        error = self.error_toast()
        if error and not status.text:
            raise AssertionError(f"the form was refused: {error}")
        if expect:
            assert expect in status.text, (expect, status.text)
        return status.text

    def error_toast(self):
        return " | ".join(t.text for t in self.find(".toast.error .toast-text"))

    def row(self, table, key):
        return self.one(f"table[data-table={table}] tr[data-key={json.dumps(key)}]", f"row {key!r} of table {table}")

    def click_in_row(self, table, key, css):
        """Clicks an element of a row, finding the row again if a refresh replaced it."""
        def attempt():
            self.row(table, key).find_element(By.CSS_SELECTOR, css).click()
            return True
        self.wait(attempt, f"{css} in row {key!r} of table {table}")

    def keys(self, list_name):
        """The data-key of every row of a list, read at once (rows are replaced on refresh)."""
        return self.d.execute_script(
            "return [...document.querySelectorAll(`[data-list=${arguments[0]}] tbody tr[data-key]`)]"
            ".map(r => r.dataset.key)", list_name)

    def dialog_confirm(self, **values):
        dialog = self.one("dialog[open]", "the dialog")
        f = dialog.find_element(By.CSS_SELECTOR, "form")
        self.fill(f, **values)
        f.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait(lambda: not self.find("dialog[open]"), "the dialog to close")

    def screenshot(self, name):
        if SCREENSHOTS:
            os.makedirs(SCREENSHOTS, exist_ok=True)
            self.d.save_screenshot(os.path.join(SCREENSHOTS, name))


# --------------------------------------------------------------------------------------
# Tests

def t1_login_then_add_vhost_and_user_with_permissions(ui):
    vhost, user = f"ui-vh-{RUN}", f"ui-user-{RUN}"
    try:
        ui.login()
        ui.go("#/vhosts")
        f = ui.form("add-vhost")
        ui.fill(f, name=vhost)
        ui.submit(f, expect=vhost)
        ui.row("vhosts", vhost)

        ui.go("#/users")
        f = ui.form("add-user")
        ui.fill(f, name=user, password="pw-" + RUN, tags="management")
        ui.submit(f, expect=user)
        ui.click_in_row("users", user, "a")

        f = ui.form("set-permission")
        ui.fill(f, vhost=vhost, configure="^ui-", write=".*", read=".*")
        ui.submit(f, expect="set")
        ui.row("permissions", f"{vhost} {user}")

        status, v = api("GET", f"/api/vhosts/{q(vhost)}")
        assert status == 200 and v["name"] == vhost, (status, v)
        status, u = api("GET", f"/api/users/{q(user)}")
        assert status == 200 and u["tags"] == ["management"], (status, u)
        status, p = api("GET", f"/api/permissions/{q(vhost)}/{q(user)}")
        assert status == 200 and (p["configure"], p["write"], p["read"]) == ("^ui-", ".*", ".*"), (status, p)
        # The new user can use the API (and so the UI) with what the form set.
        status, me = api("GET", "/api/whoami", user=user, password="pw-" + RUN)
        assert status == 200 and me["name"] == user, (status, me)
    finally:
        api("DELETE", f"/api/users/{q(user)}")
        api("DELETE", f"/api/vhosts/{q(vhost)}")


def t2_add_queue_with_typed_argument(ui):
    # Markup in the name: the list, the link and the page must show it as text.
    queue = f"ui-q-{RUN}-<i>x</i>"
    try:
        ui.login()
        ui.go("#/queues")
        f = ui.form("add-queue")
        ui.fill(f, vhost="/", name=queue, type="classic")
        ui.kv(f, "arguments", [("x-max-length", "10", "number")])
        ui.submit(f, expect=queue)

        status, got = api("GET", f"/api/queues/%2F/{q(queue)}")
        assert status == 200, (status, got)
        assert got["arguments"].get("x-max-length") == 10, got["arguments"]
        assert got["durable"] is True and got["type"] == "classic", got

        # The list finds it by name; its link opens the queue page, which shows the argument.
        filter_box = ui.one("[data-list=queues] input[name=filter]")
        ui.type(filter_box, queue)
        ui.click_in_row("queues", f"/ {queue}", "a")
        ui.wait(lambda: ui.d.current_url.endswith(f"#/queues/%2F/{q(queue)}"), "the queue page")
        ui.wait(lambda: ui.one("h1").text == queue, "the queue's name as the page title")
        assert not ui.find("main i"), "the queue name became markup"
        ui.wait(lambda: "x-max-length\n10" in ui.one(".facts").text or "x-max-length 10" in ui.one(".facts").text,
                "x-max-length 10 on the queue page")
    finally:
        api("DELETE", f"/api/queues/%2F/{q(queue)}")


def t3_publish_from_exchange_page_get_from_queue_page_and_see_it_on_overview(ui):
    queue, exchange = f"ui-pub-q-{RUN}", f"ui-pub-x-{RUN}"
    # Markup in the payload: it must come back as text, never as elements.
    payload = f"<b>hello {RUN}</b> & <img src=x onerror=alert(1)>"
    try:
        assert api("PUT", f"/api/queues/%2F/{q(queue)}", {"durable": False})[0] == 201
        assert api("PUT", f"/api/exchanges/%2F/{q(exchange)}", {"type": "direct", "durable": False})[0] == 201
        ui.login()

        # Bind the queue from the exchange page, then publish there.
        ui.go(f"#/exchanges/%2F/{q(exchange)}")
        f = ui.form("add-binding")
        ui.fill(f, destination_type="q", destination=queue, routing_key="greeting")
        ui.submit(f, expect="Binding added")
        ui.one("table[data-table=bindings-source] tbody tr:not(.empty)", "the new binding")
        before = api("GET", "/api/overview")[1]["queue_totals"]["messages_ready"]

        f = ui.form("publish")
        ui.fill(f, routing_key="greeting", delivery_mode="2", payload=payload)
        ui.kv(f, "headers", [("x-test", RUN, "string")])
        ui.submit(f, expect="published and routed")
        f = ui.form("publish")
        ui.fill(f, routing_key="nobody-listens")
        ui.submit(f, expect="not routed")

        # The overview's queued-messages chart counts it (its totals are sampled every 5 s).
        ui.go("#/")
        ready = "[data-chart='Queued messages'] .legend li:first-child .legend-value"
        ui.wait(lambda: ui.one(ready).text and int(ui.one(ready).text.replace(",", "")) >= before + 1,
                f"the overview's ready count to reach {before + 1}", timeout=15)

        # Get it from the queue page, acknowledging it (it leaves the queue).
        ui.go(f"#/queues/%2F/{q(queue)}")
        f = ui.form("get-messages")
        ui.fill(f, ackmode="ack_requeue_false", encoding="auto")
        ui.submit(f, expect="1 message fetched")
        shown = ui.one(".messages pre.payload")
        assert shown.text == payload, (shown.text, payload)
        assert not shown.find_elements(By.CSS_SELECTOR, "*"), "the payload became markup"
        props = ui.one(".messages .message").text
        assert "x-test" in props and RUN in props and "greeting" in props, props
        poll(lambda: api("GET", f"/api/queues/%2F/{q(queue)}")[1].get("messages") == 0, "the queue to be empty")
    finally:
        api("DELETE", f"/api/exchanges/%2F/{q(exchange)}")
        api("DELETE", f"/api/queues/%2F/{q(queue)}")


def t4_policy_set_in_the_ui_applies_to_the_queue(ui):
    queue, policy = f"ui-pol-q-{RUN}", f"ui-pol-{RUN}"
    try:
        assert api("PUT", f"/api/queues/%2F/{q(queue)}", {"durable": False})[0] == 201
        ui.login()
        ui.go("#/policies")
        f = ui.form("policy")
        ui.fill(f, vhost="/", name=policy, pattern=f"^{queue}$", priority="3")
        Select(f.find_element(By.NAME, "apply-to")).select_by_value("queues")
        ui.kv(f, "definition", [("max-length", "5", "number")])
        ui.submit(f, expect=policy)
        ui.row("policies", f"/ {policy}")

        status, p = api("GET", f"/api/policies/%2F/{q(policy)}")
        assert status == 200 and p["definition"] == {"max-length": 5} and p["priority"] == 3, (status, p)

        ui.go(f"#/queues/%2F/{q(queue)}")
        ui.wait(lambda: any(a.text == policy for a in ui.find(".facts a")), "the policy on the queue page")
        ui.wait(lambda: "max-length" in ui.one(".facts").text, "the effective policy definition")
        ui.go("#/queues")
        ui.type(ui.one("[data-list=queues] input[name=filter]"), queue)
        ui.wait(lambda: policy in ui.row("queues", f"/ {queue}").text, "the policy in the queue list")
        assert api("GET", f"/api/queues/%2F/{q(queue)}")[1]["policy"] == policy
    finally:
        api("DELETE", f"/api/policies/%2F/{q(policy)}")
        api("DELETE", f"/api/queues/%2F/{q(queue)}")


def t5_close_connection_with_reason(ui):
    name, reason = f"ui-conn-{RUN}", f"closed by the UI test {RUN}"
    params = pika.URLParameters(AMQP_URL)
    params.client_properties = {"connection_name": name}
    params.socket_timeout = 5
    conn = pika.BlockingConnection(params)
    try:
        conn.channel()
        listed = poll(lambda: [c for c in api("GET", "/api/connections")[1]
                               if c.get("user_provided_name") == name], "the connection in the API")
        ui.login()
        ui.go("#/connections")
        # Find it the way an operator would: filter by its name, see the client's name on the row.
        ui.type(ui.one("[data-list=connections] input[name=filter]"), listed[0]["name"])
        ui.wait(lambda: name in ui.row("connections", listed[0]["name"]).text, "the client-provided name on the row")
        ui.click_in_row("connections", listed[0]["name"], "[data-action=close]")
        ui.dialog_confirm(reason=reason)

        deadline = time.monotonic() + WAIT
        closed = None
        while time.monotonic() < deadline and closed is None:
            try:
                conn.process_data_events(time_limit=0.2)
            except pika.exceptions.ConnectionClosedByBroker as e:
                closed = e
        assert closed is not None, "pika did not see the connection closed"
        assert closed.reply_code == 320 and reason in closed.reply_text, (closed.reply_code, closed.reply_text)
        poll(lambda: not [c for c in api("GET", "/api/connections")[1] if c.get("user_provided_name") == name],
             "the connection to leave the API's list")
    finally:
        if conn.is_open:
            conn.close()


def t6_logout_returns_to_the_login_form(ui):
    ui.login()
    ui.go("#/queues")
    ui.one("[data-list=queues]")
    ui.one("#logout").click()
    ui.one("form[data-form=login]", "the login form after logging out")
    assert not ui.find("[data-list=queues]"), "the queue list is still on the page"
    assert ui.d.execute_script("return sessionStorage.getItem('warren.auth')") is None, "credentials kept"
    # A protected page, asked for directly (and after a reload), shows the login form only.
    for move in (lambda: ui.go("#/queues"), lambda: ui.d.refresh()):
        move()
        ui.one("form[data-form=login]")
        assert not ui.find("[data-list=queues]") and not ui.find("#nav:not([hidden])"), "a protected page is shown"


def t7_wrong_password_and_non_management_user_are_refused(ui):
    ui.login(password="not-the-password", expect_ok=False)
    banner = ui.visible(".login .banner.error")
    ui.wait(lambda: banner.text == "Login failed", "the API's reason 'Login failed'")
    assert not ui.find("#nav:not([hidden])"), "the app opened after a wrong password"

    user = f"ui-nomgmt-{RUN}"
    try:
        assert api("PUT", f"/api/users/{q(user)}", {"password": "pw", "tags": ""})[0] == 201
        ui.login(user=user, password="pw", expect_ok=False)
        banner = ui.visible(".login .banner.error")
        ui.wait(lambda: banner.text == "Not management user", "the API's reason 'Not management user'")
        assert not ui.find("#nav:not([hidden])"), "the app opened for a user without a management tag"
    finally:
        api("DELETE", f"/api/users/{q(user)}")


def t8_queue_list_at_10000_queues(ui):
    vhost, count = f"ui-10k-{RUN}", 10000
    try:
        assert api("PUT", f"/api/vhosts/{q(vhost)}", {})[0] == 201
        defs = {"queues": [{"name": f"q-{i:05d}", "vhost": vhost, "durable": False, "auto_delete": False,
                            "arguments": {}} for i in range(count)]}
        status, body = api("POST", "/api/definitions", defs)
        assert status in (201, 204), (status, body)

        ui.login()
        Select(ui.one("#vhost-select")).select_by_value(vhost)
        # Full page load of the list (HTML, script, the API's first page), as a bookmark would.
        ui.d.get(MGMT_URL + "/#/queues")
        ui.d.refresh()
        ui.one("[data-list=queues] tbody tr[data-key]", "the first page of queues", timeout=30)
        load_ms = ui.d.execute_script(
            "return performance.getEntriesByName('warren:list:queues')[0].startTime")
        # In-app navigation (the usual way there): from the overview to the list.
        ui.go("#/")
        ui.one("[data-total]")
        nav_ms = ui.d.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const t0 = performance.now();
            const seen = () => document.querySelector('[data-list=queues] tbody tr[data-key]');
            const obs = new MutationObserver(() => { if (seen()) { obs.disconnect(); done(performance.now() - t0); } });
            obs.observe(document.getElementById('main'), { childList: true, subtree: true });
            location.hash = '#/queues';
        """)
        first_page = ui.keys("queues")
        assert len(first_page) == 100, f"{len(first_page)} rows in the DOM, expected one page of 100"
        summary = ui.one("[data-list=queues] .list-summary").text
        assert "of 10,000 queues" in summary, summary

        ui.one("[data-list=queues] [data-page=next]").click()
        second = ui.wait(lambda: ui.one("[data-list=queues] input[name=page]").get_attribute("value") == "2"
                         and set(ui.keys("queues")).isdisjoint(first_page) and ui.keys("queues"), "page 2")
        assert len(second) == 100, f"{len(second)} rows on page 2"

        ui.type(ui.one("[data-list=queues] input[name=filter]"), "q-04242")
        ui.wait(lambda: ui.keys("queues") == [f"{vhost} q-04242"], "the filtered list to show q-04242 alone")
        assert "of 1 queues (filtered from 10,000)" in ui.one("[data-list=queues] .list-summary").text
        return f"first page rendered in {nav_ms:.0f} ms (in-app navigation; {load_ms:.0f} ms from a full page load)"
    finally:
        api("DELETE", f"/api/vhosts/{q(vhost)}")


def t9_screenshots(ui):
    queue = f"ui-shot-{RUN}"
    params = pika.URLParameters(AMQP_URL)
    params.client_properties = {"connection_name": f"ui-screenshots-{RUN}"}
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True, arguments={"x-max-length": 1000})
        for i in range(25):
            ch.basic_publish("", queue, f"message {i}".encode(), pika.BasicProperties(delivery_mode=2))
        def settle():
            # Let a few 5-s samples arrive, with a little traffic, so the charts have lines.
            deadline = time.monotonic() + SETTLE
            while time.monotonic() < deadline:
                ch.basic_publish("", queue, b"tick")
                conn.process_data_events(time_limit=0.5)

        ui.viewport(LAPTOP)
        ui.login(landing=f"#/queues/%2F/{q(queue)}")
        ui.wait(lambda: "x-max-length" in ui.one(".facts").text, "the queue page")
        ui.wait(lambda: "No consumers" in ui.one("table[data-table=consumers]").text, "the consumers table")
        settle()
        ui.screenshot("queue.png")
        ui.go("#/")
        ui.one("[data-total]")
        settle()
        ui.wait(lambda: len(ui.find("table[data-table=nodes] tbody tr")) >= 1, "the nodes table")
        ui.screenshot("overview.png")
        ui.go("#/queues")
        ui.one("[data-list=queues] tbody tr[data-key]")
        ui.screenshot("queues.png")
        ui.viewport(PHONE, mobile=True)
        ui.go("#/")
        ui.one("[data-total]")
        ui.wait(lambda: ui.one("#nav-toggle").is_displayed() and not ui.one("#nav").is_displayed(),
                "the folded navigation on a phone")
        wide = ui.d.execute_script("return document.documentElement.scrollWidth")
        assert wide <= PHONE[0], f"the phone page is {wide}px wide: something does not fit"
        ui.screenshot("overview-phone.png")
        ui.one("#nav-toggle").click()
        ui.wait(lambda: ui.one("#nav").is_displayed(), "the navigation to open on a phone")
        return f"saved in {SCREENSHOTS}" if SCREENSHOTS else "rendered (UI_SCREENSHOTS unset: not saved)"
    finally:
        ui.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        try:
            ch = conn.channel()
            ch.queue_delete(queue)
        finally:
            conn.close()


def t10_definitions_download_and_upload(ui):
    queue = f"ui-defs-q-{RUN}"
    with tempfile.TemporaryDirectory() as downloads:
        try:
            ui.login()
            ui.d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
            ui.go("#/definitions")
            ui.submit(ui.form("download-definitions"), expect="Saved")
            saved = poll(lambda: [n for n in os.listdir(downloads) if n.endswith(".json")], "the downloaded file")
            with open(os.path.join(downloads, saved[0])) as f:
                exported = json.load(f)
            assert {"users", "vhosts", "permissions", "queues", "exchanges"} <= exported.keys(), exported.keys()
            assert any(u["name"] == "guest" for u in exported["users"]), exported["users"]

            upload = os.path.join(downloads, "upload.json")
            with open(upload, "w") as f:
                json.dump({"queues": [{"name": queue, "vhost": "/", "durable": True, "auto_delete": False,
                                       "arguments": {"x-max-length": 7}}]}, f)
            f = ui.form("upload-definitions")
            f.find_element(By.NAME, "file").send_keys(upload)
            ui.submit(f, expect="imported")
            status, got = api("GET", f"/api/queues/%2F/{q(queue)}")
            assert status == 200 and got["arguments"] == {"x-max-length": 7}, (status, got)
        finally:
            api("DELETE", f"/api/queues/%2F/{q(queue)}")


TESTS = [
    t1_login_then_add_vhost_and_user_with_permissions,
    t2_add_queue_with_typed_argument,
    t3_publish_from_exchange_page_get_from_queue_page_and_see_it_on_overview,
    t4_policy_set_in_the_ui_applies_to_the_queue,
    t5_close_connection_with_reason,
    t6_logout_returns_to_the_login_form,
    t7_wrong_password_and_non_management_user_are_refused,
    t8_queue_list_at_10000_queues,
    t9_screenshots,
    t10_definitions_download_and_upload,
]


def describe(exc):
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, AssertionError):
        text = f"{type(exc).__name__}: {text}"
    return " ".join(text.split())[:1500]


def main():
    only = sys.argv[1:]
    tests = [t for t in TESTS if not only or any(o in t.__name__ for o in only)]
    status, _ = api("GET", "/api/overview")
    if status != 200:
        for t in tests:
            print(f"FAIL {SUITE} {t.__name__}: management API at {MGMT_URL} answered {status}", flush=True)
        return 1
    try:
        driver = chromium()
    except Exception as e:  # noqa: BLE001 - no browser: say so once per test
        for t in tests:
            print(f"FAIL {SUITE} {t.__name__}: cannot start Chromium: {describe(e)}", flush=True)
        return 1
    passed = failed = 0
    try:
        ui = UI(driver)
        for test in tests:
            started = time.monotonic()
            try:
                note = test(ui)
            except Exception as e:  # noqa: BLE001 - report every failure as a FAIL line
                failed += 1
                if os.environ.get("INTEROP_VERBOSE"):
                    traceback.print_exc()
                    for entry in driver.get_log("browser"):
                        print("browser:", entry, file=sys.stderr)
                print(f"FAIL {SUITE} {test.__name__}: {describe(e)}", flush=True)
                continue
            passed += 1
            extra = f": {note}" if note else ""
            print(f"PASS {SUITE} {test.__name__}{extra} ({time.monotonic() - started:.1f}s)", flush=True)
    finally:
        driver.quit()
    print(f"# {SUITE} summary: passed={passed} failed={failed}", flush=True)
    return 0 if passed and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
