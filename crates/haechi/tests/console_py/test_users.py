"""Users, roles and the own account in chromium (issue 23 item 3): create a user, edit and
disable, lock -> unlock, revoke a token (the API refuses it afterwards), change your own
password, custom roles, CSRF, HTML in a user's name, 403 for those without admin.users,
axe-core on the new pages, Korean and English. Same server and fixtures as test_console.py."""

import json
import re
import time

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

XSS = "<img src=x onerror=alert(1)>"
NEW_OWN_PASSWORD = "Changed-In-The-Browser-42"


def api_as(pw, fx, user, password):
    r = pw.request.new_context(base_url=fx["url"], ignore_https_errors=True)
    res = r.post("/api/v1/auth", data={"user_id": user, "pwd": password})
    if res.status != 200:
        return r, None, res.status
    token = res.json()["token"].split(" ", 1)[1]
    return r, {"Authorization": "Bearer " + token}, 200


def admin_api(pw, fx):
    r, h, st = api_as(pw, fx, "admin", fx["admin"]["password"])
    assert st == 200
    return r, h


def test_create_a_user_edit_disable_and_enable(session, fx, pw):
    a = session("admin")
    r, h = admin_api(pw, fx)
    a.goto("/console/users")
    expect(a.page.get_by_role("heading", level=1)).to_have_text("Users")
    uid = "cu-browser-" + str(int(time.time() * 1000))
    form = a.page.locator("form[action='/console/users']")
    form.get_by_label("User ID").fill(uid)
    form.get_by_label("Name").fill(XSS)
    form.get_by_label("Password").fill("pw-created-in-browser-1")
    form.get_by_label("Workflow Operator", exact=True).check()
    form.get_by_label("IP allow-list").fill("10.0.0.0/8\n127.0.0.1")
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Create user").click()
    assert a.page.url.endswith(f"/console/users/{uid}?created=1"), a.page.url
    expect(a.page.get_by_role("status").filter(has_text="The user was created")).to_be_visible()
    u = r.get(f"/api/v1/users/{uid}", headers=h).json()
    assert u["name"] == XSS and u["roles"] == ["Workflow Operator"] and u["kind"] == "human", u
    assert len(u["allowed_ips"]) == 2, u
    a.shot("user")

    # The name is text everywhere.
    a.goto("/console/users")
    assert a.page.locator("main img").count() == 0
    assert "<img src=x" not in a.page.content()
    expect(a.page.get_by_role("cell", name=XSS)).to_be_visible()
    assert a.dialogs == [], a.dialogs
    a.shot("users")

    # A second user with the same id: the form again with the engine's words, nothing made.
    before = r.get("/api/v1/users", headers=h, params={"limit": "1000"}).json()["total"]
    form.get_by_label("User ID").fill(uid)
    form.get_by_label("Name").fill("again")
    form.get_by_label("Password").fill("pw-created-in-browser-2")
    with a.page.expect_response(lambda x: x.url.endswith("/console/users") and x.request.method == "POST") as resp:
        a.page.get_by_role("button", name="Create user").click()
    assert resp.value.status == 400, resp.value.status
    expect(a.page.locator("#new-user-error")).to_contain_text(uid)
    expect(form.get_by_label("User ID")).to_have_value(uid)
    expect(form.get_by_label("Password")).to_have_value("")
    # A bad allow-list entry names the field.
    form.get_by_label("User ID").fill(uid + "-b")
    form.get_by_label("Password").fill("pw-created-in-browser-2")
    form.get_by_label("IP allow-list").fill("not-an-address")
    with a.page.expect_response(lambda x: x.url.endswith("/console/users") and x.request.method == "POST") as resp:
        a.page.get_by_role("button", name="Create user").click()
    assert resp.value.status == 400
    expect(a.page.locator("#new-user-error")).to_contain_text("allowed_ips")
    after = r.get("/api/v1/users", headers=h, params={"limit": "1000"}).json()["total"]
    assert before == after

    # Edit: another role and no allow-list.
    a.goto(f"/console/users/{uid}")
    edit = a.page.locator(f"form[action='/console/users/{uid}']")
    edit.get_by_label("Task Developer", exact=True).check()
    edit.get_by_label("IP allow-list").fill("")
    with a.page.expect_navigation():
        edit.get_by_role("button", name="Save").click()
    expect(a.page.get_by_role("status").filter(has_text="Saved")).to_be_visible()
    u = r.get(f"/api/v1/users/{uid}", headers=h).json()
    assert sorted(u["roles"]) == ["Task Developer", "Workflow Operator"] and u["allowed_ips"] == [], u

    # Disable, then enable.
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Disable").click()
    expect(a.page.locator("#user-state")).to_contain_text("disabled")
    assert r.get(f"/api/v1/users/{uid}", headers=h).json()["disabled"] is True
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Enable").click()
    expect(a.page.locator("#user-state")).to_contain_text("active")
    assert r.get(f"/api/v1/users/{uid}", headers=h).json()["disabled"] is False


def test_a_locked_user_is_unlocked_and_can_log_in(session, fx, pw):
    who = fx["locked2"]
    _, _, st = api_as(pw, fx, who["user"], who["password"])
    assert st == 401
    a = session("admin")
    a.goto(f"/console/users/{who['user']}")
    expect(a.page.locator("#user-state")).to_contain_text("locked")
    a.goto("/console/users")
    expect(a.page.locator("tr", has_text=who["user"]).locator(".st")).to_contain_text("locked")
    a.goto(f"/console/users/{who['user']}")
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Unlock").click()
    expect(a.page.get_by_role("status").filter(has_text="unlocked")).to_be_visible()
    expect(a.page.locator("#user-state")).to_contain_text("active")
    _, _, st = api_as(pw, fx, who["user"], who["password"])
    assert st == 200
    s = session()
    s.login("locked2")


def test_revoking_a_token_ends_it_for_the_api(session, fx, pw):
    who = fx["tokened"]
    r = pw.request.new_context(base_url=fx["url"], ignore_https_errors=True)
    h = {"Authorization": "Bearer " + who["token"]}
    assert r.get("/api/v1/me", headers=h).status == 200
    ra, ha = admin_api(pw, fx)
    listed = ra.get(f"/api/v1/users/{who['user']}/tokens", headers=ha).json()["tokens"]
    assert len(listed) == 1, listed
    a = session("admin")
    a.goto(f"/console/users/{who['user']}")
    rows = a.page.locator("#token-list tbody tr")
    expect(rows).to_have_count(1)
    assert who["token"] not in a.page.content()
    with a.page.expect_navigation():
        rows.first.get_by_role("button", name=re.compile("^Revoke")).click()
    expect(a.page.get_by_role("status").filter(has_text="revoked")).to_be_visible()
    expect(a.page.locator("#token-list")).to_have_count(0)
    assert r.get("/api/v1/me", headers=h).status == 401
    assert ra.get(f"/api/v1/users/{who['user']}/tokens", headers=ha).json()["tokens"] == []


def test_change_your_own_password(session, fx, pw):
    who = fx["pwuser"]
    s = session("pwuser")
    s.page.get_by_role("link", name=re.compile("My account")).click()
    expect(s.page.get_by_role("heading", level=1)).to_have_text("My account")
    s.shot("account")

    def change(current, new, again):
        s.page.get_by_label("Current password").fill(current)
        s.page.get_by_label("New password", exact=True).fill(new)
        s.page.get_by_label("New password again").fill(again)
        with s.page.expect_response(lambda x: x.url.endswith("/console/account/password")) as resp:
            s.page.get_by_role("button", name="Change password").click()
        return resp.value.status

    assert change(who["password"], NEW_OWN_PASSWORD, NEW_OWN_PASSWORD + "x") == 400
    expect(s.page.locator("#cpw-error")).to_contain_text("differ")
    assert change("not-my-password", NEW_OWN_PASSWORD, NEW_OWN_PASSWORD) == 400
    expect(s.page.locator("#cpw-error")).to_contain_text("current_password")
    assert NEW_OWN_PASSWORD not in s.page.content() and who["password"] not in s.page.content()
    _, _, st = api_as(pw, fx, who["user"], who["password"])
    assert st == 200, "a refused change changed the password"

    assert change(who["password"], NEW_OWN_PASSWORD, NEW_OWN_PASSWORD) == 303
    s.page.wait_for_url(re.compile(r"/console/login\?pw=1"))
    expect(s.page.get_by_role("status")).to_contain_text("Your password was changed")
    # The session ended with the change; the new password works, the old one no longer.
    s.goto("/console/")
    assert s.page.url.endswith("/console/login"), s.page.url
    _, _, st = api_as(pw, fx, who["user"], who["password"])
    assert st == 401
    _, _, st = api_as(pw, fx, who["user"], NEW_OWN_PASSWORD)
    assert st == 200


def test_roles_page_and_custom_roles(session, fx, pw):
    a = session("admin")
    r, h = admin_api(pw, fx)
    a.goto("/console/roles")
    builtin = a.page.locator("#role-list")
    expect(builtin.get_by_role("row", name=re.compile("^Auditor"))).to_contain_text("audit.read")
    name = "Console Role " + str(int(time.time() * 1000))
    new = a.page.locator("form[action='/console/roles']")
    new.get_by_label("Name").fill(name)
    new.get_by_label("audit.read").check()
    new.get_by_label("workflow.view").check()
    with a.page.expect_navigation():
        a.page.get_by_role("button", name="Create role").click()
    expect(a.page.get_by_role("status").filter(has_text="The role was created")).to_be_visible()
    role = [x for x in r.get("/api/v1/roles", headers=h).json()["roles"] if x["name"] == name][0]
    assert sorted(role["permissions"]) == ["audit.read", "workflow.view"], role
    a.shot("roles")
    card = a.page.locator("article", has=a.page.get_by_role("heading", name=name))
    card.get_by_label("node.view").check()
    with a.page.expect_navigation():
        card.get_by_role("button", name="Save").click()
    role = [x for x in r.get("/api/v1/roles", headers=h).json()["roles"] if x["name"] == name][0]
    assert sorted(role["permissions"]) == ["audit.read", "node.view", "workflow.view"], role
    card = a.page.locator("article", has=a.page.get_by_role("heading", name=name))
    with a.page.expect_navigation():
        card.get_by_role("button", name="Delete").click()
    expect(a.page.get_by_role("status").filter(has_text="The role was deleted")).to_be_visible()
    assert not [x for x in r.get("/api/v1/roles", headers=h).json()["roles"] if x["name"] == name]
    # Any user sees the roles; only admin.users changes them.
    op = session("operator")
    res = op.goto("/console/roles")
    assert res.status == 200
    assert op.page.locator("form[action='/console/roles']").count() == 0


def test_a_post_without_the_csrf_token_changes_nothing(session, fx, pw):
    a = session("admin")
    r, h = admin_api(pw, fx)
    target = fx["operator"]["user"]
    a.goto(f"/console/users/{target}")
    for form in [{"action": "disable"}, {"action": "disable", "csrf": "0" * 64}]:
        res = a.ctx.request.post(a.url(f"/console/users/{target}/state"), form=form,
                                 max_redirects=0, headers={"Accept-Language": "en"})
        assert res.status == 403, res.status
        assert "security token" in res.text()
    uid = "cu-csrf-" + str(int(time.time() * 1000))
    res = a.ctx.request.post(a.url("/console/users"), max_redirects=0,
                             form={"user_id": uid, "name": "x", "password": "pw-csrf-12345"})
    assert res.status == 403
    assert r.get(f"/api/v1/users/{uid}", headers=h).status == 404
    assert r.get(f"/api/v1/users/{target}", headers=h).json()["disabled"] is False


def test_a_user_without_admin_users_gets_403_and_nothing_changes(session, fx, pw):
    s = session("operator")
    for p in ["/console/users", f"/console/users/{fx['pwuser']['user']}"]:
        res = s.goto(p)
        assert res.status == 403, (p, res.status)
        expect(s.page.get_by_role("alert")).to_contain_text("You do not have the right")
    assert s.page.get_by_role("link", name="Users", exact=True).count() == 0
    s.goto("/console/account")
    token = re.search(r'data-csrf="([0-9a-f]+)"', s.page.content()).group(1)
    r, h = admin_api(pw, fx)
    uid = "cu-403-" + str(int(time.time() * 1000))
    res = s.ctx.request.post(s.url("/console/users"), max_redirects=0,
                             form={"csrf": token, "user_id": uid, "name": "x", "password": "pw-forbidden-1"})
    assert res.status == 403
    assert r.get(f"/api/v1/users/{uid}", headers=h).status == 404
    res = s.ctx.request.post(s.url(f"/console/users/{fx['locked']['user']}/state"), max_redirects=0,
                             form={"csrf": token, "action": "unlock"})
    assert res.status == 403
    assert r.get(f"/api/v1/users/{fx['locked']['user']}", headers=h).json()["locked"] is True


def test_users_pages_in_korean_and_english_without_serious_accessibility_violations(session, fx):
    axe = Axe()
    pages = {
        "/console/users": ("Users", "사용자"),
        f"/console/users/{fx['operator']['user']}": ("User " + fx["operator"]["user"], "사용자 " + fx["operator"]["user"]),
        "/console/roles": ("Roles", "역할"),
        "/console/account": ("My account", "내 계정"),
    }
    bad = []
    for locale, i in [("en-US", 0), ("ko-KR", 1)]:
        a = session("admin", locale=locale)
        for p, titles in pages.items():
            a.goto(p)
            expect(a.page.get_by_role("heading", level=1)).to_have_text(titles[i])
            for v in axe.run(a.page).response["violations"]:
                if v["impact"] in ("serious", "critical"):
                    bad.append((locale, p, v["id"], v["help"], [n["html"][:120] for n in v["nodes"][:3]]))
        if locale == "ko-KR":
            a.goto("/console/users")
            expect(a.page.get_by_role("button", name="사용자 만들기")).to_be_visible()
            a.goto(f"/console/users/{fx['operator']['user']}")
            expect(a.page.get_by_role("button", name="저장")).to_be_visible()
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
