"""The credential vault in the console (issue 23 item 1), in chromium: a Vault User builds a
locker and a credential and shares it with a role; a consumer reveals and copies values (each
one audited read, checked through the audit API; opening the page reads nothing); a stranger
gets 404, System Admin cannot read values; a stale edit shows a conflict with the input kept;
a sealed (Manual mode) vault shows its state and is unsealed from the page; HTML in names is
text; POSTs without the CSRF token change nothing; axe-core on every vault page; Korean and
English. Run by tests/console_vault.rs, which prepares the servers and fixtures."""

import json
import os
import re
import time

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect

from conftest import Session

FIGURES = os.environ.get("HAECHI_CONSOLE_FIGURES")


def figure(name, value):
    print(f"FIGURE {name} = {value}")
    if FIGURES:
        with open(FIGURES, "a") as f:
            f.write(json.dumps({name: value}) + "\n")


# What the tests build, in file order (pytest runs them in order, -x stops at the first failure).
STATE = {}


def api(pw, base, user, password):
    """An API client logged in as `user` (the MDRM login)."""
    r = pw.request.new_context(base_url=base, ignore_https_errors=True)
    res = r.post("/api/v1/auth", data={"user_id": user, "pwd": password})
    assert res.status == 200, res.text()
    token = res.json()["token"].split(" ", 1)[1]
    return r, {"Authorization": "Bearer " + token}


def as_user(pw, fx, who):
    u = fx[who]
    return api(pw, fx["url"], u["user"], u["password"])


def reads(pw, fx, cred, user=None):
    """The audited value reads of credential `cred` (newest first), as the Auditor sees them."""
    r, h = as_user(pw, fx, "auditor")
    params = {"action": "credential.value.read", "limit": "1000"}
    if user:
        params["user"] = user
    body = r.get("/api/v1/audit", headers=h, params=params).json()
    return [e for e in body["events"] if e["target"] == f"credential:{cred}"]


def csrf_of(s):
    html = s.page.evaluate("fetch('/console/').then(r => r.text())")
    return re.search(r'data-csrf="([0-9a-f]+)"', html).group(1)


def row(s, attr_name):
    return s.page.locator("#attributes tbody tr").filter(has=s.page.get_by_role("rowheader", name=re.compile("^" + re.escape(attr_name))))


def test_a_vault_user_builds_a_locker_and_a_credential_and_shares_it(session, fx, pw):
    s = session("owner")
    s.page.get_by_role("link", name="Credential vault").click()
    expect(s.page.get_by_role("heading", level=1)).to_have_text("Credential vault")
    expect(s.page.locator("#seal-state")).to_contain_text("UNSEALED")
    # A Vault User does not see the mode or the unseal form (vault.settings).
    assert s.page.locator("#vault-mode").count() == 0
    assert s.page.get_by_role("button", name="Unseal").count() == 0

    locker = "payments-" + str(int(time.time() * 1000))
    s.page.get_by_text("New locker").click()
    s.page.get_by_label(re.compile("^Name")).first.fill(locker)
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Create locker").click()
    m = re.search(r"/console/vault/lockers/(\d+)", s.page.url)
    assert m, s.page.url
    locker_id = int(m.group(1))
    expect(s.page.get_by_role("status")).to_contain_text("Locker created.")
    expect(s.page.locator("#members")).to_contain_text(fx["owner"]["user"])
    expect(s.page.locator("#members")).to_contain_text("own, manage, participate")
    # Share it with the role.
    s.page.get_by_label("Add consumer role").select_option(label=fx["role"]["name"])
    with s.page.expect_navigation():
        s.page.locator("form[action$='/consumers']").get_by_role("button", name="Add", exact=True).click()
    expect(s.page.locator("#consumers")).to_contain_text(fx["role"]["name"])

    # A credential with a standard masked password, a standard user name and a per-user token.
    s.goto("/console/vault")
    cred_name = "pay-db-" + str(int(time.time() * 1000))
    s.page.get_by_text("New credential").click()
    form = s.page.locator("form[action='/console/vault/credentials']")
    form.get_by_label(re.compile("^Name")).fill(cred_name)
    form.get_by_label("Description").first.fill("Payments database")
    for i, (name, kind, masked) in enumerate([("username", "standard", False), ("password", "standard", True), ("token", "user", True)]):
        form.locator(f"#a{i}-name").fill(name)
        form.locator(f"#a{i}-kind").select_option(kind)
        box = form.locator(f"input[name=a{i}_masked]")
        if box.is_checked() != masked:
            box.click()
    with s.page.expect_navigation():
        form.get_by_role("button", name="Create credential").click()
    m = re.search(r"/console/vault/credentials/(\d+)", s.page.url)
    assert m, s.page.url
    cred = int(m.group(1))
    expect(s.page.get_by_role("status").first).to_contain_text("Credential created")

    # Values: typed into password fields, never shown back.
    for attr, value in [("username", "pay_app"), ("password", fx["secret"]), ("token", fx["own_value"])]:
        r = row(s, attr)
        r.locator("input[name=value]").fill(value)
        with s.page.expect_navigation():
            r.get_by_role("button", name="Save").click()
        expect(s.page.locator("#flash-ok")).to_contain_text("Value saved.")
    html = s.page.content()
    assert fx["secret"] not in html and fx["own_value"] not in html
    expect(row(s, "password").locator("[data-mask]")).to_be_visible()

    # Into the locker.
    s.page.get_by_label("Put into locker").select_option(label=locker)
    with s.page.expect_navigation():
        s.page.get_by_role("button", name="Add", exact=True).click()
    expect(s.page.locator("dl.facts")).to_contain_text(locker)
    s.shot("vault-credential-owner")

    # The API sees the same.
    r, h = as_user(pw, fx, "owner")
    got = r.get(f"/v2/credentialvault/credentials/{cred}", headers=h).json()
    assert got["lockerId"] == locker_id, got
    assert [a["name"] for a in got["attributes"]] == ["username", "password", "token"]
    assert [a["userProvided"] for a in got["attributes"]] == [False, False, True]
    consumers = r.get(f"/v2/credentialvault/lockers/{locker_id}/consumers", headers=h).json()["list"]
    assert {"id": fx["role"]["id"]} in consumers, consumers
    vals = r.get(f"/v2/credentialvault/credentials/{cred}/attributevalues", headers=h).json()["list"]
    assert sorted(v["value"] for v in vals) == sorted(["pay_app", fx["secret"], fx["own_value"]])
    STATE.update(locker=locker_id, locker_name=locker, cred=cred, cred_name=cred_name)


def test_a_consumer_reveals_and_copies_each_an_audited_read(session, fx, pw):
    cred = STATE["cred"]
    who = fx["consumer"]["user"]
    s = session("consumer")
    s.ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=fx["url"])
    s.page.clock.install()
    before = len(reads(pw, fx, cred, who))
    s.goto(f"/console/vault/credentials/{cred}")
    expect(s.page.get_by_role("heading", level=1)).to_contain_text(STATE["cred_name"])
    # Opening the page reads no value: none in the page, no read in the audit.
    html = s.page.content()
    assert fx["secret"] not in html and "pay_app" not in html and fx["own_value"] not in html
    assert len(reads(pw, fx, cred, who)) == before
    # The per-user attribute: the consumer has no value of their own yet.
    expect(row(s, "token")).to_contain_text("You have no value yet.")
    s.shot("vault-credential-consumer")

    pwd = row(s, "password")
    t0 = time.time()
    with s.page.expect_response(lambda r: r.url.endswith("/reveal")) as resp:
        pwd.get_by_role("button", name="Reveal").click()
    res = resp.value
    expect(pwd.locator("[data-shown]")).to_be_visible()
    figure("reveal_click_to_value_shown_ms", round((time.time() - t0) * 1000))
    assert res.request.method == "POST"
    assert res.headers["cache-control"] == "no-store", res.headers
    expect(pwd.locator("[data-shown]")).to_have_text(fx["secret"])
    expect(pwd.locator("[data-status]")).to_contain_text("masked again in")
    got = reads(pw, fx, cred, who)
    assert len(got) == before + 1, got
    ev = got[0]
    assert ev["detail"]["via"] == "console.reveal" and ev["outcome"] == "success", ev
    assert fx["secret"] not in json.dumps(ev)
    s.shot("vault-credential-revealed")

    # Masked again after the re-mask time: the value is gone from the DOM.
    s.page.clock.fast_forward(21000)
    expect(pwd.locator("[data-shown]")).to_be_hidden()
    assert fx["secret"] not in s.page.content()
    expect(pwd.locator("[data-status]")).to_have_text("Masked")

    # Reveal again, then Hide: a second read; gone at once.
    pwd.get_by_role("button", name="Reveal").click()
    expect(pwd.locator("[data-shown]")).to_have_text(fx["secret"])
    pwd.get_by_role("button", name="Hide").click()
    assert fx["secret"] not in s.page.content()
    assert len(reads(pw, fx, cred, who)) == before + 2

    # Copy: a third read, the value on the clipboard and never in the DOM.
    user = row(s, "username")
    user.get_by_role("button", name="Copy").click()
    expect(user.locator("[data-status]")).to_contain_text("Copied")
    assert s.page.evaluate("navigator.clipboard.readText()") == "pay_app"
    assert "pay_app" not in s.page.content()
    got = reads(pw, fx, cred, who)
    assert len(got) == before + 3 and got[0]["detail"]["via"] == "console.copy", got[0]

    # The consumer's own value of the per-user attribute.
    tok = row(s, "token")
    tok.locator("input[name=value]").fill("consumer-own-token")
    with s.page.expect_navigation():
        tok.get_by_role("button", name="Save").click()
    tok = row(s, "token")
    tok.get_by_role("button", name="Reveal").click()
    expect(tok.locator("[data-shown]")).to_have_text("consumer-own-token")
    assert fx["own_value"] not in s.page.content(), "another user's per-user value"

    # A GET of the reveal address is no read.
    vid = re.search(r"/values/(\d+)/reveal", pwd.locator("form[data-reveal-form]").get_attribute("action")).group(1)
    n = len(reads(pw, fx, cred, who))
    res = s.ctx.request.get(s.url(f"/console/vault/credentials/{cred}/values/{vid}/reveal"))
    assert res.status == 405, res.status
    assert fx["secret"] not in res.text()
    assert len(reads(pw, fx, cred, who)) == n
    STATE["value_id"] = vid


def test_without_script_reveal_is_a_post_answering_the_one_value(browser, fx, pw):
    cred, vid = STATE["cred"], STATE["value_id"]
    s = Session(browser, fx, "en-US")
    try:
        s.login("consumer")
        token = csrf_of(s)
        n = len(reads(pw, fx, cred, fx["consumer"]["user"]))
        res = s.ctx.request.post(
            s.url(f"/console/vault/credentials/{cred}/values/{vid}/reveal"), form={"csrf": token}
        )
        assert res.status == 200 and res.headers["cache-control"] == "no-store"
        html = res.text()
        assert html.count(fx["secret"]) == 1, "the one value, once"
        assert "pay_app" not in html
        assert len(reads(pw, fx, cred, fx["consumer"]["user"])) == n + 1
    finally:
        s.close()


def test_a_stranger_sees_no_such_credential_and_system_admin_reads_no_value(session, fx, pw):
    cred, vid = STATE["cred"], STATE["value_id"]
    n = len(reads(pw, fx, cred))
    st = session("stranger")
    res = st.goto(f"/console/vault/credentials/{cred}")
    assert res.status == 404, res.status
    expect(st.page.get_by_role("alert")).to_contain_text(f"credential {cred} not found")
    st.goto(f"/console/vault/lockers/{STATE['locker']}")
    expect(st.page.get_by_role("alert")).to_contain_text("not found")
    st.goto("/console/vault")
    assert STATE["cred_name"] not in st.page.content()
    res = st.ctx.request.post(
        st.url(f"/console/vault/credentials/{cred}/values/{vid}/reveal"),
        form={"csrf": csrf_of(st)},
        headers={"Accept": "application/json"},
    )
    assert res.status == 404, res.status
    assert fx["secret"] not in res.text()

    a = session("admin")
    a.goto(f"/console/vault/credentials/{cred}")
    expect(a.page.get_by_role("heading", level=1)).to_contain_text(STATE["cred_name"])
    expect(a.page.locator("#no-values")).to_contain_text("never grants reading them")
    assert a.page.get_by_role("button", name="Reveal").count() == 0
    res = a.ctx.request.post(
        a.url(f"/console/vault/credentials/{cred}/values/{vid}/reveal"),
        form={"csrf": csrf_of(a)},
        headers={"Accept": "application/json"},
    )
    assert res.status == 403, res.status
    assert fx["secret"] not in res.text()
    a.shot("vault-credential-admin")
    # Neither was a read.
    assert len(reads(pw, fx, cred)) == n
    # As the API: System Admin gets 403 for the values too.
    r, h = as_user(pw, fx, "admin")
    assert r.get(f"/v2/credentialvault/credentials/{cred}/attributevalues", headers=h).status == 403


def test_locker_members_act_by_their_permissions(session, fx, pw):
    """The engine's matrix through the pages: a `manage` member edits the locker and sees its
    credentials but reads no value; `participate` alone sees none of them; removed, nothing."""
    cred, vid, locker = STATE["cred"], STATE["value_id"], STATE["locker"]
    stranger = fx["stranger"]
    o = session("owner")
    o.goto(f"/console/vault/lockers/{locker}")
    add = o.page.locator("form[action$='/members']").last
    add.get_by_label("User", exact=True).fill(stranger["user"])
    add.get_by_label("manage").check()
    add.get_by_label("participate").uncheck()
    with o.page.expect_navigation():
        add.get_by_role("button", name="Add", exact=True).click()
    expect(o.page.locator("#flash-ok")).to_contain_text("Member saved.")
    member = o.page.locator(f'#members tr[data-member="{stranger["id"]}"]')
    expect(member).to_contain_text("manage")
    r, h = as_user(pw, fx, "owner")
    members = r.get(f"/v2/credentialvault/lockers/{locker}/members", headers=h).json()["list"]
    assert {"id": stranger["id"], "permissions": ["manage"]} in members, members

    st = session("stranger")
    res = st.goto(f"/console/vault/credentials/{cred}")
    assert res.status == 200
    expect(st.page.locator("#no-values")).to_be_visible()
    assert st.page.get_by_role("button", name="Reveal").count() == 0
    assert fx["secret"] not in st.page.content()
    res = st.ctx.request.post(
        st.url(f"/console/vault/credentials/{cred}/values/{vid}/reveal"), form={"csrf": csrf_of(st)}
    )
    assert res.status == 403 and fx["secret"] not in res.text()
    st.goto(f"/console/vault/lockers/{locker}")
    expect(st.page.locator("#locker-form")).to_be_visible()
    assert st.page.get_by_role("heading", name="Delete locker").count() == 0
    # Managing a locker never becomes owning it: a manager may not make themselves an owner.
    res = st.ctx.request.post(
        st.url(f"/console/vault/lockers/{locker}/members"),
        form={"csrf": csrf_of(st), "user": "#" + str(stranger["id"]), "own": "1"},
        headers={"Accept-Language": "en"},
    )
    assert res.status == 403, res.status

    # Down to `participate`: the credential is no longer visible to them.
    with o.page.expect_navigation():
        o.page.reload()
    row_form = o.page.locator(f'#members tr[data-member="{stranger["id"]}"] form').first
    row_form.get_by_label("manage").uncheck()
    row_form.get_by_label("participate").check()
    with o.page.expect_navigation():
        row_form.get_by_role("button", name="Save").click()
    expect(o.page.locator("#flash-ok")).to_contain_text("Member saved.")
    assert st.goto(f"/console/vault/credentials/{cred}").status == 404
    assert st.goto(f"/console/vault/lockers/{locker}").status == 200
    # Removed: the locker is gone for them too.
    with o.page.expect_navigation():
        o.page.locator(f'#members tr[data-member="{stranger["id"]}"]').get_by_role("button", name="Remove").click()
    expect(o.page.locator("#flash-ok")).to_contain_text("Member removed.")
    assert st.goto(f"/console/vault/lockers/{locker}").status == 404
    members = r.get(f"/v2/credentialvault/lockers/{locker}/members", headers=h).json()["list"]
    assert all(m["id"] != stranger["id"] for m in members), members


def test_a_stale_edit_shows_the_conflict_and_keeps_the_input(session, fx, pw):
    cred = STATE["cred"]
    s = session("owner")
    s.goto(f"/console/vault/credentials/{cred}")
    edit = s.page.locator("#edit-form")
    edit.get_by_label("Description").first.fill("typed in the browser")
    edit.locator("input[id^=e][id$='-desc']").first.fill("attribute note typed")
    # Meanwhile someone else (the API) changes it.
    r, h = as_user(pw, fx, "owner")
    cur = r.get(f"/v2/credentialvault/credentials/{cred}", headers=h).json()
    res = r.put(
        f"/v2/credentialvault/credentials/{cred}",
        headers=h,
        data={"version": cur["version"], "name": STATE["cred_name"] + "-api"},
    )
    assert res.status == 200, res.text()
    with s.page.expect_response(lambda x: x.url.endswith(f"/credentials/{cred}") and x.request.method == "POST") as resp:
        edit.get_by_role("button", name="Save").click()
    assert resp.value.status == 409
    expect(s.page.locator("#conflict")).to_contain_text("Conflict")
    edit = s.page.locator("#edit-form")
    # What the user typed is kept; the field they did not touch shows what is stored now.
    expect(edit.get_by_label("Description").first).to_have_value("typed in the browser")
    expect(edit.locator("input[id^=e][id$='-desc']").first).to_have_value("attribute note typed")
    expect(edit.get_by_label("Name").first).to_have_value(STATE["cred_name"] + "-api")
    s.shot("vault-credential-conflict")
    # Nothing was saved.
    now = r.get(f"/v2/credentialvault/credentials/{cred}", headers=h).json()
    assert now["description"] == "Payments database" and now["version"] == cur["version"] + 1, now
    # Saving again applies the kept input on top of the current version, and keeps the rename.
    with s.page.expect_navigation():
        edit.get_by_role("button", name="Save").click()
    expect(s.page.locator("#flash-ok")).to_contain_text("Credential saved.")
    now = r.get(f"/v2/credentialvault/credentials/{cred}", headers=h).json()
    assert now["description"] == "typed in the browser", now
    assert now["name"] == STATE["cred_name"] + "-api", now
    assert now["attributes"][0]["description"] == "attribute note typed", now
    STATE["cred_name"] = now["name"]

    # Both sides change the same field: the user's input stays, what is stored is shown.
    s.goto(f"/console/vault/lockers/{STATE['locker']}")
    lf = s.page.locator("#locker-form")
    lf.get_by_label("Description").fill("locker note from the browser")
    cur = r.get(f"/v2/credentialvault/lockers/{STATE['locker']}", headers=h).json()
    res = r.put(
        f"/v2/credentialvault/lockers/{STATE['locker']}",
        headers=h,
        data={"version": cur["version"], "description": "locker note from the API"},
    )
    assert res.status == 200, res.text()
    with s.page.expect_response(lambda x: x.request.method == "POST" and "/console/vault/lockers/" in x.url) as resp:
        lf.get_by_role("button", name="Save").click()
    assert resp.value.status == 409
    lf = s.page.locator("#locker-form")
    expect(lf.get_by_label("Description")).to_have_value("locker note from the browser")
    expect(lf.locator("[data-now]")).to_contain_text("locker note from the API")
    s.shot("vault-locker-conflict")


def test_html_in_names_is_text(session, fx):
    s = session("owner")
    for p in ["/console/vault", f"/console/vault/lockers/{fx['xss_locker']}", f"/console/vault/credentials/{fx['xss_cred']}"]:
        s.goto(p)
        assert s.page.locator("main img").count() == 0, p
        assert "<img src=x" not in s.page.content(), p
        expect(s.page.get_by_text(fx["xss"]).first).to_be_visible()
    assert s.dialogs == [], s.dialogs


def test_a_post_without_the_csrf_token_changes_nothing(session, fx, pw):
    cred, vid = STATE["cred"], STATE["value_id"]
    s = session("consumer")
    n = len(reads(pw, fx, cred))
    for form in [{}, {"csrf": "0" * 64}]:
        res = s.ctx.request.post(s.url(f"/console/vault/credentials/{cred}/values/{vid}/reveal"), form=form)
        assert res.status == 403, res.status
        assert fx["secret"] not in res.text()
    assert len(reads(pw, fx, cred)) == n
    o = session("owner")
    for path in [f"/console/vault/credentials/{cred}/delete", f"/console/vault/lockers/{STATE['locker']}/consumers/{fx['role']['id']}/remove"]:
        res = o.ctx.request.post(o.url(path), form={"confirm": "1"}, max_redirects=0, headers={"Accept-Language": "en"})
        assert res.status == 403, (path, res.status)
        assert "security token" in res.text()
    r, h = as_user(pw, fx, "owner")
    assert r.get(f"/v2/credentialvault/credentials/{cred}", headers=h).status == 200
    consumers = r.get(f"/v2/credentialvault/lockers/{STATE['locker']}/consumers", headers=h).json()["list"]
    assert {"id": fx["role"]["id"]} in consumers


def test_bad_input_is_a_clear_4xx_and_changes_nothing(session, fx, pw):
    s = session("owner")
    token = csrf_of(s)
    r, h = as_user(pw, fx, "owner")
    before = len(r.get("/v2/credentialvault/credentials", headers=h).json()["list"])
    res = s.ctx.request.post(
        s.url("/console/vault/credentials"),
        form={"csrf": token, "name": "x" * 60, "a0_name": "password", "a0_kind": "standard"},
    )
    assert res.status == 400, res.status
    assert "at most 50 characters" in res.text()
    # The page comes back with what was typed.
    assert 'value="' + "x" * 60 + '"' in res.text()
    res = s.ctx.request.post(
        s.url(f"/console/vault/credentials/{STATE['cred']}"),
        form={"csrf": token, "version": "not-a-number", "name": "y"},
    )
    assert res.status == 400 and "version" in res.text()
    res = s.ctx.request.post(s.url("/console/vault/lockers/99999999/members"), form={"csrf": token, "user": "nobody-at-all", "own": "1"})
    assert res.status in (400, 404), res.status
    assert len(r.get("/v2/credentialvault/credentials", headers=h).json()["list"]) == before


def test_transfer_owner_and_delete(session, fx, pw):
    r, h = as_user(pw, fx, "owner")
    made = r.post(
        "/v2/credentialvault/credentials",
        headers=h,
        data={"name": "to-give-" + str(int(time.time() * 1000)), "attributes": [{"name": "pin", "userProvided": False}]},
    ).json()
    gone = r.post(
        "/v2/credentialvault/credentials",
        headers=h,
        data={"name": "to-delete-" + str(int(time.time() * 1000)), "attributes": [{"name": "pin", "userProvided": False}]},
    ).json()
    empty = r.post("/v2/credentialvault/lockers", headers=h, data={"name": "empty-" + str(int(time.time() * 1000))}).json()
    o = session("owner")
    # Transfer to the consumer, named by user ID: the credential is theirs, and gone for the owner.
    o.goto(f"/console/vault/credentials/{made['id']}")
    o.page.get_by_label("New owner").fill(fx["consumer"]["user"])
    with o.page.expect_navigation():
        o.page.get_by_role("button", name="Transfer").click()
    expect(o.page.locator("#flash-ok")).to_contain_text("Owner transferred.")
    c, ch = as_user(pw, fx, "consumer")
    assert c.get(f"/v2/credentialvault/credentials/{made['id']}", headers=ch).json()["ownerId"] == fx["consumer"]["id"]
    assert o.goto(f"/console/vault/credentials/{made['id']}").status == 404
    # An unknown new owner: a clear 400 and nothing changes.
    o.goto(f"/console/vault/credentials/{gone['id']}")
    o.page.get_by_label("New owner").fill("no-such-user-at-all")
    with o.page.expect_response(lambda x: x.url.endswith("/owner")) as resp:
        o.page.get_by_role("button", name="Transfer").click()
    assert resp.value.status == 400
    expect(o.page.locator("#flash-err")).to_contain_text("no user with the user ID")
    # Delete needs its confirmation box (a native required field), then goes.
    o.page.get_by_label("Delete it with its attributes and all values").check()
    with o.page.expect_navigation():
        o.page.locator("form[action$='/delete']").get_by_role("button", name="Delete").click()
    expect(o.page.locator("#flash-ok")).to_contain_text("Credential deleted.")
    assert r.get(f"/v2/credentialvault/credentials/{gone['id']}", headers=h).status == 404
    # A locker that holds credentials cannot go (409, with the reason); an empty one can.
    o.goto(f"/console/vault/lockers/{STATE['locker']}")
    o.page.get_by_label("Delete this locker").check()
    with o.page.expect_response(lambda x: x.url.endswith("/delete")) as resp:
        o.page.get_by_role("button", name="Delete").click()
    assert resp.value.status == 409
    expect(o.page.locator("#flash-err")).to_contain_text("remove them from it first")
    o.goto(f"/console/vault/lockers/{empty['id']}")
    o.page.get_by_label("Delete this locker").check()
    with o.page.expect_navigation():
        o.page.get_by_role("button", name="Delete").click()
    expect(o.page.locator("#flash-ok")).to_contain_text("Locker deleted.")
    assert r.get(f"/v2/credentialvault/lockers/{empty['id']}", headers=h).status == 404


def test_korean_by_default(session, fx):
    s = session("consumer", locale="ko-KR")
    s.goto(f"/console/vault/credentials/{STATE['cred']}")
    assert s.page.locator("html").get_attribute("lang") == "ko"
    expect(s.page.get_by_role("link", name="자격 증명 금고").first).to_be_visible()
    expect(row(s, "password").get_by_role("button", name="값 보기")).to_be_visible()
    expect(row(s, "password").get_by_role("button", name="복사")).to_be_visible()
    s.shot("vault-credential-ko")


def test_sealed_vault_shows_its_state_and_unseals_from_the_page(browser, fx, pw):
    sx = dict(fx)
    sx.update(fx["sealed"])
    keeper = Session(browser, sx, "en-US")
    admin = Session(browser, sx, "en-US")
    try:
        keeper.login("keeper")
        keeper.goto(f"/console/vault/credentials/{sx['credential']}")
        expect(keeper.page.locator("#values-sealed")).to_contain_text("sealed")
        expect(row(keeper, "password").locator("[data-sealed]")).to_contain_text("Sealed")
        assert keeper.page.get_by_role("button", name="Reveal").count() == 0
        expect(keeper.page.get_by_role("status").first).to_contain_text("sealed")
        keeper.shot("vault-credential-sealed")

        admin.login("admin")
        admin.goto("/console/vault")
        expect(admin.page.locator("#seal-state")).to_contain_text("SEALED")
        expect(admin.page.locator("#seal-state")).not_to_contain_text("UNSEALED")
        expect(admin.page.locator("#vault-mode")).to_have_text("Manual")
        admin.shot("vault-sealed")
        key_field = admin.page.get_by_label("Master key", exact=True).first
        assert key_field.get_attribute("type") == "password"
        assert key_field.get_attribute("autocomplete") == "off"
        # A wrong key: refused, still sealed, the field empty, the key nowhere in the page.
        wrong = "A" * 43 + "="
        key_field.fill(wrong)
        with admin.page.expect_response(lambda r: r.url.endswith("/console/vault/unseal")) as resp:
            admin.page.get_by_role("button", name="Unseal").click()
        assert resp.value.status == 400
        expect(admin.page.get_by_role("alert")).to_contain_text("not this vault's master key")
        expect(admin.page.locator("#seal-state")).not_to_contain_text("UNSEALED")
        expect(admin.page.get_by_label("Master key", exact=True).first).to_have_value("")
        assert wrong not in admin.page.content()
        # The right key.
        admin.page.get_by_label("Master key", exact=True).first.fill(sx["key"])
        with admin.page.expect_navigation():
            admin.page.get_by_role("button", name="Unseal").click()
        expect(admin.page.locator("#flash-ok")).to_contain_text("The vault is unsealed.")
        expect(admin.page.locator("#seal-state")).to_contain_text("UNSEALED")
        assert sx["key"] not in admin.page.content()
        assert admin.page.get_by_role("button", name="Unseal").count() == 0
        admin.shot("vault-unsealed")
        r, h = api(pw, sx["url"], "admin", fx["admin"]["password"])
        assert r.get("/v2/credentialvault/keys/private", headers=h).json() == {"applied": True}

        # The value is readable again, on Reveal.
        keeper.page.reload()
        assert sx["value"] not in keeper.page.content()
        pwd = row(keeper, "password")
        pwd.get_by_role("button", name="Reveal").click()
        expect(pwd.locator("[data-shown]")).to_have_text(sx["value"])
    finally:
        keeper.close()
        admin.close()


def test_every_vault_page_has_no_serious_accessibility_violation(browser, session, fx):
    axe = Axe()
    bad = []

    def scan(s, name, path, shot):
        s.goto(path)
        s.page.wait_for_load_state("networkidle")
        for v in axe.run(s.page).response["violations"]:
            if v["impact"] in ("serious", "critical"):
                bad.append((name, path, v["id"], v["help"], [n["html"][:160] for n in v["nodes"][:3]]))
        if shot:
            s.shot(name)

    for locale in ["en-US", "ko-KR"]:
        en = locale == "en-US"
        o = session("owner", locale=locale)
        scan(o, "vault", "/console/vault", en)
        scan(o, "vault-locker", f"/console/vault/lockers/{STATE['locker']}", en)
        scan(o, "vault-credential", f"/console/vault/credentials/{STATE['cred']}", False)
        c = session("consumer", locale=locale)
        scan(c, "vault-consumer", "/console/vault", False)
        scan(c, "vault-credential-consumer", f"/console/vault/credentials/{STATE['cred']}", False)
        a = session("admin", locale=locale)
        scan(a, "vault-admin", "/console/vault", False)
        scan(a, "vault-credential-admin", f"/console/vault/credentials/{STATE['cred']}", False)
        scan(a, "vault-not-found", "/console/vault/credentials/999999999", False)
        sx = dict(fx)
        sx.update(fx["sealed"])
        k = Session(browser, sx, locale)
        try:
            k.login("admin")
            scan(k, "vault-state", "/console/vault", False)
        finally:
            k.close()
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
