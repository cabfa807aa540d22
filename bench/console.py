#!/usr/bin/env python3
"""Client side of bench/console.sh (standard library only).

  console.py BASE TOKEN TASK [NODES] [RUNS] [SAMPLES]

Fills the server with NODES enrolled nodes (no agent process), RUNS finished executions and a
task instance on every node, logs in to the console through its form, then times the server's
answer to each main page SAMPLES times over one kept-alive HTTPS connection (p50/p99, ms), and
the time from an approval decision (API) to the `live` event on the run page's event stream
(the push the browser swaps in), SAMPLES times.
"""

import concurrent.futures
import http.client
import json
import re
import ssl
import statistics
import sys
import threading
import time
import urllib.parse

CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE
LOCAL = threading.local()


def conn(base):
    c = getattr(LOCAL, "c", None)
    if c is None:
        c = http.client.HTTPSConnection(urllib.parse.urlsplit(base).netloc, context=CTX, timeout=600)
        LOCAL.c = c
    return c


def call(base, token, method, path, body=None):
    headers = {"Authorization": "Bearer " + token}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    for _ in range(2):
        c = conn(base)
        try:
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            raw = r.read()
            return r.status, json.loads(raw or b"null")
        except (http.client.HTTPException, OSError):
            c.close()
            LOCAL.c = None
    raise SystemExit(f"{method} {path} failed twice")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    base, token, task = sys.argv[1], sys.argv[2], sys.argv[3]
    nodes = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    runs = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    samples = int(sys.argv[6]) if len(sys.argv) > 6 else 50
    pool = concurrent.futures.ThreadPoolExecutor(16)

    st, body = call(base, token, "POST", "/api/v1/agents/enrollment-tokens", {"uses": nodes})
    enrol = body["token"]
    ids = [f"bench-{i:04d}" for i in range(nodes)]
    list(pool.map(lambda n: call(base, "", "POST", "/api/v1/agents/enroll", {"token": enrol, "nodeId": n, "hostname": n}), ids))
    st, body = call(base, token, "POST", f"/api/v1/tasks/{task}/instances", {"nodeIdList": ids, "arguments": []})
    assert st in (200, 201), body
    instance = body["instance"]["taskInstanceNo"]

    wf = {"name": "bench-console", "group": "bench", "steps": [{"name": "s", "type": "sleep", "seconds": 0}]}
    st, body = call(base, token, "POST", "/api/v1/workflows", wf)
    wf_id = body["id"]
    started = list(pool.map(lambda _: call(base, token, "POST", f"/api/v1/workflows/{wf_id}/executions", {})[1]["execution_id"], range(runs)))
    ap = {"name": "bench-approval", "group": "bench", "steps": [{"name": "ok", "type": "approval", "role": "System Admin"}]}
    st, body = call(base, token, "POST", "/api/v1/workflows", ap)
    ap_id = body["id"]
    # Wait until the runs have ended.
    for _ in range(600):
        st, body = call(base, token, "GET", f"/api/v1/executions?wf_id={wf_id}&status=COMPLETED&limit=1")
        if body["total"] >= runs:
            break
        time.sleep(0.5)

    # Console login through the form, as a browser does.
    c = http.client.HTTPSConnection(urllib.parse.urlsplit(base).netloc, context=CTX, timeout=600)
    c.request("GET", "/console/login")
    r = c.getresponse()
    page = r.read().decode()
    pre = re.search(r"__Host-haechi_login=([0-9a-f]+)", r.getheader("Set-Cookie")).group(1)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
    form = urllib.parse.urlencode({"csrf": csrf, "user_id": "admin", "password": sys.argv[7] if len(sys.argv) > 7 else ""})
    c.request("POST", "/console/login", body=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"__Host-haechi_login={pre}"})
    r = c.getresponse()
    r.read()
    session = re.search(r"__Host-haechi_session=([^;]+)", " ".join(v for k, v in r.getheaders() if k.lower() == "set-cookie")).group(1)
    cookie = {"Cookie": f"__Host-haechi_session={session}", "Accept-Language": "en"}

    pages = {
        "dashboard": "/console/",
        "runs (1,000 stored)": "/console/executions",
        "run": f"/console/executions/{started[0]}",
        "workflows": "/console/workflows",
        "workflow": f"/console/workflows/{wf_id}",
        f"nodes ({nodes} stored)": "/console/nodes",
        f"task instance ({nodes} nodes)": f"/console/task-instances/{instance}",
        f"task instance, one node's output": f"/console/task-instances/{instance}?node={ids[0]}",
        "approvals": "/console/approvals",
        "tasks": "/console/tasks",
    }
    print(f"load: {nodes} nodes, {runs} finished runs, an instance on {nodes} nodes; {samples} samples per page")
    print(f"{'page':40} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>8}")
    for name, path in pages.items():
        times = []
        size = 0
        for _ in range(samples):
            t = time.perf_counter()
            c.request("GET", path, headers=cookie)
            r = c.getresponse()
            data = r.read()
            times.append((time.perf_counter() - t) * 1000)
            assert r.status == 200, (path, r.status, data[:300])
            size = len(data)
        print(f"{name:40} {pct(times, 50):8.1f} {pct(times, 99):8.1f} {size:8d}")

    # Step change → pushed event. One run per sample; each waits for its approval.
    lat = []
    for _ in range(max(5, samples // 5)):
        st, body = call(base, token, "POST", f"/api/v1/workflows/{ap_id}/executions", {})
        ex = body["execution_id"]
        for _ in range(100):
            st, v = call(base, token, "GET", f"/api/v1/executions/{ex}")
            if v["steps"][0]["status"] == "RUNNING":
                break
            time.sleep(0.05)
        sse = http.client.HTTPSConnection(urllib.parse.urlsplit(base).netloc, context=CTX, timeout=30)
        sse.request("GET", f"/console/executions/{ex}/live", headers=cookie)
        resp = sse.getresponse()
        assert resp.status == 200, resp.status
        # The first event is the state at connect.
        def next_event():
            name = None
            while True:
                line = resp.fp.readline().decode()
                if line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                if line in ("\n", "\r\n") and name:
                    return name
        assert next_event() == "live"
        t = time.perf_counter()
        threading.Thread(target=lambda: call(base, token, "POST", f"/api/v1/executions/{ex}/steps/ok/decision", {"action": "approve"})).start()
        name = next_event()
        lat.append((time.perf_counter() - t) * 1000)
        sse.close()
    print(f"decision sent → live event received: p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms ({len(lat)} runs)")


if __name__ == "__main__":
    main()
