#!/usr/bin/env python3
"""Client side of bench/cluster.sh's propagation figure (standard library only).

  cluster_revoke.py BASE1 BASE2 ADMIN_PASSWORD SAMPLES

For SAMPLES fresh tokens: log in on server 1, use the token once on server 2 (so server 2 holds
it in its token cache), revoke it on server 1 (`DELETE /api/v1/tokens/current`), then ask server
2 with it (`GET /api/v1/me`) as fast as one kept-alive connection allows until it answers 401.
The figure is the time from server 1's answer to the revocation to server 2's first 401: how
long a revoked token still works on another server. The peer, in the same run: the same loop's
round trip (one GET /api/v1/me on server 2), the resolution of the measurement.
"""

import http.client
import json
import ssl
import sys
import time
import urllib.parse

CTX = ssl.create_default_context()
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


def conn(base):
    return http.client.HTTPSConnection(urllib.parse.urlsplit(base).netloc, context=CTX, timeout=30)


def req(c, method, path, token=None, body=None):
    headers = {}
    if token:
        headers["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    raw = r.read()
    return r.status, raw


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    b1, b2, pw, samples = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    c1, c2 = conn(b1), conn(b2)
    lat, rtt = [], []
    for i in range(samples):
        st, raw = req(c1, "POST", "/api/v1/auth", body={"user_id": "admin", "pwd": pw})
        if st != 200:
            sys.exit(f"login: {st} {raw[:200]!r}")
        token = json.loads(raw)["token"].removeprefix("Bearer ")
        t = time.perf_counter()
        st, _ = req(c2, "GET", "/api/v1/me", token)
        rtt.append((time.perf_counter() - t) * 1000)
        if st != 200:
            sys.exit(f"server 2 refused a fresh token: {st}")
        st, raw = req(c1, "DELETE", "/api/v1/tokens/current", token)
        if st not in (200, 204):
            sys.exit(f"revoke: {st} {raw[:200]!r}")
        t0 = time.perf_counter()
        while True:
            st, _ = req(c2, "GET", "/api/v1/me", token)
            if st == 401:
                lat.append((time.perf_counter() - t0) * 1000)
                break
            if st != 200:
                sys.exit(f"server 2 answered {st}")
            if time.perf_counter() - t0 > 30:
                sys.exit("the revoked token still worked on server 2 after 30 s")
    print(f"{samples} tokens: revoked on server 1 → first 401 on server 2: "
          f"p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms; "
          f"peer: one GET /api/v1/me round trip on server 2 p50 {pct(rtt, 50):.1f} ms")
    print(f"RESULT revoke samples={samples} p50_ms={pct(lat, 50):.1f} p99_ms={pct(lat, 99):.1f} "
          f"max_ms={max(lat):.1f} rtt_p50_ms={pct(rtt, 50):.1f}")


if __name__ == "__main__":
    main()
