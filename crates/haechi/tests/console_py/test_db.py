"""DB access and the audit log in chromium (issue 23 items 2 and 4): a DB Policy Admin writes,
edits, locks and unlocks policies and psql through the gateway sees each change; field errors
as the API gives them; targets, accounts from a vault credential, open sessions ended from the
page; the policy simulator; an Auditor filters 20,000 gateway statements (grouped by session,
paged with no ceiling) and exports them as CSV matching the API; CSRF, XSS, 403 pages, Korean
and English, and axe-core on every page."""

import csv
import io
import json
import math
import re
import subprocess
import time

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect


def api(pw, fx, who):
    u = fx[who]
    r = pw.request.new_context(base_url=fx["url"], ignore_https_errors=True)
    res = r.post("/api/v1/auth", data={"user_id": u["user"], "pwd": u["password"]})
    assert res.status == 200, res.text()
    token = res.json()["token"].split(" ", 1)[1]
    return r, {"Authorization": "Bearer " + token}


def psql(fx, who, sql):
    """One statement string through the gateway as `who` (a fixtures user): (ok, output)."""
    u = fx[who]
    conn = (
        f"host=127.0.0.1 port={fx['pg_port']} user={u['user']}@{fx['run']} "
        f"dbname={fx['target']} sslmode=require"
    )
    p = subprocess.run(
        ["psql", conn, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        env={"PGPASSWORD": u["password"], "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode == 0, p.stdout + p.stderr


def csrf_of(s):
    html = s.page.evaluate("fetch('/console/').then(r => r.text())")
    return re.search(r'data-csrf="([0-9a-f]+)"', html).group(1)


def same_json(a, b):
    """Equal JSON values; numbers with a fraction compare to 12 significant digits (the API
    re-serializes the stored detail, the CSV holds its exact text)."""
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return a == b


def fill_policy(s, values, privileges):
    for label, v in values.items():
        s.page.get_by_label(label, exact=True).fill(v)
    for box in s.page.locator('input[name="sqlPrivileges"]').all():
        want = box.get_attribute("value") in privileges
        if box.is_checked() != want:
            box.set_checked(want)


def policy_row(s, user):
    return s.page.locator("#policies tbody tr", has=s.page.get_by_role("cell", name=user, exact=True))


def test_policy_admin_writes_edits_locks_and_unlocks_and_psql_sees_each_change(session, fx, pw):
    s = session("dbadmin")
    gw = fx["gwuser"]["user"]
    # Before any policy the gateway refuses the login.
    ok, out = psql(fx, "gwuser", "SELECT 1")
    assert not ok and "no DBSAFER policy" in out, out

    s.goto("/console/db/policies")
    expect(s.page.get_by_role("heading", level=1)).to_have_text("DB policies")
    s.page.get_by_role("link", name="New policy").click()
    # Field errors, as the API gives them: shown at the field, what was typed kept, nothing stored.
    base = {
        "User ID": gw,
        "DB account": fx["run"],
        "Client IP from": "127.0.0.9",
        "Client IP to": "127.0.0.1",
        "Server address": "127.0.0.1",
        "Server port": "5432",
    }
    fill_policy(s, base, {"SELECT", "INSERT"})
    with s.page.expect_response(lambda r: r.request.method == "POST") as resp:
        s.page.get_by_role("button", name="Save", exact=True).click()
    assert resp.value.status == 400
    err = s.page.locator("#p-clientIpBegin-err")
    expect(err).to_contain_text("is after clientIpEnd")
    assert s.page.get_by_label("Client IP from", exact=True).get_attribute("aria-invalid") == "true"
    assert s.page.get_by_label("User ID", exact=True).input_value() == gw
    assert s.page.locator('input[value="INSERT"]').is_checked()
    s.shot("db-policy-form-error")
    s.page.get_by_label("Client IP from", exact=True).fill("127.0.0.1")
    s.page.get_by_label("Valid from", exact=True).fill("2030-01-02T00:00")
    s.page.get_by_label("Valid until", exact=True).fill("2030-01-01T00:00")
    with s.page.expect_response(lambda r: r.request.method == "POST") as resp:
        s.page.get_by_role("button", name="Save", exact=True).click()
    assert resp.value.status == 400
    expect(s.page.locator("#p-startDate-err")).to_contain_text("after endDate")
    r, h = api(pw, fx, "dbadmin")
    listed = r.get("/dbsafer/api/v1/policy/custom/access-policies", params={"userId": gw}, headers=h).json()
    assert listed["results"] == [], listed
    s.page.get_by_label("Valid from", exact=True).fill("")
    s.page.get_by_label("Valid until", exact=True).fill("")
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Save", exact=True).click()
    expect(s.page.get_by_role("status")).to_contain_text("The policy was saved.")
    row = policy_row(s, gw)
    expect(row).to_contain_text("SELECT, INSERT")
    expect(row.locator(".st")).to_have_attribute("data-code", "IN_FORCE")
    s.shot("db-policies")
    listed = r.get("/dbsafer/api/v1/policy/custom/access-policies", params={"userId": gw}, headers=h).json()
    (p,) = listed["results"]
    assert p["clientIpBegin"] == "127.0.0.1" and p["sqlPrivileges"] == ["SELECT", "INSERT"], p
    ok, out = psql(fx, "gwuser", "SELECT count(*) FROM t")
    assert ok and out.strip() == "10", out
    ok, out = psql(fx, "gwuser", "INSERT INTO s VALUES (1)")
    assert ok, out

    # Edit: INSERT taken away; the next statement is refused.
    row.get_by_role("link", name=p["policyId"]).click()
    expect(s.page.get_by_label("User ID", exact=True)).to_have_value(gw)
    s.page.locator('input[value="INSERT"]').uncheck()
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Save", exact=True).click()
    expect(policy_row(s, gw)).not_to_contain_text("INSERT")
    ok, out = psql(fx, "gwuser", "INSERT INTO s VALUES (2)")
    assert not ok and "needs INSERT" in out and p["policyId"] in out, out

    # Lock one: the gateway refuses, naming the lock; unlock by filter: it grants again.
    with s.page.expect_navigation():
        policy_row(s, gw).get_by_role("button", name="Lock", exact=True).click()
    expect(s.page.get_by_role("status")).to_contain_text("Policies locked: 1")
    expect(policy_row(s, gw).locator(".st")).to_have_attribute("data-code", "LOCKED")
    ok, out = psql(fx, "gwuser", "SELECT 1")
    assert not ok and "locked" in out, out
    s.page.get_by_label("User ID", exact=True).fill(gw)
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Apply").click()
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Unlock all matching", exact=True).click()
    expect(s.page.get_by_role("status")).to_contain_text("Policies unlocked: 1")
    expect(policy_row(s, gw).locator(".st")).to_have_attribute("data-code", "IN_FORCE")
    ok, out = psql(fx, "gwuser", "SELECT 1")
    assert ok, out
    # Lock by filter, then unlock the one policy from its own page.
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Lock all matching", exact=True).click()
    ok, out = psql(fx, "gwuser", "SELECT 1")
    assert not ok and "locked" in out, out
    policy_row(s, gw).get_by_role("link", name=p["policyId"]).click()
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Unlock", exact=True).click()
    ok, out = psql(fx, "gwuser", "SELECT 1")
    assert ok, out
    # Every change is in the audit log, by the DB Policy Admin.
    ra, ha = api(pw, fx, "auditor")
    ev = ra.get("/api/v1/audit", params={"user": fx["dbadmin"]["user"], "action": "dbpolicy"}, headers=ha).json()
    actions = [e["action"] for e in ev["events"]]
    for a in ["dbpolicy.create", "dbpolicy.update", "dbpolicy.lock", "dbpolicy.unlock"]:
        assert a in actions, actions


def test_simulator_page_answers_as_the_api(session, fx, pw):
    s = session("dbadmin")
    s.goto("/console/db/simulate")
    s.page.get_by_label("User ID").fill(fx["simuser"])
    s.page.get_by_label("Client IP").fill("127.0.0.1")
    s.page.get_by_label("Target").select_option(fx["target"])
    s.page.get_by_label("DB account").fill(fx["run"])
    sql = "SELECT * FROM t; DELETE FROM s -- <script>window.__xss=1</script>"
    s.page.get_by_label("SQL statement").fill(sql)
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Simulate").click()
    result = s.page.locator("#sim-result")
    expect(result).to_be_visible()
    r, h = api(pw, fx, "dbadmin")
    want = r.post(
        "/api/v1/db/simulate",
        data={"userId": fx["simuser"], "clientIp": "127.0.0.1", "target": fx["target"], "account": fx["run"], "sql": sql},
        headers=h,
    ).json()
    assert result.get_attribute("data-allowed") == str(want["allowed"]).lower()
    expect(s.page.locator("#sim-needs")).to_have_text(", ".join(want["needs"]))
    if want["message"]:
        expect(s.page.locator("#sim-message")).to_have_text(want["message"])
    expect(s.page.get_by_label("SQL statement")).to_have_value(sql)
    assert s.page.evaluate("typeof window.__xss") == "undefined"
    s.shot("db-simulate")
    # A bad address: the error names the field, nothing else happens.
    s.page.get_by_label("Client IP").fill("300.1.1.1")
    with s.page.expect_response(lambda r: r.request.method == "POST") as resp:
        s.page.get_by_role("button", name="Simulate").click()
    assert resp.value.status == 400
    expect(s.page.locator("#form-error")).to_contain_text("clientIp")


def test_targets_accounts_from_the_vault_and_ending_a_session(session, fx, pw):
    a = session("admin")
    a.goto("/console/db/targets")
    card = a.page.locator(f'article[data-target="{fx["target"]}"]')
    expect(card).to_contain_text(fx["run"])
    # A second account on the target, its password chosen from a vault credential: the page
    # lists names only, never a value.
    card.get_by_label("DB account").fill("reporting")
    card.get_by_label("Password (vault credential attribute)").select_option(index=1)
    with a.page.expect_navigation():
        card.get_by_role("button", name="Add account").click()
    expect(a.page.get_by_role("status")).to_contain_text("The account was registered.")
    expect(card.get_by_role("rowheader", name="reporting")).to_be_visible()
    assert fx["db_password"] not in a.page.content()
    # Bad input: an error naming the field, nothing stored.
    a.page.get_by_label("Target name (clients give it as the database name)").fill("bad-target")
    a.page.get_by_label("Host", exact=True).fill("127.0.0.1")
    a.page.get_by_label("Port", exact=True).fill("99999")
    a.page.get_by_label("Database", exact=True).fill("test")
    with a.page.expect_response(lambda r: r.request.method == "POST") as resp:
        a.page.get_by_role("button", name="Save").click()
    assert resp.value.status == 400
    expect(a.page.locator("#form-error")).to_contain_text("port")
    assert a.page.locator('article[data-target="bad-target"]').count() == 0
    with a.page.expect_navigation():
        card.get_by_role("row", name=re.compile("reporting")).get_by_role("button", name="Delete").click()
    expect(card.get_by_role("rowheader", name="reporting")).to_have_count(0)
    a.shot("db-targets")

    # A live psql session is listed with its user, account, address and statement count;
    # "End session" closes it.
    u = fx["gwuser"]
    conn = (
        f"host=127.0.0.1 port={fx['pg_port']} user={u['user']}@{fx['run']} "
        f"dbname={fx['target']} sslmode=require"
    )
    live = subprocess.Popen(
        ["psql", conn, "-X", "-A", "-t"],
        env={"PGPASSWORD": u["password"], "PATH": "/usr/bin:/bin"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    live.stdin.write("SELECT 'alive';\n")
    live.stdin.flush()
    s = session("dbadmin")
    row = s.page.locator(f'#sessions tr[data-user="{u["user"]}"]')
    deadline = time.time() + 20
    while True:
        s.goto("/console/db/targets")
        if row.count() == 1 and row.locator("td").nth(6).inner_text().strip() != "0":
            break
        assert time.time() < deadline, s.page.inner_text("main")
        time.sleep(0.3)
    expect(row).to_contain_text(fx["run"])
    expect(row).to_contain_text("127.0.0.1")
    with s.page.expect_navigation():
        row.get_by_role("button", name="End session").click()
    expect(s.page.get_by_role("status")).to_contain_text("The session was ended.")
    expect(row).to_have_count(0)
    time.sleep(0.3)
    try:
        live.stdin.write("SELECT 'after-end';\n")
        live.stdin.close()
    except BrokenPipeError:
        pass
    out = live.stdout.read()
    live.wait(timeout=30)
    assert "alive" in out and "after-end" not in out, out


def test_auditor_filters_groups_pages_and_exports_twenty_thousand_events(session, fx, pw, tmp_path):
    s = session("auditor")
    s.goto("/console/audit")
    expect(s.page.get_by_role("heading", level=1)).to_have_text("Audit log")
    s.page.get_by_label("User", exact=True).fill(fx["bulkuser"])
    s.page.get_by_label("Action", exact=True).fill("db.statement")
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Apply").click()
    # One page of 100 statements of one session: one group, not 100 lines.
    groups = s.page.locator("#events tr.group")
    expect(groups).to_have_count(1)
    expect(groups.first).to_contain_text(fx["bulk_session"])
    expect(groups.first).to_contain_text("100 Statements")
    s.shot("audit")
    # Keyset paging: the next pages follow on, however deep.
    first_seq = int(groups.first.locator("tr[data-seq]").first.get_attribute("data-seq"))
    for _ in range(3):
        with s.page.expect_navigation():
            s.page.get_by_role("link", name="Older events →").click()
    seqs = [int(x) for x in groups.first.locator("tr[data-seq]").evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert len(seqs) == 100 and seqs[0] < first_seq and seqs == sorted(seqs, reverse=True)
    # Deep in the log at once: a cursor, not an offset capped at 10,000.
    s.goto(f"/console/audit?user={fx['bulkuser']}&action=db.statement&before={first_seq - 15000}")
    expect(groups.first).to_contain_text("100 Statements")
    # One by one, and one event's detail.
    s.goto(f"/console/audit?user={fx['bulkuser']}&action=db.statement&group=0&limit=5")
    expect(s.page.locator("#events tbody > tr[data-seq]")).to_have_count(5)
    s.page.locator("#events tbody > tr[data-seq] a").first.click()
    expect(s.page.locator("#event")).to_contain_text("db.statement")
    expect(s.page.locator("pre.code")).to_contain_text('"session"')
    s.shot("audit-event")

    # Export the filtered set: 20,000 rows, the same as the API.
    s.goto(f"/console/audit?user={fx['bulkuser']}&action=db.statement")
    with s.page.expect_download(timeout=120000) as dl:
        s.page.get_by_role("link", name=re.compile("Export CSV")).click()
    path = tmp_path / "export.csv"
    dl.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    assert len(rows) == 20000, len(rows)
    r, h = api(pw, fx, "auditor")
    api_events = []
    before = None
    while True:
        params = {"user": fx["bulkuser"], "action": "db.statement", "limit": 1000}
        if before:
            params["before"] = before
        page = r.get("/api/v1/audit", params=params, headers=h).json()
        api_events += page["events"]
        before = page.get("next_before")
        if not before:
            break
    assert len(api_events) == 20000
    for row, e in zip(rows, api_events):
        assert int(row["seq"]) == e["seq"]
        assert row["at"] == e["at"] and row["user"] == e["user"] and row["action"] == e["action"]
        assert row["outcome"] == e["outcome"] and row["hash"] == e["hash"]
        assert same_json(json.loads(row["detail"]), e["detail"]), (row["detail"], e["detail"])
    # The export itself is on record.
    ex = r.get("/api/v1/audit", params={"action": "audit.export", "user": fx["auditor"]["user"]}, headers=h).json()
    assert ex["events"] and ex["events"][0]["family"] == "console"


def test_audit_filters_are_checked_and_the_chain_verified(session, fx):
    s = session("auditor")
    for q, field in [("outcome=maybe", "outcome"), ("from=not-a-date", "from"), ("session=zz", "session")]:
        res = s.goto("/console/audit?" + q)
        assert res.status == 400, (q, res.status)
        expect(s.page.get_by_role("alert")).to_contain_text(field)
    s.goto("/console/audit?outcome=denied&family=gateway")
    codes = s.page.locator("#events .st").evaluate_all("els => els.map(e => e.textContent)")
    assert codes and all("denied" in c for c in codes), codes
    s.goto("/console/audit")
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Verify now").click()
    chain = s.page.locator("#chain")
    expect(chain.locator(".st")).to_have_attribute("data-code", "intact")
    expect(chain).to_contain_text(fx["auditor"]["user"])
    expect(chain).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))


def test_korean_by_default(session, fx):
    s = session("dbadmin", locale="ko-KR")
    s.goto("/console/db/policies")
    assert s.page.locator("html").get_attribute("lang") == "ko"
    expect(s.page.get_by_role("heading", level=1)).to_have_text("DB 접근 정책")
    expect(s.page.get_by_role("navigation", name="주 메뉴").get_by_role("link", name="DB 접근 정책")).to_be_visible()
    s.goto("/console/db/targets")
    expect(s.page.get_by_role("heading", level=1)).to_have_text("DB 대상·세션")
    s.shot("db-targets-ko")
    a = session("auditor", locale="ko-KR")
    a.goto("/console/audit")
    expect(a.page.get_by_role("heading", level=1)).to_have_text("감사 로그")
    expect(a.page.get_by_role("button", name="지금 검증")).to_be_visible()


def test_posts_without_the_csrf_token_change_nothing(session, fx, pw):
    s = session("dbadmin")
    gw = fx["gwuser"]["user"]
    r, h = api(pw, fx, "dbadmin")
    (p,) = r.get("/dbsafer/api/v1/policy/custom/access-policies", params={"userId": gw}, headers=h).json()["results"]
    assert p["lock"] is False
    for url, form in [
        (f"/console/db/policies/{p['index']}/lock", {}),
        ("/console/db/policies/lock", {"userId": gw}),
        (f"/console/db/policies/{p['index']}/delete", {}),
        ("/console/db/policies", {"userId": "csrf-victim", "sqlPrivileges": "ALL"}),
        ("/console/db/targets", {"name": "csrf-target", "kind": "postgres", "host": "127.0.0.1", "port": "5432", "database": "x"}),
        ("/console/db/sessions/0000000000000000/end", {}),
        ("/console/audit/verify", {}),
    ]:
        for extra in [{}, {"csrf": "0" * 64}]:
            res = s.ctx.request.post(s.url(url), form={**form, **extra}, max_redirects=0, headers={"Accept-Language": "en"})
            assert res.status == 403, (url, res.status)
    (after,) = r.get("/dbsafer/api/v1/policy/custom/access-policies", params={"userId": gw}, headers=h).json()["results"]
    assert after == p
    assert r.get("/dbsafer/api/v1/policy/custom/access-policies", params={"userId": "csrf-victim"}, headers=h).json()["results"] == []
    assert r.get("/api/v1/db/targets/csrf-target", headers=h).status == 404


def test_html_in_policies_and_statements_is_text(session, fx):
    xss = fx["xss"]
    s = session("dbadmin")
    s.goto("/console/db/policies")
    expect(s.page.get_by_role("cell", name=xss).first).to_be_visible()
    assert s.page.locator("main img").count() == 0
    s.page.get_by_role("link", name=re.compile("^POLICY_")).last.click()
    a = session("auditor")
    a.goto("/console/audit?family=dbsafer")
    assert a.page.locator("main img").count() == 0
    for p in [s, a]:
        assert p.page.evaluate("typeof window.__xss") == "undefined"
        assert p.dialogs == []


def test_pages_need_their_permission(session, fx):
    n = session("nobody")
    for p in ["/console/db/policies", "/console/db/policies/new", "/console/db/targets", "/console/db/simulate", "/console/audit", "/console/audit/1", "/console/audit/export.csv"]:
        res = n.goto(p) if not p.endswith(".csv") else None
        if res is None:
            res = n.ctx.request.get(n.url(p))
        assert res.status == 403, (p, res.status)
    nav = n.page.get_by_role("navigation", name="Main menu")
    n.goto("/console/")
    expect(nav.get_by_role("link", name="DB policies")).to_have_count(0)
    expect(nav.get_by_role("link", name="Audit log")).to_have_count(0)
    a = session("auditor")
    assert a.goto("/console/db/policies").status == 403
    d = session("dbadmin")
    assert d.goto("/console/audit").status == 403
    assert d.ctx.request.get(d.url("/console/audit/export.csv")).status == 403


def test_every_new_page_has_no_serious_accessibility_violation(session, fx, pw):
    axe = Axe()
    r, h = api(pw, fx, "dbadmin")
    (p,) = r.get("/dbsafer/api/v1/policy/custom/access-policies", params={"userId": fx["gwuser"]["user"]}, headers=h).json()["results"]
    ra, ha = api(pw, fx, "auditor")
    seq = ra.get("/api/v1/audit", params={"action": "db.statement", "limit": 1}, headers=ha).json()["events"][0]["seq"]
    bad = []
    for locale in ["en-US", "ko-KR"]:
        pages = {
            "dbadmin": [
                "/console/db/policies",
                "/console/db/policies/new",
                f"/console/db/policies/{p['index']}",
                "/console/db/targets",
                "/console/db/simulate",
            ],
            "auditor": [
                "/console/audit",
                f"/console/audit?session={fx['bulk_session']}",
                "/console/audit?group=0&limit=20",
                f"/console/audit/{seq}",
            ],
        }
        for who, paths in pages.items():
            s = session(who, locale=locale)
            for path in paths:
                s.goto(path)
                s.page.wait_for_load_state("networkidle")
                details = s.page.locator("#events details")
                if details.count():
                    details.first.evaluate("d => d.open = true")
                for v in axe.run(s.page).response["violations"]:
                    if v["impact"] in ("serious", "critical"):
                        bad.append((locale, path, v["id"], v["help"], [n["html"][:120] for n in v["nodes"][:3]]))
            if who == "dbadmin":
                # The simulator with a result, and the policy form with an error.
                s.goto("/console/db/simulate")
                s.page.locator("#s-user").fill(fx["simuser"])
                s.page.locator("#s-target").select_option(fx["target"])
                s.page.locator("#s-account").fill(fx["run"])
                s.page.locator("#s-sql").fill("SELECT 1")
                with s.page.expect_navigation():
                    s.page.locator("form.stack button[type=submit]").click()
                s.goto("/console/db/policies/new")
                with s.page.expect_response(lambda r: r.request.method == "POST"):
                    s.page.locator("form.policyform button[type=submit]").click()
                for v in axe.run(s.page).response["violations"]:
                    if v["impact"] in ("serious", "critical"):
                        bad.append((locale, "form-error", v["id"], v["help"]))
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
