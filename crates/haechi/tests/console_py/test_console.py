"""The console in chromium: login rules, a run watched live and approved by a second user,
controls, big outputs, a 200-node grid, task approval with separation of duties, CSRF, XSS,
403 pages, both languages, and axe-core on every page."""

import json
import os
import re
import subprocess
import time
from urllib.parse import quote

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

FIGURES = os.environ.get("HAECHI_CONSOLE_FIGURES")


def figure(name, value):
    print(f"FIGURE {name} = {value}")
    if FIGURES:
        with open(FIGURES, "a") as f:
            f.write(json.dumps({name: value}) + "\n")


def api(pw, fx, who):
    """An API client logged in as `who` (the MDRM login), for checking state."""
    u = fx[who]
    r = pw.request.new_context(base_url=fx["url"], ignore_https_errors=True)
    res = r.post("/api/v1/auth", data={"user_id": u["user"], "pwd": u["password"]})
    assert res.status == 200, res.text()
    token = res.json()["token"].split(" ", 1)[1]
    return r, {"Authorization": "Bearer " + token}


def status_of(s, step=None):
    sel = f'tr[data-step="{step}"] .st' if step else "#run-status"
    return s.page.locator(sel).first


def run_from_console(s, wf_id, params=None):
    s.goto(f"/console/workflows/{wf_id}")
    for k, v in (params or {}).items():
        s.page.get_by_label(re.compile("^" + k)).fill(v)
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Run", exact=True).click()
    m = re.search(r"/console/executions/([^/?#]+)$", s.page.url)
    assert m, s.page.url
    return m.group(1)


def test_login_logout_wrong_password_locked_and_api_accounts(session, fx):
    s = session()
    s.goto("/")
    assert s.page.url.endswith("/console/login"), s.page.url
    expect(s.page.get_by_role("button", name="Log in")).to_be_visible()
    s.shot("login")

    def attempt(user, password):
        s.goto("/console/login")
        s.page.get_by_label("User ID").fill(user)
        s.page.get_by_label("Password", exact=True).fill(password)
        with s.page.expect_response(lambda r: r.url.endswith("/console/login") and r.request.method == "POST") as resp:
            s.page.get_by_role("button", name="Log in").click()
        return resp.value.status

    assert attempt(fx["operator"]["user"], "not-the-password") == 401
    expect(s.page.locator("#login-error")).to_contain_text("Wrong user ID or password")
    assert attempt(fx["locked"]["user"], fx["locked"]["password"]) == 401
    expect(s.page.locator("#login-error")).to_be_visible()
    assert attempt(fx["api"]["user"], fx["api"]["password"]) == 401
    expect(s.page.locator("#login-error")).to_be_visible()
    assert not [c for c in s.ctx.cookies() if c["name"] == "__Host-haechi_session"]

    s.login("operator")
    expect(s.page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    cookie = [c for c in s.ctx.cookies() if c["name"] == "__Host-haechi_session"][0]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict", cookie
    assert cookie["path"] == "/"

    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Log out").click()
    expect(s.page.get_by_text("You have logged out.")).to_be_visible()
    s.goto("/console/executions")
    assert s.page.url.endswith("/console/login"), s.page.url
    # The old session token is revoked on the server, not just forgotten by the browser.
    s.ctx.add_cookies([cookie])
    s.goto("/console/")
    assert "/console/login" in s.page.url, s.page.url
    expect(s.page.get_by_text("Your session expired")).to_be_visible()


def test_korean_by_default_english_by_choice(session, fx):
    s = session(locale="ko-KR")
    s.goto("/console/login")
    assert s.page.locator("html").get_attribute("lang") == "ko"
    expect(s.page.get_by_role("button", name="로그인")).to_be_visible()
    s.login("operator")
    expect(s.page.get_by_role("heading", level=1)).to_have_text("대시보드")
    s.shot("dashboard-ko")
    s.page.get_by_label("언어").select_option("en")
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="변경").click()
    expect(s.page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    assert s.page.locator("html").get_attribute("lang") == "en"
    assert [c for c in s.ctx.cookies() if c["name"] == "haechi_lang"][0]["value"] == "en"
    # Times carry their zone.
    s.goto("/console/executions")
    body = s.page.inner_text("main")
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (UTC|UTC[+-]\d\d:\d\d)", body), body[:500]


def test_run_live_then_approve_as_a_second_user_and_read_the_output(session, fx, pw):
    op = session("operator")
    exec_id = run_from_console(op, fx["main_wf"], {"target": "core-banking"})
    op.page.evaluate("window.__marker = 42")
    expect(status_of(op, "prepare")).to_have_attribute("data-code", "SUCCEEDED", timeout=60000)
    expect(status_of(op, "approve-switch")).to_have_attribute("data-code", "RUNNING", timeout=30000)
    assert op.page.evaluate("window.__marker") == 42, "the page was reloaded"
    # The operator does not hold the approval's role: no decision form for them.
    assert op.page.locator('tr[data-step="approve-switch"] button').count() == 0
    op.shot("run-waiting-approval")

    ap = session("approver")
    ap.goto(f"/console/executions/{exec_id}")
    row = ap.page.locator('tr[data-step="approve-switch"]')
    row.get_by_label("Comment").fill("go ahead <b>now</b>")
    clicked = ap.page.evaluate("Date.now()")
    with ap.page.expect_navigation():
        row.get_by_role("button", name="Approve").click()
    decision = op.page.locator('tr[data-step="approve-switch"] .decision')
    expect(decision).to_contain_text(fx["approver"]["user"], timeout=10000)
    seen = op.page.evaluate("window.__haechiLive.at")
    figure("approve_click_to_other_browser_ms", seen - clicked)
    expect(op.page.locator('tr[data-step="approve-switch"] blockquote.comment')).to_have_text("go ahead <b>now</b>")
    expect(status_of(op)).to_have_attribute("data-code", "COMPLETED", timeout=60000)
    assert op.page.evaluate("window.__marker") == 42, "the page was reloaded"
    op.shot("run-completed")

    # Each task step's output, per node.
    op.goto(f"/console/executions/{exec_id}?step=prepare")
    out = op.page.locator("[data-out-text]")
    expect(out).to_contain_text("step output for core-banking", timeout=10000)
    op.page.get_by_label("Output", exact=True).select_option("err")
    expect(out).to_contain_text("to stderr")
    op.shot("run-step-log")

    # The same decision, seen by the API.
    r, h = api(pw, fx, "operator")
    body = r.get(f"/api/v1/executions/{exec_id}", headers=h).json()
    step = [x for x in body["steps"] if x["name"] == "approve-switch"][0]
    assert step["decision"]["by"] == fx["approver"]["user"]
    assert step["decision"]["comment"] == "go ahead <b>now</b>"


def test_step_change_reaches_the_page_within_a_second(session, fx, pw):
    """A transition recorded by the engine (an approval through the API) to the page."""
    op = session("operator")
    exec_id = run_from_console(op, fx["main_wf"], {"target": "latency"})
    expect(status_of(op, "approve-switch")).to_have_attribute("data-code", "RUNNING", timeout=60000)
    r, h = api(pw, fx, "approver")
    before = op.page.evaluate("window.__haechiLive.count")
    t0 = time.time()
    res = r.post(
        f"/api/v1/executions/{exec_id}/steps/approve-switch/decision",
        headers=h,
        data={"action": "approve"},
    )
    assert res.status == 200, res.text()
    op.page.wait_for_function("n => window.__haechiLive.count > n", arg=before, timeout=5000)
    seen = op.page.evaluate("window.__haechiLive.at") / 1000.0
    figure("api_decision_to_page_ms", round((seen - t0) * 1000))
    assert seen - t0 < 1.0, f"the page saw the change after {seen - t0:.3f} s"
    expect(status_of(op)).to_have_attribute("data-code", "COMPLETED", timeout=60000)


def test_pause_resume_stop(session, fx):
    op = session("operator")
    run_from_console(op, fx["sleep_wf"])
    expect(status_of(op)).to_have_attribute("data-code", "RUNNING")
    for button, code in [("Pause", "PAUSED"), ("Resume", "RUNNING"), ("Stop", "STOPPED")]:
        with op.page.expect_navigation():
            op.page.get_by_role("button", name=button, exact=True).click()
        expect(status_of(op)).to_have_attribute("data-code", code, timeout=15000)
    op.shot("run-stopped")


def test_a_thousand_lines_and_twenty_mib_of_output(session, fx):
    op = session("operator")
    node = quote(fx["node"], safe="")
    op.goto(f"/console/task-instances/{fx['lines_no']}?node={node}")
    box = op.page.locator("[data-output-src]")
    expect(box).to_have_attribute("data-loaded", "1", timeout=10000)
    out = op.page.locator("[data-out-text]")
    expect(out).to_contain_text("line 1 of 1000")
    expect(out).to_contain_text("line 1000 of 1000")
    op.page.get_by_label("Search").fill("line 999 ")
    expect(out).to_have_text("line 999 of 1000")
    op.shot("instance-output")

    t0 = time.time()
    op.goto(f"/console/task-instances/{fx['big_no']}?node={node}")
    expect(box).to_have_attribute("data-loaded", "1", timeout=30000)
    figure("output_20mib_open_to_loaded_ms", round((time.time() - t0) * 1000))
    expect(out).to_contain_text("THE LAST LINE")
    shown = op.page.evaluate("document.querySelector('[data-out-text]').textContent.length")
    assert shown < 400 * 1024, f"{shown} characters in the page"
    # Responsive: a timer fires at once and a click on the follow box takes effect.
    lag = op.page.evaluate(
        "new Promise(r => { const t = performance.now(); setTimeout(() => r(performance.now() - t), 0); })"
    )
    figure("output_20mib_timer_lag_ms", round(lag, 1))
    assert lag < 200, lag
    earlier = op.page.get_by_role("button", name="Load earlier output")
    expect(earlier).to_be_visible()
    earlier.click()
    op.page.wait_for_function(
        "n => document.querySelector('[data-out-text]').textContent.length > n", arg=shown, timeout=10000
    )
    cdp = op.ctx.new_cdp_session(op.page)
    cdp.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    figure("output_20mib_js_heap_mib", round(metrics["JSHeapUsedSize"] / 1048576, 1))
    assert metrics["JSHeapUsedSize"] < 64 * 1048576


def test_a_200_node_grid_loads_pages_and_filters(session, fx):
    op = session("operator")
    t0 = time.time()
    op.goto(f"/console/task-instances/{fx['grid_no']}")
    figure("grid_200_nodes_page_ms", round((time.time() - t0) * 1000))
    rows = op.page.locator("#node-grid tbody tr")
    expect(rows).to_have_count(100)
    expect(op.page.get_by_role("heading", name=re.compile("Results by node"))).to_contain_text("200")
    op.shot("instance-grid")
    with op.page.expect_navigation():
        op.page.get_by_role("link", name="Next page").click()
    expect(rows).to_have_count(100)
    with op.page.expect_navigation():
        op.page.get_by_role("link", name="CANCEL", exact=True).click()
    expect(rows).to_have_count(50)
    codes = set(op.page.locator("#node-grid tbody tr .st").evaluate_all("els => els.map(e => e.dataset.code)"))
    assert codes == {"CANCEL"}, codes
    # The other 150 wait for agents that never come (WAIT), or were given up (LOST).
    rest = 0
    for code in ["WAIT", "LOST"]:
        with op.page.expect_navigation():
            op.page.get_by_role("link", name=code, exact=True).click()
        heading = op.page.get_by_role("heading", name=re.compile("Results by node")).inner_text()
        n = int(re.search(r"Total (\d+)", heading).group(1))
        codes = set(op.page.locator("#node-grid tbody tr .st").evaluate_all("els => els.map(e => e.dataset.code)"))
        assert codes <= {code}, (code, codes)
        rest += n
    assert rest == 150, rest


def test_task_approval_queue_keeps_separation_of_duties(session, fx, pw):
    task = fx["pending_task"]
    dev = session("developer")
    dev.goto("/console/approvals")
    card = dev.page.locator(f'article[id="task-{task}"]')
    expect(card).to_contain_text(fx["developer"]["user"])
    expect(card.locator(".diff .del")).to_contain_text(["- echo first revision"])
    expect(card.locator(".diff .ins").first).to_contain_text("+ echo second revision")
    dev.shot("approvals")
    with dev.page.expect_response(lambda r: "/console/approvals/tasks/" in r.url) as resp:
        card.get_by_role("button", name="Approve").click()
    assert resp.value.status == 403
    expect(dev.page.get_by_role("alert")).to_contain_text("another approver must approve it")
    r, h = api(pw, fx, "admin")
    # Nothing changed: still waiting for approval.
    assert r.get(f"/api/v1/tasks/{task}", headers=h).json()["apprvStatus"] == "Q"
    ap = session("approver")
    ap.goto("/console/approvals")
    card = ap.page.locator(f'article[id="task-{task}"]')
    card.get_by_label("Reason").fill("reviewed")
    with ap.page.expect_navigation():
        card.get_by_role("button", name="Approve").click()
    expect(ap.page.locator(f'article[id="task-{task}"]')).to_have_count(0)
    t = r.get(f"/api/v1/tasks/{task}", headers=h).json()
    assert t["apprvStatus"] == "A", t
    assert t["apprvUserId"] == fx["approver"]["user"], t


def test_a_post_without_the_csrf_token_changes_nothing(session, fx, pw):
    op = session("operator")
    exec_id = run_from_console(op, fx["sleep_wf"])
    url = op.url(f"/console/executions/{exec_id}/control")
    for form in [{"action": "stop"}, {"action": "stop", "csrf": "0" * 64}]:
        res = op.ctx.request.post(url, form=form, max_redirects=0, headers={"Accept-Language": "en"})
        assert res.status == 403, res.status
        assert "security token" in res.text()
    r, h = api(pw, fx, "operator")
    assert r.get(f"/api/v1/executions/{exec_id}", headers=h).json()["status"] == "RUNNING"
    # The real form works.
    with op.page.expect_navigation():
        op.page.get_by_role("button", name="Stop", exact=True).click()
    expect(status_of(op)).to_have_attribute("data-code", "STOPPED", timeout=15000)
    # The login form has its own token.
    res = op.ctx.request.post(op.url("/console/login"), form={"user_id": "admin", "password": "x"})
    assert res.status == 403


def test_html_in_names_is_text(session, fx):
    a = session("admin")
    xss = fx["xss"]
    pages = [
        "/console/workflows",
        f"/console/workflows/{fx['xss_wf']}",
        f"/console/executions/{fx['xss_exec']}",
        "/console/executions",
        "/console/tasks?id=" + fx["xss_task"],
    ]
    for p in pages:
        a.goto(p)
        assert a.page.locator("main img, main svg[onload]").count() == 0, p
        html = a.page.content()
        assert "<img src=x" not in html and "<svg/onload" not in html, p
    assert a.page.evaluate("typeof window.__xss") == "undefined"
    a.goto("/console/workflows")
    expect(a.page.get_by_text(xss).first).to_be_visible()
    a.goto("/console/tasks?id=" + fx["xss_task"])
    expect(a.page.get_by_role("cell", name=xss)).to_be_visible()
    assert a.dialogs == [], a.dialogs


def test_a_user_without_the_right_gets_403_and_nothing_changes(session, fx, pw):
    s = session("nobody")
    for p in [
        "/console/executions",
        "/console/workflows",
        f"/console/workflows/{fx['main_wf']}",
        "/console/nodes",
        "/console/tasks",
        f"/console/task-instances/{fx['lines_no']}",
    ]:
        res = s.goto(p)
        assert res.status == 403, (p, res.status)
        expect(s.page.get_by_role("alert")).to_contain_text("You do not have the right")
    s.shot("forbidden")
    csrf = s.page.evaluate("fetch('/console/').then(r => r.text())")
    token = re.search(r'data-csrf="([0-9a-f]+)"', csrf).group(1)
    r, h = api(pw, fx, "admin")
    before = r.get("/api/v1/executions", headers=h, params={"wf_id": fx["sleep_wf"]}).json()["total"]
    res = s.ctx.request.post(
        s.url(f"/console/workflows/{fx['sleep_wf']}/run"), form={"csrf": token}, max_redirects=0
    )
    assert res.status == 403, res.status
    after = r.get("/api/v1/executions", headers=h, params={"wf_id": fx["sleep_wf"]}).json()["total"]
    assert before == after


def test_every_page_has_no_serious_accessibility_violation(session, fx):
    axe = Axe()
    node = quote(fx["node"], safe="")
    pages = {
        "dashboard": "/console/",
        "workflows": "/console/workflows",
        "workflow": f"/console/workflows/{fx['main_wf']}",
        "executions": "/console/executions",
        "execution": f"/console/executions/{fx['xss_exec']}",
        "tasks": "/console/tasks",
        "task-page": f"/console/tasks/{fx['pending_task']}",
        "task-instance": f"/console/task-instances/{fx['lines_no']}?node={node}",
        "nodes": "/console/nodes",
        "approvals": "/console/approvals",
        "not-found": "/console/no-such-page",
    }
    bad = []
    for locale in ["en-US", "ko-KR"]:
        a = session("admin", locale=locale)
        for name, p in pages.items():
            a.goto(p)
            a.page.wait_for_load_state("networkidle")
            res = axe.run(a.page)
            for v in res.response["violations"]:
                if v["impact"] in ("serious", "critical"):
                    bad.append((locale, p, v["id"], v["help"], [n["html"][:120] for n in v["nodes"][:3]]))
            if locale == "en-US":
                a.shot(name)
    out = session(locale="en-US")
    out.goto("/console/login")
    for v in axe.run(out.page).response["violations"]:
        if v["impact"] in ("serious", "critical"):
            bad.append(("login", v["id"], v["help"]))
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)


def test_task_page_request_approval_and_run_on_nodes(session, fx, pw):
    a = session("admin")
    a.goto(f"/console/tasks/{fx['xss_task']}")
    expect(a.page.locator("main")).to_contain_text("not requested (N)")
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Request approval").click()
    expect(a.page.locator("main")).to_contain_text("requested (Q)")
    a.shot("task")

    op = session("operator")
    op.goto(f"/console/tasks/{fx['step_task']}")
    assert op.page.get_by_role("button", name="Request approval").count() == 0
    op.page.get_by_label(re.compile("^Nodes")).fill(fx["node"])
    op.page.get_by_label("Arguments").fill("two words\n$(reboot)")
    with op.page.expect_navigation():
        op.page.get_by_role("button", name="Run", exact=True).click()
    assert "/console/task-instances/" in op.page.url, op.page.url
    for _ in range(60):
        if op.page.locator("#node-grid .st").first.get_attribute("data-code") == "END":
            break
        time.sleep(0.5)
        op.page.reload()
    expect(op.page.locator("#node-grid .st").first).to_have_attribute("data-code", "END")
    with op.page.expect_navigation():
        op.page.get_by_role("link", name=fx["node"]).click()
    expect(op.page.locator("[data-out-text]")).to_contain_text("step output for two words")


def test_nodes_enrolment_command_and_disable(session, fx, pw, tmp_path):
    a = session("admin")
    a.goto("/console/nodes")
    new_node = "enrolled-" + str(int(time.time() * 1000))
    a.page.get_by_label("Node ID (optional)").fill(new_node)
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Create enrolment token").click()
    cmd = a.page.locator("#enrol-command").inner_text()
    assert re.match(
        r"haechi agent --server https://127\.0\.0\.1:\d+ --enroll-token hce_\S+ --data-dir \S+ --node-id \S+ --server-fingerprint [0-9A-F:]{95}$",
        cmd,
    ), cmd
    a.shot("nodes-enrolment")
    # The command, pasted as shown (its data directory moved to a temporary one), enrols.
    args = cmd.split()
    args[0] = os.environ["HAECHI_BIN"]
    args[args.index("--data-dir") + 1] = str(tmp_path / "agent")
    agent = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r, h = api(pw, fx, "admin")
        for _ in range(100):
            res = r.get(f"/api/v1/nodes/{new_node}", headers=h)
            if res.status == 200 and res.json()["connected"]:
                break
            time.sleep(0.2)
        assert r.get(f"/api/v1/nodes/{new_node}", headers=h).json()["connected"]
        a.goto("/console/nodes?id=" + new_node)
        expect(a.page.get_by_role("row", name=re.compile(new_node))).to_contain_text("Connected")
    finally:
        agent.kill()
        agent.wait()
    node = fx["grid_prefix"] + "-199"
    a.goto("/console/nodes?id=" + node)
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Disable").click()
    a.goto("/console/nodes?id=" + node)
    expect(a.page.get_by_role("button", name="Enable")).to_be_visible()
    assert r.get(f"/api/v1/nodes/{node}", headers=h).json()["status"] == "D"
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Enable").click()
    assert r.get(f"/api/v1/nodes/{node}", headers=h).json()["status"] == "E"


# ---- console-ops: the gaps of part 1 ---------------------------------------------------------

BAD_YAML = """name: {name}
group: console
description: edited in the browser
steps:
- name: first
  type: sleep
  seconds: soon
- name: second
  type: sleep
  seconds: 2
"""


def test_workflow_editor_shows_errors_at_their_line_and_saves_versions(session, fx, pw):
    a = session("admin")
    wf = fx["edit_wf"]
    r, h = api(pw, fx, "admin")
    name = r.get(f"/api/v1/workflows/{wf}", headers=h).json()["name"]
    a.goto(f"/console/workflows/{wf}")
    editor = a.page.get_by_role("textbox", name=re.compile("^Definition"))
    shown = editor.input_value()
    assert "name: first" in shown and "edited in the browser" in shown, shown

    # A value the engine refuses: the error names steps[0].seconds, the page marks line 7.
    editor.fill(BAD_YAML.format(name=name))
    with a.page.expect_response(lambda x: x.url.endswith("/definition")) as resp:
        a.page.get_by_role("button", name="Save", exact=True).click()
    assert resp.value.status == 400, resp.value.status
    alert = a.page.locator("#editor-error")
    expect(alert).to_contain_text("line 7")
    expect(alert).to_contain_text("steps[0].seconds")
    marked = a.page.locator("ol.lines li.errline")
    expect(marked).to_have_count(1)
    expect(marked).to_have_attribute("id", "line-7")
    expect(marked).to_contain_text("seconds: soon")
    assert editor.get_attribute("aria-invalid") == "true"
    # The caret is on that line, and what the user typed is kept.
    assert "seconds: soon" in editor.input_value()
    sel = a.page.evaluate("(() => { const t = document.getElementById('definition-text'); return t.value.slice(t.selectionStart, t.selectionEnd); })()")
    assert sel == "  seconds: soon", sel
    a.shot("workflow-editor-error")
    axe = Axe()
    serious = [v["id"] for v in axe.run(a.page).response["violations"] if v["impact"] in ("serious", "critical")]
    assert not serious, serious
    doc = r.get(f"/api/v1/workflows/{wf}", headers=h).json()
    assert doc["version"] == 1, doc

    # A JSON syntax error: the parser's line.
    a.page.get_by_label("JSON").check()
    editor.fill('{\n  "name": "x",\n  "group": \n}\n')
    with a.page.expect_response(lambda x: x.url.endswith("/definition")) as resp:
        a.page.get_by_role("button", name="Save", exact=True).click()
    assert resp.value.status == 400
    expect(a.page.locator("#editor-error")).to_contain_text("not valid JSON")
    expect(a.page.locator("ol.lines li.errline")).to_have_attribute("id", "line-4")
    assert r.get(f"/api/v1/workflows/{wf}", headers=h).json()["version"] == 1

    # Fixed: saved as version 2 through the API's engine call.
    a.page.get_by_label("YAML").check()
    editor.fill(BAD_YAML.format(name=name).replace("seconds: soon", "seconds: 3").replace("edited in the browser", "edited twice"))
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Save", exact=True).click()
    expect(a.page.get_by_role("status").filter(has_text="Saved as version 2")).to_be_visible()
    doc = r.get(f"/api/v1/workflows/{wf}", headers=h).json()
    assert doc["version"] == 2 and doc["description"] == "edited twice", doc
    assert doc["steps"][0]["seconds"] == 3, doc["steps"][0]

    # Versions: a diff between two, then restore version 1 (a new version 3).
    a.page.get_by_label("Compare version").select_option("1")
    a.page.get_by_label("with version").select_option("2")
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Compare", exact=True).click()
    diff = a.page.locator("#version-diff")
    expect(diff.locator(".del").filter(has_text="edited in the browser")).to_have_count(1)
    expect(diff.locator(".ins").filter(has_text="edited twice")).to_have_count(1)
    expect(diff.locator(".same").filter(has_text="name: second")).to_have_count(1)
    a.shot("workflow-version-diff")
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Restore version 1").click()
    expect(a.page.get_by_role("status").filter(has_text="Restored version 1")).to_be_visible()
    doc = r.get(f"/api/v1/workflows/{wf}", headers=h).json()
    assert doc["version"] == 3 and doc["description"] == "edited in the browser", doc
    assert doc["steps"][0]["seconds"] == 1, doc["steps"][0]
    # Without workflow.manage there is no editor, and a save is refused.
    op = session("operator")
    op.goto(f"/console/workflows/{wf}")
    assert op.page.locator("#definition-text").count() == 0
    token = re.search(r'data-csrf="([0-9a-f]+)"', op.page.content()).group(1)
    res = op.ctx.request.post(op.url(f"/console/workflows/{wf}/definition"),
                              form={"csrf": token, "format": "yaml", "definition": BAD_YAML.format(name=name)},
                              max_redirects=0)
    assert res.status == 403, res.status
    assert r.get(f"/api/v1/workflows/{wf}", headers=h).json()["version"] == 3


def test_the_task_steps_node_table_is_live(session, fx):
    op = session("operator")
    run_from_console(op, fx["main_wf"], {"target": "live-nodes"})
    op.page.evaluate("window.__marker = 7")
    seen = []
    deadline = time.time() + 60
    cell = op.page.locator("#step-node-table tbody .st").first
    while time.time() < deadline:
        if cell.count():
            code = cell.get_attribute("data-code")
            if not seen or seen[-1] != code:
                seen.append(code)
            if code == "END":
                break
        time.sleep(0.05)
    assert seen and seen[-1] == "END", seen
    expect(op.page.locator("#step-node-table tbody tr").first).to_contain_text(fx["node"])
    expect(op.page.locator("#step-node-table tbody tr").first.locator("td").nth(1)).to_have_text("0")
    assert op.page.evaluate("window.__haechiNodes.count") >= 1
    assert op.page.evaluate("window.__marker") == 7, "the page was reloaded"
    print("node states seen live:", seen)


def test_dashboard_shows_elapsed_time_against_rto(session, fx):
    for locale, over, within in [("en-US", "over RTO", "within RTO"), ("ko-KR", "RTO 초과", "RTO 이내")]:
        a = session("admin", locale=locale)
        a.goto("/console/")
        row = lambda e: a.page.locator(f'tr:has(a[href="/console/executions/{e}"]) [data-rto]')
        expect(row(fx["rto_over_exec"])).to_have_attribute("data-rto", "over")
        expect(row(fx["rto_over_exec"])).to_contain_text(over)
        expect(row(fx["rto_within_exec"])).to_have_attribute("data-rto", "within")
        expect(row(fx["rto_within_exec"])).to_contain_text(within)
        if locale == "en-US":
            a.shot("dashboard-rto")


def test_a_nodes_exec_no_history(session, fx):
    a = session("admin")
    node = quote(fx["node"], safe="")
    path = f"/console/task-instances/{fx['lines_no']}?node={node}"
    a.goto(path)
    hist = a.page.locator("#exec-history tbody tr")
    expect(hist).to_have_count(1)
    with a.page.expect_navigation():
        a.page.locator("#node-grid").get_by_role("button", name="Re-run").click()
    deadline = time.time() + 60
    while True:
        a.goto(path)
        if hist.count() == 2 and hist.nth(1).locator(".st").get_attribute("data-code") == "END":
            break
        assert time.time() < deadline, a.page.inner_text("#exec-history")
        time.sleep(0.5)
    for i in (0, 1):
        expect(hist.nth(i).locator("td").nth(1)).to_have_text("0")
    expect(hist.nth(1)).to_contain_text("#2")
    expect(a.page.locator("[data-out-text]")).to_contain_text("line 1000 of 1000", timeout=10000)
    # The first execution, opened from the history.
    with a.page.expect_navigation():
        hist.nth(0).get_by_role("link", name="#1").click()
    expect(a.page.locator("#exec-history tr.selected")).to_contain_text("#1")
    assert "execNo=1" in a.page.url
    expect(a.page.locator("[data-out-info]")).to_contain_text("END", timeout=10000)
    a.shot("task-instance-exec-history")


def test_session_expiry_warns_before_and_stay_logged_in_extends_it(browser, fx):
    """A server whose sessions idle out after 20 s: the page warns 2 s before (a tenth of
    the idle time), "Stay logged in" extends the session on the server, and without it the
    session ends (the page goes to the login page, and the server agrees)."""
    ctx = browser.new_context(ignore_https_errors=True, locale="en-US")
    page = ctx.new_page()
    base = fx["short_url"]
    page.goto(base + "/console/login")
    page.get_by_label("User ID").fill("admin")
    page.get_by_label("Password", exact=True).fill(fx["admin"]["password"])
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()
    t0 = time.time()
    banner = page.locator("#expiry")
    expect(banner).to_be_hidden()
    expect(banner).to_be_visible(timeout=25000)
    warned = time.time() - t0
    assert 10 < warned < 20, f"warned after {warned:.1f} s"
    expect(banner).to_contain_text("will expire soon")
    stay = page.get_by_role("button", name="Stay logged in")
    expect(stay).to_be_focused()
    with page.expect_response(lambda r: r.url.endswith("/console/keepalive")) as resp:
        stay.click()
    assert resp.value.status == 204
    expect(banner).to_be_hidden()
    # Past the first deadline: the server still knows the session.
    page.wait_for_timeout(max(0, (t0 + 23 - time.time()) * 1000))
    page.reload()
    assert "/console/login" not in page.url, page.url
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    # Left alone, the session ends: the page goes to the login page, and so does the server.
    page.wait_for_url(re.compile(r"/console/login\?expired=1"), timeout=30000)
    expect(page.get_by_role("status")).to_contain_text("Your session expired")
    page.wait_for_timeout(1500)
    page.goto(base + "/console/")
    assert "/console/login" in page.url, page.url
    ctx.close()
