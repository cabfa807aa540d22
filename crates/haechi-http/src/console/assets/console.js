// Haechi console: the only script of the console (no library, no inline script, no eval).
// Progressive: every page works without it; it adds the live run view, the output window,
// and the session expiry warning.
"use strict";
(function () {
  var body = document.body;
  var csrf = body.dataset.csrf || "";

  // The language form returns to this page.
  document.querySelectorAll("input[data-back]").forEach(function (i) {
    i.value = location.pathname + location.search;
  });

  // Session expiry: warn two minutes (or a tenth of the idle time) before it ends.
  var idle = parseInt(body.dataset.idleSecs || "0", 10);
  if (idle > 0) {
    var warnAfter = Math.max(idle - Math.min(120, idle / 10), 1) * 1000;
    var warnTimer, endTimer;
    var banner = document.getElementById("expiry");
    var arm = function () {
      clearTimeout(warnTimer);
      clearTimeout(endTimer);
      if (banner) banner.hidden = true;
      warnTimer = setTimeout(function () {
        if (banner) {
          banner.hidden = false;
          var b = document.getElementById("stay");
          if (b) b.focus();
        }
      }, warnAfter);
      endTimer = setTimeout(function () {
        location.href = "/console/login?expired=1";
      }, idle * 1000);
    };
    var stay = document.getElementById("stay");
    if (stay) {
      stay.addEventListener("click", function () {
        fetch("/console/keepalive", {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: "csrf=" + encodeURIComponent(csrf),
        }).then(function (r) {
          if (r.ok) arm();
          else location.href = "/console/login?expired=1";
        });
      });
    }
    arm();
  }

  // The live part of a run page, replaced on each pushed transition. What the user typed
  // and where the focus was survive the swap.
  var live = document.querySelector("[data-live-src]");
  if (live && window.EventSource) {
    var state = document.getElementById("live-state");
    var es = new EventSource(live.dataset.liveSrc);
    window.__haechiLive = { count: 0, at: 0 };
    es.addEventListener("live", function (ev) {
      var keep = {};
      live.querySelectorAll("textarea[id], input[id]").forEach(function (el) {
        if (el.value) keep[el.id] = el.value;
      });
      var focused = document.activeElement && live.contains(document.activeElement) ? document.activeElement.id : "";
      live.innerHTML = ev.data;
      Object.keys(keep).forEach(function (id) {
        var el = document.getElementById(id);
        if (el) el.value = keep[id];
      });
      if (focused) {
        var f = document.getElementById(focused);
        if (f) f.focus();
      }
      window.__haechiLive.count += 1;
      window.__haechiLive.at = Date.now();
      if (state) state.textContent = state.dataset.liveOn;
    });
    // The shown task step's node table, re-sent when a node's state changes.
    window.__haechiNodes = { count: 0, at: 0 };
    es.addEventListener("nodes", function (ev) {
      var box = document.getElementById("step-nodes");
      if (!box) return;
      box.innerHTML = ev.data;
      window.__haechiNodes.count += 1;
      window.__haechiNodes.at = Date.now();
    });
    es.addEventListener("end", function () {
      es.close();
      if (state) state.textContent = "";
    });
    es.onerror = function () {
      if (state && es.readyState === EventSource.CLOSED) state.textContent = state.dataset.liveOff;
    };
  }

  // Output windows: the last part first, earlier parts on demand, follow while the user stays
  // at the bottom, search over what is loaded. At most KEEP characters stay in the page.
  var KEEP = 4 * 1024 * 1024;
  document.querySelectorAll("[data-output-src]").forEach(function (box) {
    var src = box.dataset.outputSrc;
    var pre = box.querySelector("[data-out-text]");
    var follow = box.querySelector("[data-out-follow]");
    var search = box.querySelector("[data-out-search]");
    var earlier = box.querySelector("[data-out-earlier]");
    var streamSel = box.querySelector("[data-out-stream]");
    var info = box.querySelector("[data-out-info]");
    var s = null;
    var timer = null;
    var sep = src.indexOf("?") >= 0 ? "&" : "?";
    var get = function (q) {
      return fetch(src + sep + "stream=" + streamSel.value + q, { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      });
    };
    var atBottom = function () {
      return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
    };
    var showInfo = function (matches) {
      if (!s) return;
      var t = s.len === 0 ? info.dataset.labelNone : info.dataset.labelShown + " " + s.start + "–" + s.next + " " + info.dataset.labelOf + " " + s.len;
      // The node's state as of the last read (the node table beside it is as of page load).
      t = s.status + (s.exitCd === null || s.exitCd === undefined ? "" : " · exit " + s.exitCd) + " · " + t;
      if (matches !== undefined) t += " · " + info.dataset.labelMatches + ": " + matches;
      info.textContent = t;
      earlier.hidden = s.start <= 0;
    };
    var render = function () {
      var term = search.value;
      if (term) {
        var low = term.toLowerCase();
        var lines = s.text.split("\n").filter(function (l) { return l.toLowerCase().indexOf(low) >= 0; });
        pre.textContent = lines.join("\n");
        showInfo(lines.length);
      } else {
        pre.textContent = s.text;
        showInfo();
      }
    };
    var trim = function () {
      if (s.text.length > KEEP) {
        var cut = s.text.length - KEEP;
        var nl = s.text.indexOf("\n", cut);
        if (nl > 0 && nl - cut < 4096) cut = nl + 1;
        // Bytes are not characters; start moves to an estimate the server corrects.
        s.start += new TextEncoder().encode(s.text.slice(0, cut)).length;
        s.text = s.text.slice(cut);
        return true;
      }
      return false;
    };
    var poll = function () {
      clearTimeout(timer);
      if (!s || s.done) return;
      timer = setTimeout(function () {
        get("&from=" + s.next).then(function (d) {
          var wasBottom = atBottom();
          s.next = d.next; s.len = d.len; s.done = d.done; s.status = d.status; s.exitCd = d.exitCd;
          if (d.text) {
            s.text += d.text;
            if (trim() || search.value) render();
            else { pre.appendChild(document.createTextNode(d.text)); showInfo(); }
          } else showInfo();
          if (follow.checked && wasBottom) pre.scrollTop = pre.scrollHeight;
          poll();
        }).catch(function () { poll(); });
      }, 1000);
    };
    var load = function () {
      clearTimeout(timer);
      get("").then(function (d) {
        s = { start: d.start, next: d.next, len: d.len, done: d.done, text: d.text, status: d.status, exitCd: d.exitCd };
        render();
        if (follow.checked) pre.scrollTop = pre.scrollHeight;
        box.dataset.loaded = "1";
        poll();
      });
    };
    pre.addEventListener("scroll", function () {
      if (!atBottom() && follow.checked) follow.checked = false;
    });
    follow.addEventListener("change", function () {
      if (follow.checked) pre.scrollTop = pre.scrollHeight;
    });
    search.addEventListener("input", function () { if (s) render(); });
    streamSel.addEventListener("change", load);
    earlier.addEventListener("click", function () {
      if (!s || s.start <= 0) return;
      get("&before=" + s.start).then(function (d) {
        var h = pre.scrollHeight;
        s.text = d.text + s.text;
        s.start = d.start;
        render();
        pre.scrollTop = pre.scrollHeight - h;
      });
    });
    load();
  });
})();

// console-ops: the definition editor puts the caret on the line an error names.
(function () {
  var ta = document.querySelector("textarea[data-error-line]");
  if (!ta) return;
  var line = parseInt(ta.dataset.errorLine, 10);
  var lines = ta.value.split("\n");
  var start = 0;
  for (var i = 0; i < line - 1 && i < lines.length; i++) start += lines[i].length + 1;
  var end = start + (lines[line - 1] || "").length;
  ta.setSelectionRange(start, end);
  ta.scrollTop = Math.max(0, (line - 3) * (ta.scrollHeight / Math.max(lines.length, 1)));
})();
