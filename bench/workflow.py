#!/usr/bin/env python3
"""Client side of bench/workflow.sh and bench/workflow_tasks.sh (standard library only).

Talks HTTPS to a throwaway Haechi server on 127.0.0.1 (its self-signed certificate is not
verified, like `curl -k`). Every measured figure comes from the server's own stored times
(execution created/ended, step started/ended, in milliseconds), so the client's speed does not
enter into the engine's overhead; wall times as the client sees them are printed beside them.

  workflow.py chain   BASE TOKEN STEPS RUNS        100-step chain of `sleep 0`: ms per step
  workflow.py burst   BASE TOKEN EXECS STEPS PID   EXECS executions of a STEPS-step chain at once
  workflow.py tasks   BASE TOKEN STEPS TASK NODE   STEPS task steps running TASK on NODE
  workflow.py decide  BASE TOKEN SAMPLES           an `on_failure: ask` http step fails, an
                                                   operator POSTs `retry`: time from that POST
                                                   to the retried step's request arriving
"""

import concurrent.futures
import http.server
import json
import ssl
import sys
import time
import http.client
import threading
import urllib.parse

CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


LOCAL = threading.local()


def connection(base, timeout):
    """A kept-alive HTTPS connection per thread (a TLS handshake per request would measure
    handshakes rather than the engine)."""
    conn = getattr(LOCAL, "conn", None)
    if conn is None or LOCAL.base != base:
        host = urllib.parse.urlsplit(base).netloc
        conn = http.client.HTTPSConnection(host, context=CTX, timeout=timeout)
        LOCAL.conn, LOCAL.base = conn, base
    return conn


def call(base, token, method, path, body=None, form=None, timeout=600):
    data = None
    headers = {"Authorization": "Bearer " + token}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    for attempt in range(2):
        conn = connection(base, timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            raw = r.read()
            return r.status, json.loads(raw or b"null")
        except (http.client.HTTPException, OSError):
            # The server closed a kept-alive connection: open a new one, once.
            conn.close()
            LOCAL.conn = None
            if attempt == 1:
                raise


def create(base, token, name, steps):
    st, body = call(base, token, "POST", "/api/v1/workflows",
                    {"name": name, "group": "bench", "steps": steps})
    if st != 201:
        sys.exit(f"create workflow: {st} {body}")
    return body["id"]


def execution(base, token, exec_id):
    st, body = call(base, token, "GET", f"/api/v1/executions/{exec_id}")
    if st != 200:
        sys.exit(f"execution {exec_id}: {st} {body}")
    return body


def wait_end(base, token, exec_id, limit=3600):
    deadline = time.time() + limit
    while time.time() < deadline:
        e = execution(base, token, exec_id)
        if e["status"] in ("COMPLETED", "FAILED", "STOPPED"):
            return e
        time.sleep(0.05)
    sys.exit(f"{exec_id} did not end")


def chain(base, token, steps, runs):
    wf = create(base, token, f"chain-{steps}-{time.time_ns()}",
                [{"name": f"s{i:03d}", "type": "sleep", "seconds": 0} for i in range(steps)])
    per_step = []
    for r in range(runs):
        t0 = time.perf_counter()
        st, body = call(base, token, "POST", "/services/workflow/execute",
                        form={"wf_id": wf, "sync": "true"})
        wall = time.perf_counter() - t0
        if st != 200 or body.get("status") != "COMPLETED":
            sys.exit(f"run {r}: {st} {body}")
        e = execution(base, token, body["execution_id"])
        first = e["steps"][0]["started_at"]
        last = e["steps"][-1]["ended_at"]
        span = e["ended_at"] - e["created_at"]
        ms = (last - first) / steps
        per_step.append(ms)
        print(f"run {r + 1}: {steps} steps, execution {span} ms (created → ended), "
              f"first step start → last step end {last - first} ms = {ms:.2f} ms/step; "
              f"client wall (sync execute) {wall * 1000:.0f} ms")
    per_step.sort()
    print(f"RESULT chain steps={steps} runs={runs} ms_per_step_median={per_step[len(per_step) // 2]:.2f} "
          f"ms_per_step_best={per_step[0]:.2f} ms_per_step_worst={per_step[-1]:.2f}")


def rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
    return out


def burst(base, token, execs, steps, pid):
    wf = create(base, token, f"burst-{execs}x{steps}-{time.time_ns()}",
                [{"name": f"s{i}", "type": "sleep", "seconds": 0} for i in range(steps)])
    before = rss(pid)

    def start(_):
        st, body = call(base, token, "POST", "/services/workflow/execute", form={"wf_id": wf})
        if st != 200:
            raise RuntimeError(f"execute: {st} {body}")
        return body["execution_id"]

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=64) as pool:
        ids = list(pool.map(start, range(execs)))
    started = time.perf_counter() - t0
    peak_rss = 0.0
    deadline = time.time() + 600
    while time.time() < deadline:
        peak_rss = max(peak_rss, rss(pid)["VmRSS"])
        st, body = call(base, token, "GET",
                        f"/api/v1/executions?wf_id={wf}&status=COMPLETED&limit=1")
        if body["total"] >= execs:
            break
        st, failed = call(base, token, "GET", f"/api/v1/executions?wf_id={wf}&status=FAILED&limit=1")
        if failed["total"] > 0:
            sys.exit(f"executions failed: {failed}")
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    # Server-side span: first execution created → last execution ended.
    first_created = None
    last_ended = None
    offset = 0
    while True:
        st, page = call(base, token, "GET", f"/api/v1/executions?wf_id={wf}&limit=1000&offset={offset}")
        for e in page["executions"]:
            if e["status"] != "COMPLETED":
                sys.exit(f"not completed: {e}")
            first_created = e["created_at"] if first_created is None else min(first_created, e["created_at"])
            last_ended = e["ended_at"] if last_ended is None else max(last_ended, e["ended_at"])
        offset += len(page["executions"])
        if offset >= page["total"] or not page["executions"]:
            break
    span = (last_ended - first_created) / 1000
    after = rss(pid)
    total_steps = execs * steps
    print(f"{execs} executions × {steps} steps = {total_steps} steps; all {execs} execute calls answered in "
          f"{started:.2f} s; client wall until all completed {wall:.2f} s")
    print(f"server: first created → last ended {span:.2f} s = {total_steps / span:.0f} steps/s "
          f"({execs / span:.0f} executions/s)")
    print(f"server RSS: {before['VmRSS']:.1f} MiB before, peak seen {peak_rss:.1f} MiB, "
          f"{after['VmRSS']:.1f} MiB after; high-water mark {after['VmHWM']:.1f} MiB")
    print(f"RESULT burst execs={execs} steps={steps} steps_per_s={total_steps / span:.0f} span_s={span:.2f} "
          f"rss_peak_mib={max(peak_rss, after['VmHWM']):.1f}")


def tasks(base, token, steps, task, node):
    wf = create(base, token, f"tasks-{steps}-{time.time_ns()}",
                [{"name": f"t{i:03d}", "type": "task", "task": task, "nodes": [node]} for i in range(steps)])
    t0 = time.perf_counter()
    st, body = call(base, token, "POST", "/services/workflow/execute", form={"wf_id": wf, "sync": "true"})
    wall = time.perf_counter() - t0
    if st != 200 or body.get("status") != "COMPLETED":
        e = execution(base, token, body.get("execution_id", ""))
        sys.exit(f"{st} {body} {e.get('error')}")
    e = execution(base, token, body["execution_id"])
    span = (e["ended_at"] - e["created_at"]) / 1000
    print(f"{steps} task steps (task '{task}' on node {node}): execution {span:.2f} s, "
          f"{span * 1000 / steps:.1f} ms per step; client wall {wall:.2f} s")
    print(f"RESULT tasks steps={steps} wall_s={wall:.3f} span_s={span:.3f}")


def decide(base, token, samples):
    """Time from an operator's `retry` decision (POST .../steps/{name}/actions) to the retried
    http step's request arriving at a local endpoint, over SAMPLES paused runs. The peer, in the
    same run: the round trip of one `GET /api/v1/executions/{id}` on the same connection (the
    floor any HTTP-driven action has on this machine)."""
    state = {"fail": True, "hits": []}
    lock = threading.Lock()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            at = time.perf_counter()
            self.rfile.read(int(self.headers.get("content-length") or 0))
            with lock:
                state["hits"].append(at)
                code = 500 if state["fail"] else 200
            self.send_response(code)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/switch"
    wf = create(base, token, f"decide-{time.time_ns()}", [
        {"name": "switch", "type": "http", "method": "POST", "url": url,
         "expect_status": 200, "on_failure": "ask"},
        {"name": "verify", "type": "sleep", "seconds": 0},
    ])
    lat, rtt = [], []
    for i in range(samples):
        with lock:
            state["fail"] = True
        st, body = call(base, token, "POST", "/services/workflow/execute", form={"wf_id": wf})
        if st != 200:
            sys.exit(f"execute: {st} {body}")
        ex = body["execution_id"]
        deadline = time.time() + 60
        while execution(base, token, ex)["status"] != "PAUSED":
            if time.time() > deadline:
                sys.exit(f"{ex} did not pause: {execution(base, token, ex)}")
            time.sleep(0.01)
        t = time.perf_counter()
        execution(base, token, ex)
        rtt.append((time.perf_counter() - t) * 1000)
        with lock:
            state["fail"] = False
            seen = len(state["hits"])
        t0 = time.perf_counter()
        st, body = call(base, token, "POST", f"/api/v1/executions/{ex}/steps/switch/actions",
                        {"action": "retry", "reason": "bench: the endpoint is back"})
        if st != 200:
            sys.exit(f"retry: {st} {body}")
        deadline = time.time() + 60
        while True:
            with lock:
                if len(state["hits"]) > seen:
                    lat.append((state["hits"][seen] - t0) * 1000)
                    break
            if time.time() > deadline:
                sys.exit(f"{ex}: the retried step never called")
            time.sleep(0.0005)
        e = wait_end(base, token, ex, 60)
        if e["status"] != "COMPLETED":
            sys.exit(f"{ex} ended {e['status']}")
    srv.shutdown()
    print(f"{samples} paused runs: decision POST → retried step's request "
          f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms; "
          f"peer: one GET /api/v1/executions/{{id}} round trip p50 {pct(rtt, 50):.1f} ms")
    print(f"RESULT decide samples={samples} p50_ms={pct(lat, 50):.1f} p99_ms={pct(lat, 99):.1f} "
          f"get_rtt_p50_ms={pct(rtt, 50):.1f} ratio_p50={pct(lat, 50) / max(pct(rtt, 50), 0.001):.1f}")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    mode = sys.argv[1]
    if mode == "chain":
        chain(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    elif mode == "burst":
        burst(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    elif mode == "decide":
        decide(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "tasks":
        tasks(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
