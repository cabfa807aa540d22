//! The Control Room 11.3 credential vault (issue 3) against a real server over HTTPS: the
//! document's requests replayed with their response shapes, the whole access matrix, versions
//! (409/304), validation and bad input on every route, modes and the master key across real
//! restarts, encryption at rest (no plaintext in the store, the logs or the audit; a ciphertext
//! moved to another row fails cleanly), data key rotation and master key change keeping every
//! value, and the `haechi vault` commands.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

const CV: &str = "/v2/credentialvault";

const CREDENTIAL_KEYS: &[&str] = &[
    "id",
    "createdBy",
    "createdOn",
    "updatedBy",
    "updatedOn",
    "tenantId",
    "version",
    "name",
    "description",
    "lockerId",
    "ownerId",
    "attributes",
];
const ATTRIBUTE_KEYS: &[&str] = &[
    "id",
    "createdBy",
    "createdOn",
    "updatedBy",
    "updatedOn",
    "tenantId",
    "version",
    "name",
    "description",
    "userProvided",
    "masked",
];
const VALUE_KEYS: &[&str] = &[
    "id",
    "createdBy",
    "createdOn",
    "updatedBy",
    "updatedOn",
    "tenantId",
    "version",
    "userId",
    "value",
    "credentialAttributeId",
];
const LOCKER_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "createdBy",
    "createdOn",
    "updatedBy",
    "updatedOn",
    "tenantId",
    "version",
];

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

fn assert_keys(v: &Value, expected: &[&str]) {
    let mut e: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    e.sort();
    assert_eq!(keys(v), e, "fields of {v}");
}

/// `2024-05-20T09:00:00.123Z`
fn assert_iso_ms(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    let b = s.as_bytes();
    assert_eq!(b.len(), 24, "{s}");
    assert!(
        b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "{s}"
    );
}

fn assert_stamps(v: &Value) {
    for k in ["createdOn", "updatedOn"] {
        assert_iso_ms(&v[k]);
    }
    for k in ["id", "createdBy", "updatedBy", "version"] {
        assert!(v[k].is_i64(), "{k} must be a number in {v}");
    }
    assert_eq!(v["tenantId"], 1);
}

/// A caller of the vault API.
struct Who {
    base: String,
    token: String,
    id: i64,
    user_id: String,
}

impl Who {
    async fn from_token(s: &Server, token: String) -> Who {
        let (st, me) = call(client().get(s.url("/api/v1/me")).bearer_auth(&token)).await;
        assert_eq!(st, 200, "{me}");
        Who {
            base: s.base.clone(),
            token,
            id: me["id"].as_i64().unwrap(),
            user_id: me["user_id"].as_str().unwrap().to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{CV}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        call(
            client()
                .get(self.url(path))
                .header("X-Authorization", &self.token),
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        call(
            client()
                .post(self.url(path))
                .header("X-Authorization", &self.token)
                .json(&body),
        )
        .await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        call(
            client()
                .put(self.url(path))
                .header("X-Authorization", &self.token)
                .json(&body),
        )
        .await
    }

    async fn put_empty(&self, path: &str) -> (u16, Value) {
        call(
            client()
                .put(self.url(path))
                .header("X-Authorization", &self.token),
        )
        .await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        call(
            client()
                .delete(self.url(path))
                .header("X-Authorization", &self.token),
        )
        .await
    }

    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        ctype: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        call(
            client()
                .request(method, self.url(path))
                .header("X-Authorization", &self.token)
                .header("Content-Type", ctype)
                .body(body),
        )
        .await
    }

    /// Creates a credential with `(name, userProvided)` attributes; returns it.
    async fn credential(&self, attrs: &[(&str, bool)]) -> Value {
        let attributes: Vec<Value> = attrs
            .iter()
            .map(|(n, up)| json!({"name": n, "userProvided": up, "masked": true}))
            .collect();
        let (st, c) = self
            .post(
                "/credentials",
                json!({"name": unique("cred"), "description": "test", "attributes": attributes}),
            )
            .await;
        assert_eq!(st, 201, "{c}");
        c
    }

    async fn locker(&self) -> Value {
        let (st, l) = self
            .post(
                "/lockers",
                json!({"name": unique("locker"), "description": "test"}),
            )
            .await;
        assert_eq!(st, 201, "{l}");
        l
    }

    /// Stores values `(attribute id, value)`; returns the stored values.
    async fn values(&self, cred: i64, items: &[(i64, &str)]) -> Vec<Value> {
        let body: Vec<Value> = items
            .iter()
            .map(|(a, v)| json!({"credentialAttributeId": a, "value": v}))
            .collect();
        let (st, v) = self
            .post(&format!("/credentials/{cred}/attributevalues"), json!(body))
            .await;
        assert_eq!(st, 201, "{v}");
        v.as_array().unwrap().clone()
    }

    /// `(attribute id, userId, value)` of the values this caller reads, sorted.
    async fn read(&self, cred: i64) -> Vec<(i64, Option<i64>, String)> {
        let (st, v) = self
            .get(&format!("/credentials/{cred}/attributevalues"))
            .await;
        assert_eq!(st, 200, "{v}");
        let mut out: Vec<_> = v["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["credentialAttributeId"].as_i64().unwrap(),
                    x["userId"].as_i64(),
                    x["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

async fn user(s: &Server, roles: &[&str]) -> Who {
    let (_, _, token) = user_with_roles(s, roles).await;
    Who::from_token(s, token).await
}

async fn admin(s: &Server) -> Who {
    Who::from_token(s, admin_token(s).await).await
}

/// A custom role holding `vault.use`; returns (id, name).
async fn consumer_role(s: &Server) -> (i64, String) {
    let name = unique("consumers");
    let (st, r) = call(
        client()
            .post(s.url("/api/v1/roles"))
            .bearer_auth(admin_token(s).await)
            .json(&json!({"name": name, "permissions": ["vault.use"]})),
    )
    .await;
    assert_eq!(st, 201, "{r}");
    (r["id"].as_i64().unwrap(), name)
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

fn ids(list: &Value) -> Vec<i64> {
    list["list"]
        .as_array()
        .unwrap_or_else(|| panic!("no list in {list}"))
        .iter()
        .map(id)
        .collect()
}

/// Audit events (newest first) as an Auditor.
async fn audit(s: &Server, query: &str) -> Vec<Value> {
    let (_, _, auditor) = user_with_roles(s, &["Auditor"]).await;
    let (st, body) = call(
        client()
            .get(s.url(&format!("/api/v1/audit?limit=1000&{query}")))
            .bearer_auth(&auditor),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body["events"].as_array().unwrap().clone()
}

fn master_key_of(s: &Server) -> String {
    std::fs::read_to_string(s.data_dir.join("vault.key"))
        .expect("the Express key file")
        .trim()
        .to_owned()
}

/// A fresh random master key in base64 (openssl is not needed: 32 bytes from the OS).
fn random_key() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    base64(&b)
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---- the document, replayed ---------------------------------------------------------------------

#[tokio::test]
async fn the_documents_requests_replayed_with_their_shapes() {
    let s = shared();
    let owner = user(s, &["Vault User"]).await;
    let other = user(s, &["Vault User"]).await;

    // 1. Create a credential: the document's body.
    let name = unique("SharePointLogin");
    let (st, c) = owner
        .post(
            "/credentials",
            json!({ "name": name, "description": "Credentials to login to SharePoint", "attributes": [
                { "name": "Username", "description": "Name of the user", "userProvided": true, "masked": true } ] }),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    assert_keys(&c, CREDENTIAL_KEYS);
    assert_stamps(&c);
    assert_eq!(c["name"], name.as_str());
    assert_eq!(c["description"], "Credentials to login to SharePoint");
    assert_eq!(c["ownerId"], owner.id);
    assert_eq!(c["createdBy"], owner.id);
    assert_eq!(c["lockerId"], Value::Null);
    assert_eq!(c["version"], 0);
    let attr = &c["attributes"][0];
    assert_keys(attr, ATTRIBUTE_KEYS);
    assert_stamps(attr);
    assert_eq!(
        (
            attr["name"].as_str(),
            attr["userProvided"].as_bool(),
            attr["masked"].as_bool()
        ),
        (Some("Username"), Some(true), Some(true))
    );
    let cid = id(&c);
    let aid = id(attr);

    // 3. Get it by id: the same object.
    let (st, g) = owner.get(&format!("/credentials/{cid}")).await;
    assert_eq!(st, 200);
    assert_eq!(g, c);

    // 2. List, with consumed / name / names.
    let (st, l) = owner.get("/credentials?consumed=false").await;
    assert_eq!(st, 200);
    let mine = l["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| id(x) == cid)
        .expect("listed")
        .clone();
    let mut listed_keys = CREDENTIAL_KEYS.to_vec();
    listed_keys.push("completed");
    assert_keys(&mine, &listed_keys);
    assert_eq!(mine["completed"], false);
    let (_, l) = owner.get(&format!("/credentials?name={name}")).await;
    assert_eq!(ids(&l), vec![cid]);
    let (_, l) = owner
        .get(&format!("/credentials?names={name},{}", unique("nothing")))
        .await;
    assert_eq!(ids(&l), vec![cid]);
    let (_, l) = owner.get("/credentials?consumed=true").await;
    assert!(
        !ids(&l).contains(&cid),
        "the owner does not consume their own credential through a locker"
    );

    // Attribute values: create with the document's body (ids as strings) at `.../attributevalue`.
    let (st, v) = owner
        .post(
            &format!("/credentials/{cid}/attributevalue"),
            json!([{ "credentialAttributeId": aid.to_string(), "value": "Jane.Smith" }]),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let value = &v[0];
    assert_keys(value, VALUE_KEYS);
    assert_stamps(value);
    assert_eq!(value["value"], "Jane.Smith");
    assert_eq!(value["credentialAttributeId"], aid);
    assert_eq!(
        value["userId"], owner.id,
        "a userProvided attribute's value belongs to its user"
    );
    let vid = id(value);
    let (_, l) = owner.get(&format!("/credentials?name={name}")).await;
    assert_eq!(l["list"][0]["completed"], true);

    // List values: {"list":[...]}.
    let (st, lv) = owner
        .get(&format!("/credentials/{cid}/attributevalues"))
        .await;
    assert_eq!(st, 200);
    assert_eq!(lv["list"].as_array().unwrap().len(), 1);
    assert_eq!(lv["list"][0], *value);

    // Update a value: the document's array body.
    let (st, u) = owner
        .put(
            &format!("/credentials/{cid}/attributevalues/{vid}"),
            json!([{ "id": vid.to_string(), "version": 0, "value": "", "credentialAttributeId": aid.to_string() }]),
        )
        .await;
    assert_eq!(st, 200, "{u}");
    assert_keys(&u[0], VALUE_KEYS);
    assert_eq!(
        (u[0]["value"].as_str(), u[0]["version"].as_i64()),
        (Some(""), Some(1))
    );

    // 4. Update the credential as the document does (only what changes, attribute by id).
    let (st, u) = owner
        .put(
            &format!("/credentials/{cid}"),
            json!({ "id": cid.to_string(), "version": 0, "name": name, "description": "Login details for SharePoint",
                    "lockerId": null, "ownerId": owner.id,
                    "attributes": [{ "id": aid, "version": 0, "description": "SharePoint Username", "masked": true }] }),
        )
        .await;
    assert_eq!(st, 200, "{u}");
    assert_keys(&u, CREDENTIAL_KEYS);
    assert_eq!(u["description"], "Login details for SharePoint");
    assert_eq!(u["version"], 1);
    assert_eq!(u["attributes"][0]["description"], "SharePoint Username");
    assert_eq!(u["attributes"][0]["name"], "Username");
    assert_eq!(u["attributes"][0]["version"], 1);
    // A new attribute (no id) is added; the others stay.
    let (st, u) = owner
        .put(&format!("/credentials/{cid}"), json!({"version": 1, "attributes": [{"name": "Password", "userProvided": false, "masked": true}]}))
        .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["attributes"].as_array().unwrap().len(), 2);
    assert_eq!(u["attributes"][1]["name"], "Password");
    assert_eq!(u["attributes"][1]["version"], 0);
    assert_eq!(u["version"], 2);
    // The list gives the attributes in the same order (creation, not name: "Password" < "Username").
    let (_, l) = owner.get(&format!("/credentials?name={name}")).await;
    let names: Vec<&str> = l["list"][0]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(names, ["Username", "Password"], "{l}");

    // Lockers: create with the document's body.
    let lname = unique("SalesForceLocker");
    let (st, l) = owner
        .post("/lockers", json!({ "name": lname, "description": "Use this to store all credentials for the SalesForce application" }))
        .await;
    assert_eq!(st, 201, "{l}");
    assert_keys(&l, LOCKER_KEYS);
    assert_stamps(&l);
    assert_eq!(
        (
            l["name"].as_str(),
            l["version"].as_i64(),
            l["createdBy"].as_i64()
        ),
        (Some(lname.as_str()), Some(0), Some(owner.id))
    );
    let lid = id(&l);
    let (_, list) = owner.get("/lockers").await;
    assert!(ids(&list).contains(&lid));
    let (_, list) = owner.get("/lockers?consumed=false").await;
    assert!(ids(&list).contains(&lid));
    let (_, list) = owner.get("/lockers?consumed=true").await;
    assert!(!ids(&list).contains(&lid));
    let (st, adv) = owner.get("/lockers/advanced").await;
    assert_eq!(st, 200);
    let entry = adv["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| id(x) == lid)
        .unwrap()
        .clone();
    let mut adv_keys = LOCKER_KEYS.to_vec();
    adv_keys.extend(["members", "countOfCredentials"]);
    assert_keys(&entry, &adv_keys);
    assert_eq!(
        entry["members"],
        json!([{"id": owner.id, "permissions": ["participate", "own", "manage"]}])
    );
    assert_eq!(entry["countOfCredentials"], 0);
    let (st, g) = owner.get(&format!("/lockers/{lid}")).await;
    assert_eq!(st, 200);
    assert_eq!(g, l);
    // Update with the document's body: "id" with spaces, the key "name " with a trailing space.
    let renamed = unique("SharePoint-Locker");
    let (st, u) = owner
        .put(&format!("/lockers/{lid}"), json!({ "id": format!(" {lid} "), "name ": renamed, "description": "SharePoint 자격증명을 관리하는 사물함", "version": 0 }))
        .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(
        (u["name"].as_str(), u["version"].as_i64()),
        (Some(renamed.as_str()), Some(1))
    );
    assert_eq!(u["description"], "SharePoint 자격증명을 관리하는 사물함");

    // Consumers: {"id":N} (and the document's string form).
    let (r1, _) = consumer_role(s).await;
    let (r2, _) = consumer_role(s).await;
    let (st, b) = owner
        .put(&format!("/lockers/{lid}/consumers"), json!({"id": r1}))
        .await;
    assert_eq!(st, 204, "{b}");
    assert_eq!(b, Value::Null);
    let (st, _) = owner
        .put(
            &format!("/lockers/{lid}/consumers"),
            json!({"id": r2.to_string()}),
        )
        .await;
    assert_eq!(st, 204);
    let (st, cons) = owner.get(&format!("/lockers/{lid}/consumers")).await;
    assert_eq!(st, 200);
    assert_eq!(cons, json!({"list": [{"id": r1}, {"id": r2}]}));

    // Members.
    let (st, _) = owner
        .put(
            &format!("/lockers/{lid}/members/{}", other.id),
            json!({"permissions": ["participate", "manage"]}),
        )
        .await;
    assert_eq!(st, 204);
    let (st, m) = owner.get(&format!("/lockers/{lid}/members")).await;
    assert_eq!(st, 200);
    let mut members = m["list"].as_array().unwrap().clone();
    members.sort_by_key(id);
    let mut expected = vec![
        json!({"id": owner.id, "permissions": ["participate", "own", "manage"]}),
        json!({"id": other.id, "permissions": ["participate", "manage"]}),
    ];
    expected.sort_by_key(id);
    assert_eq!(members, expected);

    // Credentials in a locker (the document lists them at `.../credentials/`).
    let (st, added) = owner
        .put_empty(&format!("/lockers/{lid}/credentials/{cid}"))
        .await;
    assert_eq!(st, 200, "{added}");
    assert_eq!(added["lockerId"], lid);
    assert_eq!(added["version"], 3);
    let (st, inside) = owner.get(&format!("/lockers/{lid}/credentials/")).await;
    assert_eq!(st, 200, "{inside}");
    assert_eq!(ids(&inside), vec![cid]);
    assert_keys(&inside["list"][0], &listed_keys);
    let (_, adv) = owner.get("/lockers/advanced").await;
    assert_eq!(
        adv["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| id(x) == lid)
            .unwrap()["countOfCredentials"],
        1
    );
    let (st, e) = owner.delete(&format!("/lockers/{lid}")).await;
    assert_eq!(
        st, 409,
        "a locker that holds credentials is not deleted: {e}"
    );
    assert_keys(&e, &["code", "message"]);
    let (st, _) = owner
        .delete(&format!("/lockers/{lid}/credentials/{cid}"))
        .await;
    assert_eq!(st, 204);

    // Delete a value with the document's `.../values/{id}` spelling.
    let (st, _) = owner
        .delete(&format!("/credentials/{cid}/values/{vid}"))
        .await;
    assert_eq!(st, 204);
    assert!(owner.read(cid).await.is_empty());

    // 5. Transfer ownership: the old owner no longer sees it, the new one does.
    let (st, t) = owner
        .put_empty(&format!("/credentials/{cid}/owner/{}", other.id))
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["ownerId"], other.id);
    assert_eq!(owner.get(&format!("/credentials/{cid}")).await.0, 404);
    assert_eq!(other.get(&format!("/credentials/{cid}")).await.0, 200);

    // Deletes: consumer, member, locker, credential.
    assert_eq!(
        owner
            .delete(&format!("/lockers/{lid}/consumers/{r1}"))
            .await
            .0,
        204
    );
    assert_eq!(
        owner
            .delete(&format!("/lockers/{lid}/members/{}", other.id))
            .await
            .0,
        204
    );
    assert_eq!(owner.delete(&format!("/lockers/{lid}")).await.0, 204);
    assert_eq!(owner.get(&format!("/lockers/{lid}")).await.0, 404);
    assert_eq!(other.delete(&format!("/credentials/{cid}")).await.0, 204);
    assert_eq!(other.get(&format!("/credentials/{cid}")).await.0, 404);

    // The document's `//` after credentialvault.
    let (st, _) = call(
        client()
            .get(s.url("/v2/credentialvault//lockers"))
            .header("X-Authorization", &owner.token),
    )
    .await;
    assert_eq!(st, 200);

    // Mode and master key (System Admin).
    let a = admin(s).await;
    assert_eq!(a.get("/mode").await, (200, json!({"name": "Express"})));
    assert_eq!(
        a.get("/keys/private").await,
        (200, json!({"applied": true}))
    );
}

#[tokio::test]
async fn errors_have_the_vault_envelope_and_tokens_work_in_every_carrier() {
    let s = shared();
    let (st, e) = call(client().get(s.url("/v2/credentialvault/credentials"))).await;
    assert_eq!(st, 401);
    assert_keys(&e, &["code", "message"]);
    let owner = user(s, &["Vault User"]).await;
    for req in [
        client()
            .get(s.url("/v2/credentialvault/lockers"))
            .bearer_auth(&owner.token),
        client()
            .get(s.url("/v2/credentialvault/lockers"))
            .header("Authorization", &owner.token),
        client().get(s.url(&format!("/v2/credentialvault/lockers?auth={}", owner.token))),
    ] {
        assert_eq!(call(req).await.0, 200);
    }
    let (st, e) = owner.get("/credentials/99999999").await;
    assert_eq!(st, 404);
    assert_keys(&e, &["code", "message"]);
    assert_eq!(e["code"], "not.found");
    let (st, _) = owner.get("/credentials/abc").await;
    assert_eq!(st, 404);
}

// ---- access -------------------------------------------------------------------------------------

#[tokio::test]
async fn the_access_matrix() {
    let s = shared();
    let (role, role_name) = consumer_role(s).await;
    let owner = user(s, &["Vault User"]).await;
    let consumer = user(s, &["Vault User", &role_name]).await;
    let consumer2 = user(s, &[&role_name]).await; // vault.use through the custom role alone
    let participant = user(s, &["Vault User"]).await;
    let manager = user(s, &["Vault User"]).await;
    let locker_admin = user(s, &["Locker Admin"]).await;
    let outsider = user(s, &["Vault User"]).await;
    let no_vault = user(s, &["Auditor"]).await;
    let sysadmin = admin(s).await;

    // The owner's locker with a credential: a standard attribute and a userProvided one.
    let l = owner.locker().await;
    let lid = id(&l);
    let c = owner
        .credential(&[("host", false), ("password", true)])
        .await;
    let cid = id(&c);
    let (std_attr, up_attr) = (id(&c["attributes"][0]), id(&c["attributes"][1]));
    owner
        .values(cid, &[(std_attr, "db.example.com"), (up_attr, "owner-pw")])
        .await;
    assert_eq!(
        owner
            .put_empty(&format!("/lockers/{lid}/credentials/{cid}"))
            .await
            .0,
        200
    );
    assert_eq!(
        owner
            .put(&format!("/lockers/{lid}/consumers"), json!({"id": role}))
            .await
            .0,
        204
    );
    assert_eq!(
        owner
            .put(
                &format!("/lockers/{lid}/members/{}", participant.id),
                json!({"permissions": ["participate"]})
            )
            .await
            .0,
        204
    );
    assert_eq!(
        owner
            .put(
                &format!("/lockers/{lid}/members/{}", manager.id),
                json!({"permissions": ["manage"]})
            )
            .await
            .0,
        204
    );
    // The participant's own credential in the same locker.
    let pc = participant.credential(&[("token", false)]).await;
    let pcid = id(&pc);
    participant
        .values(pcid, &[(id(&pc["attributes"][0]), "participant-secret")])
        .await;
    let (st, b) = participant
        .put_empty(&format!("/lockers/{lid}/credentials/{pcid}"))
        .await;
    assert_eq!(st, 200, "{b}");
    // Someone else's credential cannot be put into the locker by a participant: not theirs.
    let oc = outsider.credential(&[("x", false)]).await;
    assert_eq!(
        participant
            .put_empty(&format!("/lockers/{lid}/credentials/{}", id(&oc)))
            .await
            .0,
        404
    );
    // ... nor by the outsider, who is no member.
    assert_eq!(
        outsider
            .put_empty(&format!("/lockers/{lid}/credentials/{}", id(&oc)))
            .await
            .0,
        404
    );

    let cred = format!("/credentials/{cid}");
    let vals = format!("/credentials/{cid}/attributevalues");
    let lk = format!("/lockers/{lid}");

    // No vault.use at all: 403 everywhere, even for listing.
    for path in [
        "/credentials",
        "/lockers",
        "/lockers/advanced",
        cred.as_str(),
        lk.as_str(),
    ] {
        assert_eq!(no_vault.get(path).await.0, 403, "{path}");
    }
    // Mode and keys are System Admin's.
    for who in [&owner, &locker_admin, &consumer] {
        assert_eq!(who.get("/mode").await.0, 403);
        assert_eq!(who.get("/keys/private").await.0, 403);
        assert_eq!(
            who.put("/keys/private", json!({"privateKey": random_key()}))
                .await
                .0,
            403
        );
    }
    assert_eq!(sysadmin.get("/mode").await.0, 200);

    // The outsider: nothing exists.
    for path in [
        cred.as_str(),
        vals.as_str(),
        lk.as_str(),
        &format!("{lk}/credentials"),
        &format!("{lk}/members"),
        &format!("{lk}/consumers"),
    ] {
        assert_eq!(outsider.get(path).await.0, 404, "outsider GET {path}");
    }
    assert_eq!(
        outsider
            .put(&cred, json!({"version": 0, "description": "x"}))
            .await
            .0,
        404
    );
    assert_eq!(outsider.delete(&cred).await.0, 404);
    assert_eq!(
        outsider
            .put(&lk, json!({"version": 0, "description": "x"}))
            .await
            .0,
        404
    );
    assert_eq!(outsider.delete(&lk).await.0, 404);
    assert_eq!(
        outsider
            .put(&format!("{lk}/consumers"), json!({"id": role}))
            .await
            .0,
        404
    );
    assert_eq!(
        outsider
            .put(
                &format!("{lk}/members/{}", outsider.id),
                json!({"permissions": ["own"]})
            )
            .await
            .0,
        404
    );
    assert_eq!(
        outsider
            .post(
                &vals,
                json!([{"credentialAttributeId": up_attr, "value": "x"}])
            )
            .await
            .0,
        404
    );
    let (_, list) = outsider.get("/credentials").await;
    assert!(!ids(&list).contains(&cid));
    let (_, list) = outsider.get("/lockers").await;
    assert!(!ids(&list).contains(&lid));

    // The participant sees the locker and only their own credential in it.
    assert_eq!(participant.get(&lk).await.0, 200);
    let (_, inside) = participant.get(&format!("{lk}/credentials")).await;
    assert_eq!(ids(&inside), vec![pcid]);
    assert_eq!(participant.get(&cred).await.0, 404);
    assert_eq!(participant.get(&vals).await.0, 404);
    let (_, list) = participant.get("/credentials").await;
    assert!(!ids(&list).contains(&cid));
    assert_eq!(
        participant
            .put(&lk, json!({"version": 0, "description": "x"}))
            .await
            .0,
        403
    );
    assert_eq!(participant.delete(&lk).await.0, 403);
    assert_eq!(
        participant
            .put(&format!("{lk}/consumers"), json!({"id": role}))
            .await
            .0,
        403
    );
    assert_eq!(
        participant
            .put(
                &format!("{lk}/members/{}", outsider.id),
                json!({"permissions": ["participate"]})
            )
            .await
            .0,
        403
    );
    assert_eq!(
        participant
            .delete(&format!("{lk}/credentials/{cid}"))
            .await
            .0,
        404
    );
    assert_eq!(
        participant
            .delete(&format!("{lk}/credentials/{pcid}"))
            .await
            .0,
        204
    );
    assert_eq!(
        participant
            .put_empty(&format!("{lk}/credentials/{pcid}"))
            .await
            .0,
        200
    );

    // The manager edits the locker, its members and consumers, sees the credentials but not their values.
    assert_eq!(manager.get(&cred).await.0, 200);
    let (_, inside) = manager.get(&format!("{lk}/credentials")).await;
    let mut got = ids(&inside);
    got.sort();
    let mut want = vec![cid, pcid];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(manager.get(&vals).await.0, 403);
    assert_eq!(
        manager
            .put(&cred, json!({"version": 1, "description": "x"}))
            .await
            .0,
        403
    );
    assert_eq!(manager.delete(&cred).await.0, 403);
    let version = manager.get(&lk).await.1["version"].clone();
    let (st, l2) = manager
        .put(&lk, json!({"version": version, "description": "managed"}))
        .await;
    assert_eq!(st, 200, "{l2}");
    assert_eq!(
        manager
            .put(
                &format!("{lk}/members/{}", outsider.id),
                json!({"permissions": ["participate"]})
            )
            .await
            .0,
        204
    );
    assert_eq!(
        manager
            .delete(&format!("{lk}/members/{}", outsider.id))
            .await
            .0,
        204
    );
    assert_eq!(
        manager
            .put(
                &format!("{lk}/members/{}", manager.id),
                json!({"permissions": ["own"]})
            )
            .await
            .0,
        403,
        "manage cannot grant own"
    );
    assert_eq!(
        manager
            .delete(&format!("{lk}/members/{}", owner.id))
            .await
            .0,
        403,
        "manage cannot remove an owner"
    );
    assert_eq!(manager.delete(&lk).await.0, 403);
    let (r3, _) = consumer_role(s).await;
    assert_eq!(
        manager
            .put(&format!("{lk}/consumers"), json!({"id": r3}))
            .await
            .0,
        204
    );
    assert_eq!(manager.delete(&format!("{lk}/consumers/{r3}")).await.0, 204);
    assert_eq!(
        manager.delete(&format!("{lk}/credentials/{pcid}")).await.0,
        204,
        "manage removes any credential"
    );
    assert_eq!(
        participant
            .put_empty(&format!("{lk}/credentials/{pcid}"))
            .await
            .0,
        200
    );

    // Consumers read the credential and values: the standard value and their own userProvided one.
    assert_eq!(consumer.get(&cred).await.0, 200);
    assert_eq!(consumer.get(&lk).await.0, 200);
    assert_eq!(
        consumer.read(cid).await,
        vec![(std_attr, None, "db.example.com".into())]
    );
    assert_eq!(
        consumer
            .values(cid, &[(up_attr, "consumer-pw")])
            .await
            .len(),
        1
    );
    assert_eq!(
        consumer2
            .values(cid, &[(up_attr, "consumer2-pw")])
            .await
            .len(),
        1
    );
    assert_eq!(
        consumer.read(cid).await,
        vec![
            (std_attr, None, "db.example.com".into()),
            (up_attr, Some(consumer.id), "consumer-pw".into())
        ]
    );
    assert_eq!(
        consumer2.read(cid).await,
        vec![
            (std_attr, None, "db.example.com".into()),
            (up_attr, Some(consumer2.id), "consumer2-pw".into())
        ]
    );
    assert_eq!(
        owner.read(cid).await,
        vec![
            (std_attr, None, "db.example.com".into()),
            (up_attr, Some(owner.id), "owner-pw".into())
        ]
    );
    let (st, _) = consumer
        .post(
            &vals,
            json!([{"credentialAttributeId": std_attr, "value": "evil.example.com"}]),
        )
        .await;
    assert_eq!(st, 403, "a consumer does not set a standard attribute");
    let (_, cv) = consumer.get(&vals).await;
    let std_value = cv["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["userId"].is_null())
        .unwrap()
        .clone();
    let mine = cv["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["userId"] == consumer.id)
        .unwrap()
        .clone();
    assert_eq!(
        consumer
            .put(
                &format!("{vals}/{}", id(&std_value)),
                json!([{"version": 0, "value": "evil"}])
            )
            .await
            .0,
        403
    );
    assert_eq!(
        consumer
            .delete(&format!("{vals}/{}", id(&std_value)))
            .await
            .0,
        403
    );
    // Another user's own value does not exist for the owner or another consumer.
    assert_eq!(
        consumer2
            .put(
                &format!("{vals}/{}", id(&mine)),
                json!([{"version": 0, "value": "x"}])
            )
            .await
            .0,
        404
    );
    assert_eq!(owner.delete(&format!("{vals}/{}", id(&mine))).await.0, 404);
    assert_eq!(
        consumer
            .put(&cred, json!({"version": 1, "description": "x"}))
            .await
            .0,
        403
    );
    assert_eq!(consumer.delete(&cred).await.0, 403);
    assert_eq!(
        consumer
            .put(&lk, json!({"version": 1, "description": "x"}))
            .await
            .0,
        403
    );
    assert_eq!(
        consumer.delete(&format!("{lk}/credentials/{cid}")).await.0,
        403
    );
    let (_, consumed) = consumer.get("/credentials?consumed=true").await;
    assert!(ids(&consumed).contains(&cid) && ids(&consumed).contains(&pcid));
    let (_, not_consumed) = consumer.get("/credentials?consumed=false").await;
    assert!(!ids(&not_consumed).contains(&cid));
    let (_, lockers) = consumer.get("/lockers?consumed=true").await;
    assert!(ids(&lockers).contains(&lid));
    // The consumer's `completed`: the standard value and their own value exist.
    let (_, mine_list) = consumer.get(&format!("{lk}/credentials")).await;
    let entry = mine_list["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| id(x) == cid)
        .unwrap()
        .clone();
    assert_eq!(entry["completed"], true);

    // The Locker Admin sees and manages everything, but reads no value.
    assert_eq!(locker_admin.get(&cred).await.0, 200);
    assert_eq!(locker_admin.get(&vals).await.0, 403);
    let (_, all) = locker_admin.get("/lockers").await;
    assert!(ids(&all).contains(&lid));
    let (_, all) = locker_admin.get("/credentials").await;
    assert!(ids(&all).contains(&cid) && ids(&all).contains(&pcid) && ids(&all).contains(&id(&oc)));
    let (st, u) = locker_admin
        .put(
            &cred,
            json!({"version": 1, "description": "by the locker admin"}),
        )
        .await;
    assert_eq!(st, 200, "{u}");
    // It grants `own` to others, never to itself (that would be the way to consuming).
    let other_locker = outsider.locker().await;
    assert_eq!(
        locker_admin
            .put(
                &format!("/lockers/{}/members/{}", id(&other_locker), locker_admin.id),
                json!({"permissions": ["own"]})
            )
            .await
            .0,
        403
    );
    assert_eq!(
        locker_admin
            .put(
                &format!("/lockers/{}/members/{}", id(&other_locker), manager.id),
                json!({"permissions": ["own"]})
            )
            .await
            .0,
        204
    );
    assert_eq!(
        locker_admin
            .delete(&format!("/lockers/{}", id(&other_locker)))
            .await
            .0,
        204
    );

    // A locker always keeps an owner.
    assert_eq!(
        owner.delete(&format!("{lk}/members/{}", owner.id)).await.0,
        409
    );
    assert_eq!(
        owner
            .put(
                &format!("{lk}/members/{}", owner.id),
                json!({"permissions": ["manage"]})
            )
            .await
            .0,
        409
    );
    // With a second owner, the first may step down; a member may leave by themselves.
    assert_eq!(
        owner
            .put(
                &format!("{lk}/members/{}", manager.id),
                json!({"permissions": ["own", "manage"]})
            )
            .await
            .0,
        204
    );
    assert_eq!(
        owner
            .put(
                &format!("{lk}/members/{}", owner.id),
                json!({"permissions": ["participate"]})
            )
            .await
            .0,
        204
    );
    assert_eq!(
        participant
            .delete(&format!("{lk}/members/{}", participant.id))
            .await
            .0,
        204
    );
    // The owner of a credential still controls it after leaving the locker's management.
    let (st, _) = owner
        .put(&cred, json!({"version": 2, "description": "still mine"}))
        .await;
    assert_eq!(st, 200);
}

// ---- versions -----------------------------------------------------------------------------------

#[tokio::test]
async fn stale_versions_conflict_and_no_op_updates_are_304() {
    let s = shared();
    let owner = user(s, &["Vault User"]).await;
    let c = owner.credential(&[("user", false)]).await;
    let cid = id(&c);
    let aid = id(&c["attributes"][0]);
    let path = format!("/credentials/{cid}");

    let (st, _) = owner
        .put(&path, json!({"version": 0, "description": "one"}))
        .await;
    assert_eq!(st, 200);
    let before = owner.get(&path).await.1;
    let (st, e) = owner
        .put(
            &path,
            json!({"version": 0, "description": "two", "name": unique("n")}),
        )
        .await;
    assert_eq!(st, 409, "{e}");
    assert!(e["message"].as_str().unwrap().contains("version"), "{e}");
    assert_eq!(
        owner.get(&path).await.1,
        before,
        "a conflict changes nothing"
    );
    let (st, body) = owner
        .put(&path, json!({"version": 1, "description": "one"}))
        .await;
    assert_eq!((st, body), (304, Value::Null));
    let (st, _) = owner
        .put(
            &path,
            json!({"version": 1, "attributes": [{"id": aid, "version": 5, "masked": false}]}),
        )
        .await;
    assert_eq!(st, 409, "a stale attribute version conflicts");
    assert_eq!(owner.get(&path).await.1, before);
    let (st, _) = owner
        .put(
            &path,
            json!({"version": 1, "attributes": [{"id": aid, "name": "user"}]}),
        )
        .await;
    assert_eq!(st, 304);
    // Missing version is a 400, not a silent overwrite.
    let (st, e) = owner.put(&path, json!({"description": "three"})).await;
    assert_eq!(st, 400);
    assert!(e["message"].as_str().unwrap().contains("version"), "{e}");

    // Values.
    let v = owner.values(cid, &[(aid, "v1")]).await;
    let vid = id(&v[0]);
    let vpath = format!("/credentials/{cid}/attributevalues/{vid}");
    assert_eq!(
        owner
            .put(&vpath, json!([{"version": 0, "value": "v2"}]))
            .await
            .0,
        200
    );
    assert_eq!(
        owner
            .put(&vpath, json!([{"version": 0, "value": "v3"}]))
            .await
            .0,
        409
    );
    assert_eq!(owner.read(cid).await, vec![(aid, None, "v2".into())]);
    assert_eq!(
        owner
            .put(&vpath, json!({"list": [{"version": 1, "value": "v2"}]}))
            .await
            .0,
        304
    );
    let (st, dup) = owner
        .post(
            &format!("/credentials/{cid}/attributevalues"),
            json!([{"credentialAttributeId": aid, "value": "again"}]),
        )
        .await;
    assert_eq!(st, 409, "a second value for the same attribute: {dup}");
    assert!(
        dup["message"].as_str().unwrap().contains(&vid.to_string()),
        "the message names the existing value: {dup}"
    );

    // Lockers, consumers, members, locker credentials.
    let l = owner.locker().await;
    let lid = id(&l);
    let lpath = format!("/lockers/{lid}");
    assert_eq!(
        owner
            .put(&lpath, json!({"version": 0, "description": "a"}))
            .await
            .0,
        200
    );
    assert_eq!(
        owner
            .put(&lpath, json!({"version": 0, "description": "b"}))
            .await
            .0,
        409
    );
    assert_eq!(
        owner
            .put(&lpath, json!({"version": 1, "description": "a"}))
            .await
            .0,
        304
    );
    let (role, _) = consumer_role(s).await;
    assert_eq!(
        owner
            .put(&format!("{lpath}/consumers"), json!({"id": role}))
            .await
            .0,
        204
    );
    assert_eq!(
        owner
            .put(&format!("{lpath}/consumers"), json!({"id": role}))
            .await
            .0,
        304
    );
    assert_eq!(
        owner
            .put(
                &format!("{lpath}/members/{}", owner.id),
                json!({"permissions": ["own", "manage", "participate"]})
            )
            .await
            .0,
        304
    );
    assert_eq!(
        owner
            .put_empty(&format!("{lpath}/credentials/{cid}"))
            .await
            .0,
        200
    );
    assert_eq!(
        owner
            .put_empty(&format!("{lpath}/credentials/{cid}"))
            .await
            .0,
        304
    );
    let l2 = owner.locker().await;
    assert_eq!(
        owner
            .put_empty(&format!("/lockers/{}/credentials/{cid}", id(&l2)))
            .await
            .0,
        409,
        "already in another locker"
    );
    assert_eq!(
        owner
            .put_empty(&format!("/credentials/{cid}/owner/{}", owner.id))
            .await
            .0,
        304
    );
    // Member and consumer changes are locker changes: the version moved on.
    let (_, now) = owner.get(&lpath).await;
    assert!(now["version"].as_i64().unwrap() > 1, "{now}");
    // A changed name collides with another credential's: 409, nothing changed.
    let other = owner.credential(&[("a", false)]).await;
    let (_, cur) = owner.get(&path).await;
    let (st, _) = owner
        .put(
            &path,
            json!({"version": cur["version"], "name": other["name"]}),
        )
        .await;
    assert_eq!(st, 409);
    assert_eq!(owner.get(&path).await.1, cur);
}

// ---- validation and bad input ---------------------------------------------------------------------

#[tokio::test]
async fn validation_gives_clear_400s() {
    let s = shared();
    let owner = user(s, &["Vault User"]).await;
    let check = |st: u16, e: &Value, field: &str| {
        assert_eq!(st, 400, "{e}");
        assert!(
            e["message"].as_str().unwrap().contains(field),
            "the message names {field}: {e}"
        );
    };
    let (st, e) = owner
        .post("/credentials", json!({"name": "x".repeat(51)}))
        .await;
    check(st, &e, "name");
    assert!(e["message"].as_str().unwrap().contains("50"), "{e}");
    let (st, e) = owner.post("/credentials", json!({"name": "  "})).await;
    check(st, &e, "name");
    let (st, e) = owner
        .post(
            "/credentials",
            json!({"name": unique("d"), "description": "d".repeat(256)}),
        )
        .await;
    check(st, &e, "description");
    let many: Vec<Value> = (0..51).map(|i| json!({"name": format!("a{i}")})).collect();
    let (st, e) = owner
        .post(
            "/credentials",
            json!({"name": unique("m"), "attributes": many}),
        )
        .await;
    check(st, &e, "attributes");
    let (st, e) = owner
        .post(
            "/credentials",
            json!({"name": unique("m"), "attributes": [{"description": "no name"}]}),
        )
        .await;
    check(st, &e, "attributes[0].name");
    let (st, e) = owner
        .post(
            "/credentials",
            json!({"name": unique("m"), "attributes": [{"name": "a"}, {"name": "a"}]}),
        )
        .await;
    check(st, &e, "attributes[1].name");
    let (st, e) = owner.post("/credentials", json!({"name": 5})).await;
    check(st, &e, "name");
    let (st, e) = owner
        .post("/credentials", json!({"description": "no name"}))
        .await;
    check(st, &e, "name");
    let (st, e) = owner
        .post(
            "/credentials",
            json!({"name": unique("t"), "attributes": [{"name": "a", "userProvided": "yes"}]}),
        )
        .await;
    check(st, &e, "attributes[0].userProvided");
    // Exactly 50 attributes and a 50-character Korean name are fine; unknown fields are ignored.
    let fifty: Vec<Value> = (0..50).map(|i| json!({"name": format!("a{i}")})).collect();
    let korean: String = format!("{}{}", "자격증명".repeat(10), &unique("")[..10]);
    let (st, c) = owner
        .post(
            "/credentials",
            json!({"name": korean, "attributes": fifty, "unknownField": [1, 2]}),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["name"], korean.as_str());
    let cid = id(&c);
    let (st, e) = owner
        .put(
            &format!("/credentials/{cid}"),
            json!({"version": 0, "attributes": [{"name": "one-too-many"}]}),
        )
        .await;
    check(st, &e, "attributes");
    let (st, e) = owner
        .put(
            &format!("/credentials/{cid}"),
            json!({"version": 0, "attributes": [{"id": 987654321, "name": "zz"}]}),
        )
        .await;
    check(st, &e, "attributes[0].id");
    let (st, e) = owner
        .put(
            &format!("/credentials/{cid}"),
            json!({"version": 0, "lockerId": 77}),
        )
        .await;
    check(st, &e, "lockerId");
    let (st, e) = owner
        .put(
            &format!("/credentials/{cid}"),
            json!({"version": 0, "ownerId": 987654321}),
        )
        .await;
    check(st, &e, "ownerId");
    let (st, e) = owner
        .put(
            &format!("/credentials/{cid}"),
            json!({"version": 0, "id": cid + 1}),
        )
        .await;
    check(st, &e, "id");
    let (st, e) = owner
        .put(&format!("/credentials/{cid}"), json!({"version": "zero"}))
        .await;
    check(st, &e, "version");
    let a0 = id(&c["attributes"][0]);
    let (st, e) = owner
        .put(
            &format!("/credentials/{cid}"),
            json!({"version": 0, "attributes": [{"id": a0, "name": "a1"}]}),
        )
        .await;
    check(st, &e, "name");
    // Names may be swapped in one update.
    let a1 = id(&c["attributes"][1]);
    let (st, u) = owner
        .put(&format!("/credentials/{cid}"), json!({"version": 0, "attributes": [{"id": a0, "name": "a1"}, {"id": a1, "name": "a0"}]}))
        .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(
        (
            u["attributes"][0]["name"].as_str(),
            u["attributes"][1]["name"].as_str()
        ),
        (Some("a1"), Some("a0"))
    );

    // Values.
    let vals = format!("/credentials/{cid}/attributevalues");
    let (st, e) = owner
        .post(&vals, json!([{"credentialAttributeId": a0}]))
        .await;
    check(st, &e, "[0].value");
    let (st, e) = owner
        .post(
            &vals,
            json!({"list": [{"credentialAttributeId": "abc", "value": "x"}]}),
        )
        .await;
    check(st, &e, "list[0].credentialAttributeId");
    let (st, e) = owner
        .post(&vals, json!([{"credentialAttributeId": a0, "value": 12}]))
        .await;
    check(st, &e, "[0].value");
    let (st, e) = owner
        .post(
            &vals,
            json!([{"credentialAttributeId": 999999999, "value": "x"}]),
        )
        .await;
    check(st, &e, "credentialAttributeId");
    let (st, e) = owner
        .post(
            &vals,
            json!({"list": [{"credentialAttributeId": 999999999, "value": "x"}]}),
        )
        .await;
    check(st, &e, "list[0].credentialAttributeId");
    let (st, e) = owner
        .post(
            &vals,
            json!([{"credentialAttributeId": a0, "value": "x".repeat(16 * 1024 + 1)}]),
        )
        .await;
    check(st, &e, "[0].value");
    let (st, e) = owner.post(&vals, json!([{"credentialAttributeId": a0, "value": "a"}, {"credentialAttributeId": a0, "value": "b"}])).await;
    check(st, &e, "[1].credentialAttributeId");
    let (st, e) = owner.post(&vals, json!([])).await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = owner.post(&vals, json!("text")).await;
    assert_eq!(st, 400, "{e}");
    assert!(
        owner.read(cid).await.is_empty(),
        "no failed request stored anything"
    );

    // Lockers, members, consumers, query flags.
    let (st, e) = owner.post("/lockers", json!({"name": ""})).await;
    check(st, &e, "name");
    let l = owner.locker().await;
    let lid = id(&l);
    let (st, e) = owner
        .put(
            &format!("/lockers/{lid}/members/{}", owner.id),
            json!({"permissions": ["root"]}),
        )
        .await;
    check(st, &e, "permissions[0]");
    let (st, e) = owner
        .put(
            &format!("/lockers/{lid}/members/{}", owner.id),
            json!({"permissions": []}),
        )
        .await;
    check(st, &e, "permissions");
    let (st, e) = owner
        .put(
            &format!("/lockers/{lid}/members/{}", owner.id),
            json!({"permissions": "own"}),
        )
        .await;
    check(st, &e, "permissions");
    assert_eq!(
        owner
            .put(
                &format!("/lockers/{lid}/members/987654321"),
                json!({"permissions": ["participate"]})
            )
            .await
            .0,
        404
    );
    let (st, e) = owner
        .put(
            &format!("/lockers/{lid}/consumers"),
            json!({"id": 987654321}),
        )
        .await;
    check(st, &e, "id");
    let (st, e) = owner
        .put(
            &format!("/lockers/{lid}/consumers"),
            json!({"id": "admins"}),
        )
        .await;
    check(st, &e, "id");
    assert_eq!(
        owner
            .delete(&format!("/lockers/{lid}/consumers/987654321"))
            .await
            .0,
        404
    );
    let (st, e) = owner.get("/credentials?consumed=maybe").await;
    check(st, &e, "consumed");
    let (st, e) = owner.get("/lockers?limit=-1").await;
    check(st, &e, "limit");
    let (st, e) = owner.get("/credentials?limit=5000").await;
    check(st, &e, "limit");
    let (st, l) = owner.get("/credentials?limit=1&offset=0").await;
    assert_eq!((st, l["list"].as_array().unwrap().len()), (200, 1));
    let a = admin(s).await;
    let (st, e) = a
        .put(
            "/mode",
            json!({"name": "Automatic", "privatekey": random_key()}),
        )
        .await;
    check(st, &e, "name");
    let (st, e) = a
        .put("/keys/private", json!({"privateKey": "ABC123"}))
        .await;
    check(st, &e, "privateKey");
    let (st, e) = a.put("/keys/private", json!({})).await;
    check(st, &e, "privateKey");
}

type Snapshot = (
    Value,
    Vec<(i64, Option<i64>, String)>,
    Value,
    Value,
    Value,
    usize,
    usize,
);

/// Everything the owner sees of a credential and a locker.
async fn snapshot(o: &Who, cid: i64, lid: i64) -> Snapshot {
    (
        o.get(&format!("/credentials/{cid}")).await.1,
        o.read(cid).await,
        o.get(&format!("/lockers/{lid}")).await.1,
        o.get(&format!("/lockers/{lid}/members")).await.1,
        o.get(&format!("/lockers/{lid}/consumers")).await.1,
        o.get("/credentials").await.1["list"]
            .as_array()
            .unwrap()
            .len(),
        o.get("/lockers").await.1["list"].as_array().unwrap().len(),
    )
}

#[tokio::test]
async fn bad_input_on_every_route_is_4xx_and_changes_nothing() {
    let s = shared();
    let owner = user(s, &["Vault User"]).await;
    let c = owner.credential(&[("user", false), ("pw", true)]).await;
    let cid = id(&c);
    let aid = id(&c["attributes"][0]);
    let v = owner.values(cid, &[(aid, "kept-value")]).await;
    let vid = id(&v[0]);
    let l = owner.locker().await;
    let lid = id(&l);
    let before = snapshot(&owner, cid, lid).await;
    use reqwest::Method as M;
    let huge = vec![b'['; 8 * 1024 * 1024];
    let routes: Vec<(M, String)> = vec![
        (M::POST, "/credentials".into()),
        (M::PUT, format!("/credentials/{cid}")),
        (M::POST, format!("/credentials/{cid}/attributevalues")),
        (M::POST, format!("/credentials/{cid}/attributevalue")),
        (M::PUT, format!("/credentials/{cid}/attributevalues/{vid}")),
        (M::POST, "/lockers".into()),
        (M::PUT, format!("/lockers/{lid}")),
        (M::PUT, format!("/lockers/{lid}/consumers")),
        (M::PUT, format!("/lockers/{lid}/members/{}", owner.id)),
    ];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{not json".to_vec()),
        ("application/json", b"[1, 2, 3]".to_vec()),
        (
            "application/json",
            b"{\"name\": [], \"version\": {}, \"id\": true, \"permissions\": 5, \"list\": \"x\"}"
                .to_vec(),
        ),
        ("application/json", b"null".to_vec()),
        ("application/json", b"\"just a string\"".to_vec()),
        (
            "application/json",
            b"{\"version\": \"1e3\", \"id\": \"12abc\", \"credentialAttributeId\": -1}".to_vec(),
        ),
        ("text/plain", b"name=x".to_vec()),
        ("application/json", huge.clone()),
    ];
    for (method, path) in &routes {
        for (ctype, body) in &bodies {
            let (st, e) = owner.raw(method.clone(), path, ctype, body.clone()).await;
            assert!(
                (400..500).contains(&st),
                "{method} {path} with {} bytes of {ctype}: {st} {e}",
                body.len()
            );
            if st != 413 {
                assert!(
                    e["code"].is_string() && e["message"].is_string(),
                    "{method} {path}: {e}"
                );
            }
        }
    }
    // Unknown and non-numeric ids in paths: 404 everywhere.
    for bad in ["999999999", "abc", "-1", "1.5", "99999999999999999999999"] {
        for (method, path) in [
            (M::GET, format!("/credentials/{bad}")),
            (M::PUT, format!("/credentials/{bad}")),
            (M::DELETE, format!("/credentials/{bad}")),
            (M::GET, format!("/credentials/{bad}/attributevalues")),
            (M::PUT, format!("/credentials/{cid}/attributevalues/{bad}")),
            (M::DELETE, format!("/credentials/{cid}/values/{bad}")),
            (M::PUT, format!("/credentials/{bad}/owner/{}", owner.id)),
            (M::PUT, format!("/credentials/{cid}/owner/{bad}")),
            (M::GET, format!("/lockers/{bad}")),
            (M::DELETE, format!("/lockers/{bad}")),
            (M::GET, format!("/lockers/{bad}/members")),
            (M::DELETE, format!("/lockers/{lid}/members/{bad}")),
            (M::DELETE, format!("/lockers/{lid}/consumers/{bad}")),
            (M::PUT, format!("/lockers/{lid}/credentials/{bad}")),
            (M::DELETE, format!("/lockers/{lid}/credentials/{bad}")),
            (M::PUT, format!("/lockers/{bad}/credentials/{cid}")),
        ] {
            let body = if path.contains("/attributevalues/") {
                br#"[{"version": 0, "value": "x"}]"#.to_vec()
            } else {
                br#"{"version": 0, "description": "x"}"#.to_vec()
            };
            let (st, e) = owner
                .raw(method.clone(), &path, "application/json", body)
                .await;
            assert_eq!(st, 404, "{method} {path}: {e}");
        }
    }
    assert_eq!(snapshot(&owner, cid, lid).await, before, "nothing changed");
}

// ---- crypto at rest ------------------------------------------------------------------------------

fn dump_store(s: &Server) -> Vec<u8> {
    match &s.db {
        Db::Sqlite(_) => {
            let mut all = Vec::new();
            for entry in std::fs::read_dir(&s.data_dir).unwrap() {
                let p = entry.unwrap().path();
                if p.is_file() {
                    all.extend(std::fs::read(&p).unwrap());
                }
            }
            all
        }
        Db::Postgres(url) => {
            let out = Command::new("pg_dump")
                .args(["--data-only", "--inserts", url])
                .output()
                .expect("pg_dump must be installed");
            assert!(
                out.status.success(),
                "pg_dump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn no_plaintext_value_in_the_store_the_logs_or_the_audit() {
    let mut s = Server::start();
    let owner = user(&s, &["Vault User"]).await;
    let secret = format!("Zebra-Quokka-{}-s3cr3t", unique(""));
    let secret2 = format!("Zebra-Marmot-{}-s3cr3t", unique(""));
    let c = owner
        .credential(&[("password", false), ("pin", true)])
        .await;
    let cid = id(&c);
    let (a0, a1) = (id(&c["attributes"][0]), id(&c["attributes"][1]));
    let v = owner.values(cid, &[(a0, &secret), (a1, &secret2)]).await;
    for _ in 0..3 {
        assert_eq!(owner.read(cid).await.len(), 2);
    }
    let vid = id(&v[0]);
    let (st, _) = owner
        .put(
            &format!("/credentials/{cid}/attributevalues/{vid}"),
            json!([{"version": 0, "value": format!("{secret}-v2")}]),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = owner
        .post(
            &format!("/credentials/{cid}/attributevalues"),
            json!([{"credentialAttributeId": a1, "value": secret2}]),
        )
        .await;
    assert_eq!(st, 409, "a refused write must not leak its value either");

    // The audit has the reads (who, which credential, which attributes) and never a value.
    // Read events are appended in batches a few milliseconds after the answer.
    let mut events = Vec::new();
    for _ in 0..100 {
        events = audit(&s, &format!("user={}", owner.user_id)).await;
        if events
            .iter()
            .filter(|e| e["action"] == "credential.value.read")
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let reads: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "credential.value.read")
        .collect();
    assert_eq!(reads.len(), 3);
    assert_eq!(reads[0]["target"], format!("credential:{cid}"));
    let detail = match &reads[0]["detail"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    let mut attrs: Vec<i64> = detail["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_i64().unwrap())
        .collect();
    attrs.sort();
    assert_eq!(attrs, vec![a0, a1]);
    for action in [
        "credential.create",
        "credential.value.create",
        "credential.value.update",
    ] {
        assert!(
            events.iter().any(|e| e["action"] == action),
            "{action} audited"
        );
    }
    let all = serde_json::to_string(&audit(&s, "").await).unwrap();
    for needle in [&secret, &secret2, "Zebra-"] {
        assert!(!all.contains(needle), "the audit holds a value");
    }

    s.stop();
    let bytes = dump_store(&s);
    assert!(
        contains(&bytes, &owner.user_id),
        "the dump is readable (sanity check of the search)"
    );
    for needle in [secret.as_str(), secret2.as_str(), "Zebra-"] {
        assert!(
            !contains(&bytes, needle),
            "the store holds a plaintext value"
        );
    }
    let logs = s.logs();
    for needle in [secret.as_str(), secret2.as_str(), "Zebra-", &owner.token] {
        assert!(!logs.contains(needle), "the logs hold a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_stop_loses_no_read_event_and_keeps_the_chain() {
    let mut s = Server::start();
    let owner = user(&s, &["Vault User"]).await;
    let c = owner.credential(&[("password", false)]).await;
    let cid = id(&c);
    owner
        .values(cid, &[(id(&c["attributes"][0]), "read-many-times")])
        .await;
    // Many concurrent reads, then an immediate clean stop.
    let url = owner.url(&format!("/credentials/{cid}/attributevalues"));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (url, token) = (url.clone(), owner.token.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut ok = 0;
            for _ in 0..25 {
                let (st, _) = call(http.get(&url).header("X-Authorization", &token)).await;
                assert_eq!(st, 200);
                ok += 1;
            }
            ok
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    s.stop();
    let stored = s.sql("SELECT COUNT(*) FROM audit_events WHERE action = 'credential.value.read'");
    assert_eq!(
        stored,
        answered.to_string(),
        "every answered read is in the audit after a clean stop"
    );
    let (code, out) = s.audit_verify();
    assert_eq!(code, 0, "{out}");
}

/// Reads the values of `cid`, which must fail its integrity check: a 500 in the vault's envelope
/// with none of `plain` and no internals. Returns the error as text.
async fn refused_read(owner: &Who, cid: i64, plain: &[&str]) -> String {
    let (st, e) = owner
        .get(&format!("/credentials/{cid}/attributevalues"))
        .await;
    assert_eq!(st, 500, "{e}");
    assert_keys(&e, &["code", "message"]);
    let text = e.to_string();
    assert!(
        plain.iter().all(|p| !text.contains(p)),
        "no value in the error: {e}"
    );
    assert!(!text.contains("decrypt"), "no internals in the error: {e}");
    text
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_fails_cleanly() {
    let s = shared();
    let owner = user(s, &["Vault User"]).await;
    let c = owner.credential(&[("alpha", false), ("beta", false)]).await;
    let cid = id(&c);
    let (a, b) = (id(&c["attributes"][0]), id(&c["attributes"][1]));
    let v = owner
        .values(cid, &[(a, "alpha-plain-value"), (b, "beta-plain-value")])
        .await;
    let (va, vb) = (id(&v[0]), id(&v[1]));
    // Copy beta's ciphertext (and nonce and key) over alpha's row, straight in the database.
    s.sql(&format!(
        "UPDATE vault_values SET nonce = (SELECT nonce FROM vault_values WHERE id = {vb}), \
         ciphertext = (SELECT ciphertext FROM vault_values WHERE id = {vb}), \
         key_id = (SELECT key_id FROM vault_values WHERE id = {vb}) WHERE id = {va}"
    ));
    refused_read(&owner, cid, &["beta-plain", "alpha-plain"]).await;
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        s.logs().contains(&format!(
            "value {va} (credential {cid}, attribute {a}) failed to decrypt"
        )),
        "a clear log line"
    );
    // The metadata still works, and overwriting the broken value repairs it.
    assert_eq!(owner.get(&format!("/credentials/{cid}")).await.0, 200);
    let (st, _) = owner
        .put(
            &format!("/credentials/{cid}/attributevalues/{va}"),
            json!([{"version": 0, "value": "alpha-again"}]),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        owner.read(cid).await,
        vec![
            (a, None, "alpha-again".into()),
            (b, None, "beta-plain-value".into())
        ]
    );
}

/// Changes standard value `vid` of attribute `a` (at `version`) and reads it back.
async fn replace_value(owner: &Who, cid: i64, (a, vid): (i64, i64), version: i64, value: &str) {
    let (st, e) = owner
        .put(
            &format!("/credentials/{cid}/attributevalues/{vid}"),
            json!([{"version": version, "value": value}]),
        )
        .await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(owner.read(cid).await, vec![(a, None, value.to_owned())]);
}

#[tokio::test]
async fn an_older_ciphertext_copied_back_over_a_newer_one_is_refused_and_audited() {
    let s = shared();
    let owner = user(s, &["Vault User"]).await;
    let c = owner.credential(&[("secret", false)]).await;
    let cid = id(&c);
    let a = id(&c["attributes"][0]);
    let v = owner.values(cid, &[(a, "first-plain-value")]).await;
    let vid = id(&v[0]);
    // Keep the first version's stored bytes (nonce, ciphertext and key), straight from the
    // database, then change the value through the API.
    let saved: String = unique("rollback")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    s.sql(&format!(
        "CREATE TABLE {saved} AS SELECT nonce, ciphertext, key_id FROM vault_values WHERE id = {vid}"
    ));
    replace_value(&owner, cid, (a, vid), 0, "second-plain-value").await;
    // Roll the row back: the first version's bytes over the second's (its version stays 1).
    s.sql(&format!(
        "UPDATE vault_values SET nonce = (SELECT nonce FROM {saved}), \
         ciphertext = (SELECT ciphertext FROM {saved}), key_id = (SELECT key_id FROM {saved}) \
         WHERE id = {vid}"
    ));
    s.sql(&format!("DROP TABLE {saved}"));
    let text = refused_read(&owner, cid, &["first-plain", "second-plain"]).await;
    assert!(
        text.contains("integrity check") && text.contains("(reference "),
        "{text}"
    );
    // The failure is audited: who, which credential and value; never a value.
    let events = audit(s, "action=credential.value.integrity").await;
    let detail = |e: &Value| match &e["detail"] {
        Value::String(text) => serde_json::from_str(text).unwrap(),
        other => other.clone(),
    };
    let event = events
        .iter()
        .find(|e| e["action"] == "credential.value.integrity" && detail(e)["value"] == vid)
        .unwrap_or_else(|| panic!("an integrity event for value {vid}: {events:?}"));
    assert_eq!(event["outcome"], "failure", "{event}");
    assert_eq!(event["target"], format!("credential:{cid}"), "{event}");
    assert_eq!(detail(event)["version"], 1, "{event}");
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains("first-plain") && !all.contains("second-plain"));
    // Overwriting the value (at its current version) repairs it.
    replace_value(&owner, cid, (a, vid), 1, "third-plain-value").await;
}

// ---- modes and keys across restarts ----------------------------------------------------------------

#[tokio::test]
async fn manual_mode_seals_after_a_restart_until_the_key_is_applied() {
    let mut s = Server::start();
    let owner = user(&s, &["Vault User"]).await;
    let c = owner.credential(&[("password", false)]).await;
    let (cid, aid) = (id(&c), id(&c["attributes"][0]));
    owner.values(cid, &[(aid, "manual-mode-value")]).await;
    let key = master_key_of(&s);
    let key_file = s.data_dir.join("vault.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let a = admin(&s).await;
    assert_eq!(a.get("/mode").await.1, json!({"name": "Express"}));
    // Switching needs the current key.
    let (st, e) = a
        .put(
            "/mode",
            json!({"name": "Manual", "privatekey": random_key()}),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    let (st, _) = a
        .put("/mode", json!({"name": "Manual", "privatekey": "ABC123"}))
        .await;
    assert_eq!(st, 400);
    assert_eq!(a.get("/mode").await.1, json!({"name": "Express"}));
    assert!(key_file.exists());
    let (st, e) = a
        .put("/mode", json!({"name": "Manual", "privatekey": key}))
        .await;
    assert_eq!(st, 204, "{e}");
    assert!(
        !key_file.exists(),
        "switching to Manual deletes the kept key"
    );
    assert_eq!(a.get("/mode").await.1, json!({"name": "Manual"}));
    assert_eq!(
        a.put("/mode", json!({"name": "manual", "privatekey": key}))
            .await
            .0,
        304
    );
    assert_eq!(
        owner.read(cid).await.len(),
        1,
        "still unsealed until the restart"
    );

    s.stop();
    let s = Server::start_with(s.same_state());
    // Tokens outlive a restart (they are stored, hashed).
    let owner = Who::from_token(&s, owner.token.clone()).await;
    let a = admin(&s).await;
    assert_eq!(a.get("/keys/private").await.1, json!({"applied": false}));
    assert_eq!(a.get("/mode").await.1, json!({"name": "Manual"}));
    let vals = format!("/credentials/{cid}/attributevalues");
    let (st, e) = owner.get(&vals).await;
    assert_eq!(st, 503, "{e}");
    assert_keys(&e, &["code", "message"]);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("PUT /v2/credentialvault/keys/private"),
        "{e}"
    );
    assert_eq!(
        owner
            .post(&vals, json!([{"credentialAttributeId": aid, "value": "x"}]))
            .await
            .0,
        503
    );
    assert_eq!(
        owner.get(&format!("/credentials/{cid}")).await.0,
        200,
        "metadata works while sealed"
    );
    let (st, e) = a
        .put("/keys/private", json!({"privateKey": random_key()}))
        .await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(a.get("/keys/private").await.1, json!({"applied": false}));
    assert_eq!(owner.get(&vals).await.0, 503);
    let (st, b) = a.put("/keys/private", json!({"privateKey": key})).await;
    assert_eq!((st, b), (200, json!({"applied": true})));
    assert_eq!(
        owner.read(cid).await,
        vec![(aid, None, "manual-mode-value".into())]
    );
    assert!(!key_file.exists(), "Manual mode keeps no key");

    let events = audit(&s, "action=vault").await;
    let outcome = |action: &str, outcome: &str| {
        events
            .iter()
            .any(|e| e["action"] == action && e["outcome"] == outcome)
    };
    assert!(
        outcome("vault.unseal", "failure") && outcome("vault.unseal", "success"),
        "{events:?}"
    );
    assert!(outcome("vault.mode.change", "success") && outcome("vault.mode.change", "failure"));
    assert!(!serde_json::to_string(&events).unwrap().contains(&key));

    // Back to Express: the key is kept again, and the next start needs no action.
    assert_eq!(
        a.put("/mode", json!({"name": "Express", "privateKey": key}))
            .await
            .0,
        204
    );
    assert_eq!(master_key_of(&s), key);
    let mut s = s;
    s.stop();
    let s = Server::start_with(s.same_state());
    let a = admin(&s).await;
    assert_eq!(a.get("/keys/private").await.1, json!({"applied": true}));
    let owner = Who::from_token(&s, owner.token.clone()).await;
    assert_eq!(
        owner.read(cid).await,
        vec![(aid, None, "manual-mode-value".into())]
    );
    assert!(!s.logs().contains(&key), "the key is never logged");
}

#[tokio::test]
async fn express_mode_unseals_itself_with_the_environment_key() {
    let key = random_key();
    let mut s = Server::start_with(Opts::default().env("HAECHI_VAULT_MASTER_KEY", &key));
    assert!(
        !s.data_dir.join("vault.key").exists(),
        "with HAECHI_VAULT_MASTER_KEY no key file is written"
    );
    let owner = user(&s, &["Vault User"]).await;
    let c = owner.credential(&[("password", false)]).await;
    let (cid, aid) = (id(&c), id(&c["attributes"][0]));
    owner.values(cid, &[(aid, "express-value")]).await;
    s.stop();

    // Restart with the same key: readable without any action.
    let mut s2 = Server::start_with(s.same_state().env("HAECHI_VAULT_MASTER_KEY", &key));
    let owner2 = Who::from_token(&s2, owner.token.clone()).await;
    assert_eq!(
        owner2.read(cid).await,
        vec![(aid, None, "express-value".into())]
    );
    s2.stop();

    // Restart with another key: the server starts, sealed, says why; the right key unseals it.
    let mut s3 = Server::start_with(s.same_state().env("HAECHI_VAULT_MASTER_KEY", &random_key()));
    let owner3 = Who::from_token(&s3, owner.token.clone()).await;
    assert_eq!(
        owner3
            .get(&format!("/credentials/{cid}/attributevalues"))
            .await
            .0,
        503
    );
    assert!(
        s3.logs().contains("does not match this vault"),
        "{}",
        s3.logs()
    );
    let a = admin(&s3).await;
    assert_eq!(a.get("/keys/private").await.1, json!({"applied": false}));
    assert_eq!(
        a.put("/keys/private", json!({"privatekey": key})).await.0,
        200
    );
    assert_eq!(
        owner3.read(cid).await,
        vec![(aid, None, "express-value".into())]
    );
    s3.stop();
    assert!(!s3.logs().contains(&key));

    // A malformed key is a start-up error that names the variable (and not the value).
    let mut cmd = Command::new(bin());
    cmd.args(["server", "--stop-on-stdin-eof", "--data-dir"])
        .arg(&s.data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("HAECHI_VAULT_MASTER_KEY", "not-a-key-Walrus")
        .env("HAECHI_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("HAECHI_CONFIG")
        .stdin(Stdio::null());
    if let Db::Postgres(url) = &s.db {
        cmd.arg("--database-url").arg(url);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("HAECHI_VAULT_MASTER_KEY") && !text.contains("Walrus"),
        "{text}"
    );
}

#[tokio::test]
async fn rotation_and_master_key_change_keep_every_value() {
    let mut s = Server::start();
    let owner = user(&s, &["Vault User"]).await;
    let (role, role_name) = consumer_role(&s).await;
    let consumer = user(&s, &["Vault User", &role_name]).await;
    let l = owner.locker().await;
    assert_eq!(
        owner
            .put(
                &format!("/lockers/{}/consumers", id(&l)),
                json!({"id": role})
            )
            .await
            .0,
        204
    );
    let mut expected = Vec::new();
    for i in 0..12 {
        let c = owner.credential(&[("std", false), ("mine", true)]).await;
        let (cid, a0, a1) = (id(&c), id(&c["attributes"][0]), id(&c["attributes"][1]));
        owner
            .values(
                cid,
                &[(a0, &format!("std-{i}-값")), (a1, &format!("own-{i}"))],
            )
            .await;
        assert_eq!(
            owner
                .put_empty(&format!("/lockers/{}/credentials/{cid}", id(&l)))
                .await
                .0,
            200
        );
        consumer
            .values(cid, &[(a1, &format!("consumer-{i}"))])
            .await;
        expected.push((cid, owner.read(cid).await, consumer.read(cid).await));
    }
    let a = admin(&s).await;
    let (st, before) = call(
        client()
            .get(s.url("/api/v1/vault/status"))
            .bearer_auth(&a.token),
    )
    .await;
    assert_eq!(st, 200, "{before}");
    assert_eq!(
        (
            before["mode"].as_str(),
            before["applied"].as_bool(),
            before["key_source"].as_str()
        ),
        (Some("Express"), Some(true), Some("file"))
    );
    assert_eq!(before["values"], 36);
    assert_eq!(
        call(
            client()
                .get(s.url("/api/v1/vault/status"))
                .bearer_auth(&owner.token)
        )
        .await
        .0,
        403
    );

    // Rotate the data key: every value re-encrypted, the old key gone.
    let (st, r) = call(
        client()
            .post(s.url("/api/v1/vault/rotate-data-key"))
            .bearer_auth(&a.token),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert!(r["reencrypted"].as_i64().unwrap() >= 36, "{r}");
    assert_eq!(r["retired_keys"], 1);
    assert_eq!(s.sql("SELECT COUNT(*) FROM vault_data_keys"), "1");
    assert_eq!(
        s.sql(&format!(
            "SELECT COUNT(*) FROM vault_values WHERE key_id <> {}",
            r["key_id"]
        )),
        "0"
    );
    for (cid, o, c) in &expected {
        assert_eq!(&owner.read(*cid).await, o);
        assert_eq!(&consumer.read(*cid).await, c);
    }

    // Change the master key: a wrong current key is refused; the right one re-wraps the data key.
    let old = master_key_of(&s);
    let new = random_key();
    let change = |cur: &str, new: &str| {
        let body = json!({"current_key": cur, "new_key": new});
        let req = client()
            .post(s.url("/api/v1/vault/change-master-key"))
            .bearer_auth(&a.token)
            .json(&body);
        call(req)
    };
    let (st, e) = change(&random_key(), &new).await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["field"], "current_key");
    let (st, r) = change(&old, &new).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (
            r["rewrapped_keys"].as_i64(),
            r["key_file_updated"].as_bool()
        ),
        (Some(1), Some(true))
    );
    assert_eq!(master_key_of(&s), new);
    for (cid, o, c) in &expected {
        assert_eq!(&owner.read(*cid).await, o);
        assert_eq!(&consumer.read(*cid).await, c);
    }
    // Values written after both changes read back too, and survive a restart.
    let extra = owner.credential(&[("after", false)]).await;
    owner
        .values(id(&extra), &[(id(&extra["attributes"][0]), "after-rekey")])
        .await;
    s.stop();
    let s = Server::start_with(s.same_state());
    let owner = Who::from_token(&s, owner.token.clone()).await;
    let consumer = Who::from_token(&s, consumer.token.clone()).await;
    for (cid, o, c) in &expected {
        assert_eq!(&owner.read(*cid).await, o);
        assert_eq!(&consumer.read(*cid).await, c);
    }
    assert_eq!(
        owner.read(id(&extra)).await,
        vec![(id(&extra["attributes"][0]), None, "after-rekey".into())]
    );
    // The old key is no longer the vault's key.
    let a = admin(&s).await;
    let (st, _) = a.put("/keys/private", json!({"privateKey": old})).await;
    assert_eq!(st, 400);
    let events = audit(&s, "action=vault").await;
    for action in ["vault.data_key.rotate", "vault.master_key.change"] {
        assert!(
            events
                .iter()
                .any(|e| e["action"] == action && e["outcome"] == "success"),
            "{action}"
        );
    }
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&old) && !text.contains(&new));
    assert!(!s.logs().contains(&new) && !s.logs().contains(&old));
    let (code, out) = s.audit_verify();
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn the_vault_commands_of_the_cli() {
    let mut s = Server::start();
    let owner = user(&s, &["Vault User"]).await;
    let c = owner.credential(&[("password", false)]).await;
    let (cid, aid) = (id(&c), id(&c["attributes"][0]));
    owner.values(cid, &[(aid, "cli-value")]).await;
    let key = master_key_of(&s);
    let session = tempfile::tempdir().unwrap();
    let session_file = session.path().join("session.json");
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(bin())
            .args(args)
            .env("HAECHI_SESSION", &session_file)
            .env_remove("HAECHI_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = run(
        &[
            "login",
            "--server",
            &s.base,
            "--insecure",
            "--password-stdin",
        ],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["vault", "status"], "");
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (status["mode"].as_str(), status["applied"].as_bool()),
        (Some("Express"), Some(true))
    );

    let (ok, out, err) = run(&["vault", "rotate-data-key"], "");
    assert!(ok, "{err}");
    assert!(out.contains("reencrypted"), "{out}");
    let (ok, out, err) = run(
        &["vault", "change-master-key", "--key-stdin"],
        &format!("{key}\n"),
    );
    assert!(ok, "{err}");
    let new = out
        .lines()
        .find_map(|l| l.strip_prefix("new vault master key (shown once; keep it safe): "))
        .expect(&out)
        .trim()
        .to_owned();
    assert_ne!(new, key);
    assert_eq!(master_key_of(&s), new);
    assert_eq!(owner.read(cid).await, vec![(aid, None, "cli-value".into())]);

    // Manual mode, restart, unseal with the CLI.
    let a = admin(&s).await;
    assert_eq!(
        a.put("/mode", json!({"name": "Manual", "privatekey": new}))
            .await
            .0,
        204
    );
    s.stop();
    let s = Server::start_with(s.same_state());
    let (ok, _, err) = run(
        &[
            "login",
            "--server",
            &s.base,
            "--insecure",
            "--password-stdin",
        ],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(ok, "{err}");
    let (_, out, _) = run(&["vault", "status"], "");
    assert!(out.contains("\"applied\": false"), "{out}");
    let (ok, _, err) = run(&["vault", "unseal", "--key-stdin"], &format!("{key}\n"));
    assert!(!ok, "the old key is refused");
    assert!(err.contains("not this vault's master key"), "{err}");
    let (ok, out, err) = run(&["vault", "unseal", "--key-stdin"], &format!("{new}\n"));
    assert!(ok, "{err}");
    assert!(out.contains("\"unsealed\": true"), "{out}");
    let owner = Who::from_token(&s, owner.token.clone()).await;
    assert_eq!(owner.read(cid).await, vec![(aid, None, "cli-value".into())]);
}

#[tokio::test]
async fn administering_a_locker_never_becomes_reading_it() {
    let s = shared();
    let (role, role_name) = consumer_role(s).await;
    let (other_role, _) = consumer_role(s).await;
    let owner = user(s, &["Vault User", &role_name]).await;
    let manager = user(s, &["Vault User", &role_name]).await;
    let locker_admin = user(s, &["Locker Admin", &role_name]).await;
    let l = owner.locker().await;
    let lid = id(&l);
    let c = owner.credential(&[("password", false)]).await;
    let cid = id(&c);
    owner
        .values(cid, &[(id(&c["attributes"][0]), "s3cret")])
        .await;
    assert_eq!(
        owner
            .put_empty(&format!("/lockers/{lid}/credentials/{cid}"))
            .await
            .0,
        200
    );
    assert_eq!(
        owner
            .put(
                &format!("/lockers/{lid}/members/{}", manager.id),
                json!({"permissions": ["manage"]})
            )
            .await
            .0,
        204
    );
    let consumers = format!("/lockers/{lid}/consumers");

    // A `manage` member and a Locker Admin may not make a role they hold a consumer…
    for who in [&manager, &locker_admin] {
        let (st, body) = who.put(&consumers, json!({"id": role})).await;
        assert_eq!(st, 403, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(&role_name),
            "{body}"
        );
        assert_eq!(
            who.get(&format!("/credentials/{cid}/attributevalues"))
                .await
                .0,
            403
        );
    }
    // …nor may the Locker Admin make themselves an owner first.
    let (st, body) = locker_admin
        .put(
            &format!("/lockers/{lid}/members/{}", locker_admin.id),
            json!({"permissions": ["own"]}),
        )
        .await;
    assert_eq!(st, 403, "{body}");
    let (_, cons) = owner.get(&consumers).await;
    assert!(!ids(&cons).contains(&role), "{cons}");

    // They still administer consumers they do not hold, and the owner decides about theirs.
    assert_eq!(
        manager.put(&consumers, json!({"id": other_role})).await.0,
        204
    );
    assert_eq!(owner.put(&consumers, json!({"id": role})).await.0, 204);
    assert_eq!(
        manager.read(cid).await.len(),
        1,
        "now a consumer by the owner's choice"
    );
}

/// Issue 18 item 10: names are unique per owner (credentials) and per creator (lockers), so
/// creating one under the name of something the caller cannot see succeeds instead of answering
/// 409 and so telling that it exists; the caller's own names still collide, with a message
/// about their own, and a Locker Admin sees both.
#[tokio::test]
async fn names_are_unique_per_owner_and_tell_nothing_of_others() {
    let s = shared();
    let alice = user(s, &["Vault User"]).await;
    let bob = user(s, &["Vault User"]).await;
    let locker_admin = user(s, &["Locker Admin"]).await;
    let cred_name = unique("same-cred");
    let locker_name = unique("same-locker");
    let attrs = json!([{"name": "pw", "userProvided": false, "masked": true}]);
    let (st, a_cred) = alice
        .post(
            "/credentials",
            json!({"name": cred_name, "attributes": attrs}),
        )
        .await;
    assert_eq!(st, 201, "{a_cred}");
    let (st, a_locker) = alice.post("/lockers", json!({"name": locker_name})).await;
    assert_eq!(st, 201, "{a_locker}");

    // Bob cannot see Alice's: the same names are his to use.
    assert_eq!(
        bob.get(&format!("/credentials/{}", id(&a_cred))).await.0,
        404
    );
    let (st, b_cred) = bob
        .post(
            "/credentials",
            json!({"name": cred_name, "attributes": attrs}),
        )
        .await;
    assert_eq!(st, 201, "{b_cred}");
    let (st, b_locker) = bob.post("/lockers", json!({"name": locker_name})).await;
    assert_eq!(st, 201, "{b_locker}");
    assert_ne!(id(&a_cred), id(&b_cred));

    // His own names collide, and the answer speaks of his own only; nothing is created.
    let (st, e) = bob
        .post(
            "/credentials",
            json!({"name": cred_name, "attributes": attrs}),
        )
        .await;
    assert_eq!(st, 409, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("you already own"),
        "{e}"
    );
    let (st, e) = bob.post("/lockers", json!({"name": locker_name})).await;
    assert_eq!(st, 409, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("you already made"),
        "{e}"
    );
    let (_, mine) = bob.get(&format!("/credentials?name={cred_name}")).await;
    assert_eq!(ids(&mine), vec![id(&b_cred)]);

    // Renaming onto another owner's name is fine too; onto one's own is 409.
    let (st, other) = bob
        .post(
            "/credentials",
            json!({"name": unique("other"), "attributes": attrs}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, e) = bob
        .put(
            &format!("/credentials/{}", id(&other)),
            json!({"version": other["version"], "name": cred_name}),
        )
        .await;
    assert_eq!(st, 409, "{e}");

    // Giving a credential to someone who owns one of that name is refused (the giver chose
    // them); the Locker Admin sees both of each name.
    let (st, e) = locker_admin
        .put_empty(&format!("/credentials/{}/owner/{}", id(&b_cred), alice.id))
        .await;
    assert_eq!(st, 409, "{e}");
    let (_, both) = locker_admin
        .get(&format!("/credentials?name={cred_name}"))
        .await;
    let mut got = ids(&both);
    got.sort();
    let mut want = vec![id(&a_cred), id(&b_cred)];
    want.sort();
    assert_eq!(got, want);
    let (_, lockers) = locker_admin.get("/lockers").await;
    let named = lockers["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["name"] == locker_name.as_str())
        .count();
    assert_eq!(named, 2);
}

/// The credential list is answered from memory while nothing it shows changes
/// (`Vault::list_credentials_rendered`): every kind of change that can change a list is seen by
/// the very next list, each list asked twice so that the second is the kept one.
#[tokio::test]
async fn a_kept_credential_list_follows_every_change_it_shows() {
    let s = shared();
    let admin = admin(s).await;
    let (role, role_name) = consumer_role(s).await;
    let owner = user(s, &["Vault User"]).await;
    let bot = user(s, &["Vault User"]).await;
    // `(id, name, completed)` of each credential `who` lists, asked twice: the answers agree.
    async fn listed(who: &Who) -> Vec<(i64, String, bool)> {
        let mut answers = Vec::new();
        for _ in 0..2 {
            let (st, v) = who.get("/credentials").await;
            assert_eq!(st, 200, "{v}");
            answers.push(
                v["list"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        (
                            id(c),
                            c["name"].as_str().unwrap().to_owned(),
                            c["completed"].as_bool().unwrap(),
                        )
                    })
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(
            answers[0], answers[1],
            "a list asked again answers the same"
        );
        answers.pop().unwrap()
    }
    let find = |list: &[(i64, String, bool)], cid: i64| list.iter().find(|c| c.0 == cid).cloned();
    let set_roles = |user_id: String, roles: Vec<&str>| {
        let roles: Vec<String> = roles.into_iter().map(str::to_owned).collect();
        let token = admin.token.clone();
        async move {
            let (st, v) = call(
                client()
                    .put(s.url(&format!("/api/v1/users/{user_id}/roles")))
                    .bearer_auth(token)
                    .json(&json!({ "roles": roles })),
            )
            .await;
            assert_eq!(st, 200, "{v}");
        }
    };

    let before = listed(&owner).await;
    // A new credential (and its attribute).
    let c = owner.credential(&[("password", false)]).await;
    let cid = id(&c);
    let name = c["name"].as_str().unwrap().to_owned();
    assert_eq!(find(&listed(&owner).await, cid), Some((cid, name, false)));
    assert_eq!(listed(&owner).await.len(), before.len() + 1);
    // A value stored: the credential is completed.
    owner
        .values(cid, &[(id(&c["attributes"][0]), "s3cret")])
        .await;
    assert!(
        find(&listed(&owner).await, cid).unwrap().2,
        "completed once its value is stored"
    );
    // Renamed.
    let renamed = unique("renamed");
    let (st, v) = owner
        .put(
            &format!("/credentials/{cid}"),
            json!({"version": 0, "name": renamed}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(find(&listed(&owner).await, cid).unwrap().1, renamed);
    // A new attribute without a value: no longer completed.
    let (st, v) = owner
        .put(
            &format!("/credentials/{cid}"),
            json!({"version": 1, "attributes": [{"name": "user", "userProvided": false, "masked": false}]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert!(
        !find(&listed(&owner).await, cid).unwrap().2,
        "an attribute without a value"
    );

    // In a locker whose consumers are a role the bot does not hold yet.
    let lid = id(&owner.locker().await);
    assert_eq!(
        owner
            .put_empty(&format!("/lockers/{lid}/credentials/{cid}"))
            .await
            .0,
        200
    );
    assert_eq!(find(&listed(&bot).await, cid), None);
    assert_eq!(
        owner
            .put(&format!("/lockers/{lid}/consumers"), json!({"id": role}))
            .await
            .0,
        204
    );
    assert_eq!(
        find(&listed(&bot).await, cid),
        None,
        "the bot holds no consumer role yet"
    );
    // The role given to the bot, then taken back.
    set_roles(bot.user_id.clone(), vec!["Vault User", &role_name]).await;
    assert!(
        find(&listed(&bot).await, cid).is_some(),
        "a consumer sees it at once"
    );
    set_roles(bot.user_id.clone(), vec!["Vault User"]).await;
    assert_eq!(
        find(&listed(&bot).await, cid),
        None,
        "and stops seeing it at once"
    );
    // The role given back, then the role no longer a consumer of the locker.
    set_roles(bot.user_id.clone(), vec!["Vault User", &role_name]).await;
    assert!(find(&listed(&bot).await, cid).is_some());
    assert_eq!(
        owner
            .delete(&format!("/lockers/{lid}/consumers/{role}"))
            .await
            .0,
        204
    );
    assert_eq!(
        find(&listed(&bot).await, cid),
        None,
        "a consumer role removed"
    );
    // A member with `manage` sees it; removed, it does not.
    assert_eq!(
        owner
            .put(
                &format!("/lockers/{lid}/members/{}", bot.id),
                json!({"permissions": ["manage"]})
            )
            .await
            .0,
        204
    );
    assert!(
        find(&listed(&bot).await, cid).is_some(),
        "a manage member sees it"
    );
    assert_eq!(
        owner
            .delete(&format!("/lockers/{lid}/members/{}", bot.id))
            .await
            .0,
        204
    );
    assert_eq!(find(&listed(&bot).await, cid), None, "a member removed");
    // Deleted.
    assert_eq!(
        owner
            .delete(&format!("/lockers/{lid}/credentials/{cid}"))
            .await
            .0,
        204
    );
    assert_eq!(owner.delete(&format!("/credentials/{cid}")).await.0, 204);
    assert_eq!(find(&listed(&owner).await, cid), None);
    assert_eq!(listed(&owner).await.len(), before.len());
}
