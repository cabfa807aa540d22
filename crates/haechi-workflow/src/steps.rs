//! One attempt of a step, as a future the driver runs and may drop at any time (a stop, a
//! pause does not): sleeping, calling an HTTP endpoint, or following a task instance. Approval
//! steps have no future: they wait for a decision in the store.
//!
//! Every deadline is counted from the attempt's stored start, so an attempt resumed after a
//! restart waits only what is left; the exception is an http call re-sent after a restart,
//! which gets a whole timeout again (the first send's time is lost with the server).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use haechi_identity::Actor;
use haechi_types::time::now_ms;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::definition::{Action, DbAccessAction, HttpAction};
use crate::egress::{EgressPolicy, Refusal};
use crate::ports::{PolicyGate, TaskRunner};

/// What the attempts need from the engine.
pub(crate) struct AttemptCtx {
    pub http: reqwest::Client,
    pub tasks: Arc<dyn TaskRunner>,
    pub policies: Option<Arc<dyn PolicyGate>>,
    /// Timeout of an http step that gives none.
    pub http_timeout_ms: u64,
    /// Where http steps may connect.
    pub egress: Arc<EgressPolicy>,
    /// Bytes of an http response body read and kept.
    pub http_body_max_bytes: usize,
}

/// One attempt to run.
pub(crate) struct AttemptSpec {
    pub execution_id: String,
    pub step: String,
    pub attempt: i64,
    /// The step's action with the parameters substituted.
    pub action: Action,
    pub attempt_started_at: i64,
    pub timeout_ms: Option<u64>,
    /// Task steps: the instance this attempt started.
    pub task_instance_no: Option<i64>,
    /// The attempt was under way when a server stopped and is taken up again.
    pub resumed: bool,
    pub actor: Actor,
    /// The numeric id of the user who started the execution.
    pub user_pk: i64,
    /// The attempt may not run: it fails with this at once, having done nothing.
    pub refused: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub(crate) struct AttemptResult {
    pub ok: bool,
    pub error: Option<String>,
    /// JSON text for the step's `result`.
    pub result: Option<String>,
}

impl AttemptResult {
    fn ok(result: Option<Value>) -> Self {
        AttemptResult {
            ok: true,
            error: None,
            result: result.map(|v| v.to_string()),
        }
    }

    pub fn fail(error: impl Into<String>) -> Self {
        AttemptResult {
            ok: false,
            error: Some(error.into()),
            result: None,
        }
    }

    fn fail_with(error: impl Into<String>, result: Value) -> Self {
        AttemptResult {
            ok: false,
            error: Some(error.into()),
            result: Some(result.to_string()),
        }
    }
}

/// The instant `at_ms` (wall clock) on the runtime's clock.
pub(crate) fn instant_of(at_ms: i64) -> Instant {
    let left = at_ms - now_ms();
    if left <= 0 {
        Instant::now()
    } else {
        Instant::now() + Duration::from_millis(left as u64)
    }
}

fn secs_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", ms as f64 / 1000.0)
    }
}

/// Runs one attempt to its end.
pub(crate) async fn run_attempt(ctx: Arc<AttemptCtx>, spec: AttemptSpec) -> AttemptResult {
    if let Some(why) = &spec.refused {
        return AttemptResult::fail(why.clone());
    }
    match &spec.action {
        Action::Sleep { seconds } => sleep(&spec, seconds.ms()).await,
        Action::Http(h) => http(&ctx, &spec, h).await,
        Action::Task(_) => task(&ctx, &spec).await,
        Action::DbAccess(d) => db_access(&ctx, &spec, d).await,
        // Decided through the store, never run as a future.
        Action::Approval { .. } => AttemptResult::fail("an approval step has no attempt to run"),
        // Waited for by the driver (`driver::wait_child`).
        Action::Workflow(_) => AttemptResult::fail("a workflow step waits for its child execution"),
    }
}

async fn sleep(spec: &AttemptSpec, seconds_ms: u64) -> AttemptResult {
    let end = spec.attempt_started_at + seconds_ms as i64;
    let timeout_at = spec.timeout_ms.map(|t| spec.attempt_started_at + t as i64);
    match timeout_at {
        Some(t) if t < end => {
            wait_until(t).await;
            AttemptResult::fail(format!(
                "timed out after {} (the sleep lasts {})",
                secs_text(spec.timeout_ms.unwrap_or(0)),
                secs_text(seconds_ms)
            ))
        }
        _ => {
            wait_until(end).await;
            AttemptResult::ok(None)
        }
    }
}

/// Waits until `at_ms`; returns at once (without a timer) when it has passed.
pub(crate) async fn wait_until(at_ms: i64) {
    if at_ms > now_ms() {
        tokio::time::sleep_until(instant_of(at_ms)).await;
    }
}

/// `<execution_id>/<step>/<attempt>`, the step name percent-encoded so the header stays ASCII.
pub fn idempotency_key(execution_id: &str, step: &str, attempt: i64) -> String {
    let mut enc = String::with_capacity(step.len());
    for b in step.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{execution_id}/{enc}/{attempt}")
}

async fn http(ctx: &AttemptCtx, spec: &AttemptSpec, h: &HttpAction) -> AttemptResult {
    let timeout_ms = spec.timeout_ms.unwrap_or(ctx.http_timeout_ms);
    let deadline = if spec.resumed {
        Instant::now() + Duration::from_millis(timeout_ms)
    } else {
        instant_of(spec.attempt_started_at + timeout_ms as i64)
    };
    let url = match crate::definition::check_url(&h.url) {
        Ok(u) => u,
        Err(m) => return AttemptResult::fail(format!("url: {m}")),
    };
    // An address in the URL is never resolved, so the resolver's check does not see it.
    let host = url.host_str().unwrap_or_default();
    let literal = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    let checked = match literal {
        Ok(ip) => ctx.egress.check(None, ip),
        Err(_) => ctx.egress.check_name(host),
    };
    if let Err(r) = checked {
        return AttemptResult::fail(r.0);
    }
    let method = match reqwest::Method::from_bytes(h.method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return AttemptResult::fail(format!("method '{}' is not valid", h.method)),
    };
    let mut req = ctx
        .http
        .request(method, url)
        .header(
            "Idempotency-Key",
            idempotency_key(&spec.execution_id, &spec.step, spec.attempt),
        )
        .header("X-Haechi-Execution", spec.execution_id.as_str());
    for (k, v) in &h.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req = match &h.body {
        None => req,
        Some(Value::String(s)) => req.body(s.clone()),
        Some(v) => req.json(v),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return AttemptResult::fail(format!("timed out after {}", secs_text(timeout_ms)));
    }
    let cap = ctx.http_body_max_bytes;
    let call = async {
        let mut res = req.send().await?;
        let status = res.status().as_u16();
        // Read no more than the cap: the rest of the body is never read (the connection is
        // dropped with it).
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = res.chunk().await? {
            let room = cap - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>((status, body, truncated))
    };
    match tokio::time::timeout_at(deadline, call).await {
        Err(_) => AttemptResult::fail(format!("timed out after {}", secs_text(timeout_ms))),
        Ok(Err(e)) => AttemptResult::fail(describe_http_error(&e)),
        Ok(Ok((status, body, truncated))) => {
            let kept = String::from_utf8_lossy(&body).into_owned();
            let mut result = json!({ "status": status, "body": kept });
            if truncated {
                result["truncated"] = Value::Bool(true);
            }
            let expected = match &h.expect_status {
                Some(list) => list.contains(&status),
                None => (200..300).contains(&status),
            };
            if expected {
                AttemptResult::ok(Some(result))
            } else {
                let want = match &h.expect_status {
                    Some(list) => list
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(" or "),
                    None => "2xx".to_owned(),
                };
                AttemptResult::fail_with(format!("HTTP {status} (expected {want})"), result)
            }
        }
    }
}

fn describe_http_error(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refusal>() {
            return r.0.clone();
        }
        source = s.source();
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_body() || e.is_decode() {
        "the response could not be read"
    } else {
        "the request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Unlocks the policy until the attempt's start plus the duration (so an attempt taken up
/// again after a restart does not lengthen the window) and succeeds; the window then closes by
/// itself at its end.
async fn db_access(ctx: &AttemptCtx, spec: &AttemptSpec, d: &DbAccessAction) -> AttemptResult {
    let Some(gate) = &ctx.policies else {
        return AttemptResult::fail("db_access steps are not available on this server");
    };
    let index = match gate.find(&d.policy).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            return AttemptResult::fail(format!("policy '{}' does not exist", d.policy));
        }
        Err(e) => {
            return AttemptResult::fail(format!(
                "looking up policy '{}' failed: {}",
                d.policy, e.message
            ))
        }
    };
    let until = spec.attempt_started_at + d.duration.ms() as i64;
    let result = json!({
        "policy": d.policy, "index": index, "until": until,
        "until_iso": haechi_types::time::iso_ms(until),
    });
    if until <= now_ms() {
        return AttemptResult::ok(Some(result));
    }
    match gate
        .unlock_until(spec.user_pk, &spec.actor, index, until)
        .await
    {
        Ok(()) => AttemptResult::ok(Some(result)),
        Err(e) => AttemptResult::fail(format!(
            "policy '{}' could not be unlocked: {}",
            d.policy, e.message
        )),
    }
}

async fn task(ctx: &AttemptCtx, spec: &AttemptSpec) -> AttemptResult {
    let Some(no) = spec.task_instance_no else {
        return AttemptResult::fail("the task instance of this attempt is unknown");
    };
    let wait = ctx.tasks.wait(no);
    let ended = match spec.timeout_ms {
        Some(t) => {
            match tokio::time::timeout_at(instant_of(spec.attempt_started_at + t as i64), wait)
                .await
            {
                Ok(r) => r,
                Err(_) => {
                    let cancelled = ctx.tasks.cancel(no, Some(&spec.actor)).await;
                    if let Err(e) = cancelled {
                        tracing::warn!(
                            instance = no,
                            "cancelling a timed-out task instance failed: {e}"
                        );
                    }
                    return AttemptResult::fail(format!(
                        "timed out after {} (task instance {no} cancelled)",
                        secs_text(t)
                    ));
                }
            }
        }
        None => wait.await,
    };
    match ended {
        Ok(end) if end.ok => {
            let mut result = json!({ "taskInstanceNo": no, "summary": end.summary });
            if let Action::Task(t) = &spec.action {
                if !t.capture.is_empty() {
                    match capture(ctx, no, t).await {
                        Ok(vars) => result["captured"] = json!(vars),
                        Err(why) => return AttemptResult::fail_with(why, result),
                    }
                }
            }
            AttemptResult::ok(Some(result))
        }
        Ok(end) => AttemptResult::fail_with(end.summary, json!({ "taskInstanceNo": no })),
        Err(e) => AttemptResult::fail(format!(
            "following task instance {no} failed: {}",
            e.message
        )),
    }
}

/// Most stdout a `capture` reads, bytes.
const CAPTURE_READ_BYTES: i64 = 1024 * 1024;
/// Longest captured value, characters.
const CAPTURE_VALUE_CHARS: usize = 4096;

/// A task step's `capture`: each regex on the stdout of the step's first node; group 1 of the
/// first match is the value. No match fails the step, naming the variable.
async fn capture(
    ctx: &AttemptCtx,
    no: i64,
    t: &crate::definition::TaskAction,
) -> std::result::Result<std::collections::BTreeMap<String, String>, String> {
    let node = t.nodes.first().map(String::as_str).unwrap_or_default();
    let out = ctx
        .tasks
        .node_stdout(no, node, CAPTURE_READ_BYTES)
        .await
        .map_err(|e| {
            format!(
                "capture: the output of node '{node}' could not be read: {}",
                e.message
            )
        })?;
    let text = String::from_utf8_lossy(&out);
    let mut vars = std::collections::BTreeMap::new();
    for (name, re) in &t.capture {
        let re = regex::RegexBuilder::new(re)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("capture '{name}': {e}"))?;
        let value = re
            .captures(&text)
            .and_then(|c| c.get(1))
            .map(|m| {
                m.as_str()
                    .chars()
                    .take(CAPTURE_VALUE_CHARS)
                    .collect::<String>()
            })
            .ok_or_else(|| {
                format!(
                    "capture '{name}': /{}/ matched nothing in the stdout of node '{node}'",
                    re.as_str()
                )
            })?;
        vars.insert(name.clone(), value);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_ascii() {
        assert_eq!(
            idempotency_key("EXEC_20240520_0001", "db/stop", 2),
            "EXEC_20240520_0001/db%2Fstop/2"
        );
        assert_eq!(idempotency_key("E", "전환", 1), "E/%EC%A0%84%ED%99%98/1");
    }
}
