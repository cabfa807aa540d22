//! The HTTP layer as a client meets it over both protocol versions.

mod common;

use common::*;
use serde_json::json;

/// A body over the limit is a 413 in the family's envelope over HTTP/2 as over HTTP/1.1, not a
/// reset stream; and nothing is created.
#[tokio::test]
async fn an_oversized_body_is_a_413_over_http2_too() {
    let s = shared();
    let admin = admin_token(s).await;
    let h2 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let id = unique("h2big");
    let big =
        json!({"user_id": id, "name": "x".repeat(3 * 1024 * 1024), "password": "good-password-1"})
            .to_string();
    for client in [h2.clone(), client()] {
        let r = client
            .post(s.url("/api/v1/users"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .expect("an answer, not a reset stream");
        assert_eq!(r.status(), 413);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "payload_too_large", "{body}");
    }
    let (st, _) = call(
        client()
            .get(s.url(&format!("/api/v1/users/{id}")))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(st, 404, "nothing was created");
    // A workflow definition over the limit likewise.
    let r = h2
        .post(s.url("/api/v1/workflows"))
        .bearer_auth(&admin)
        .header("content-type", "application/yaml")
        .body(format!("name: x\n# {}\n", "y".repeat(2 * 1024 * 1024)))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 413);
}
