// Haechi console, the credential vault pages: Reveal and Copy of one value, each a POST with
// the CSRF token (one audited read on the server). A revealed value is removed from the DOM
// after the server's re-mask time, when the user hides it, or when the page is hidden; Copy
// puts the value on the clipboard and never into the DOM. Without this script the forms
// still work (Reveal answers the page with that one value).
"use strict";
(function () {
  var csrf = document.body.dataset.csrf || "";

  var read = function (form, via) {
    var body = "csrf=" + encodeURIComponent(csrf) + (via ? "&via=" + via : "");
    return fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
      body: body,
    }).then(function (r) {
      if (r.ok) return r.json();
      // The error page says why (in the user's language).
      return r.text().then(function (t) {
        var doc = new DOMParser().parseFromString(t, "text/html");
        var m = doc.querySelector("[role=alert]");
        throw new Error(m ? m.textContent.trim() : "HTTP " + r.status);
      });
    });
  };

  var boxes = [];
  document.querySelectorAll("[data-secret]").forEach(function (box) {
    var mask = box.querySelector("[data-mask]");
    var shown = box.querySelector("[data-shown]");
    var status = box.querySelector("[data-status]");
    var revealForm = box.querySelector("[data-reveal-form]");
    var copyForm = box.querySelector("[data-copy-form]");
    var hide = box.querySelector("[data-hide]");
    var secs = parseInt(box.dataset.remask || "20", 10);
    var timer = null;
    var tick = null;

    var remask = function () {
      clearTimeout(timer);
      clearInterval(tick);
      timer = tick = null;
      // The value leaves the DOM: no text node keeps it.
      while (shown.firstChild) shown.removeChild(shown.firstChild);
      shown.hidden = true;
      mask.hidden = false;
      hide.hidden = true;
      revealForm.hidden = false;
      box.removeAttribute("data-open");
      status.textContent = box.dataset.labelMasked;
    };

    var show = function (value) {
      clearTimeout(timer);
      clearInterval(tick);
      shown.textContent = value;
      shown.hidden = false;
      mask.hidden = true;
      hide.hidden = false;
      // While it is shown, another Reveal would only be another read.
      revealForm.hidden = true;
      box.setAttribute("data-open", "1");
      var left = secs;
      var say = function () {
        status.textContent = box.dataset.labelShown + " " + left + box.dataset.labelSecs;
      };
      say();
      tick = setInterval(function () {
        left -= 1;
        if (left > 0) say();
      }, 1000);
      timer = setTimeout(remask, secs * 1000);
    };

    revealForm.addEventListener("submit", function (ev) {
      ev.preventDefault();
      read(revealForm, "").then(function (d) {
        if (d.remaskSecs) secs = d.remaskSecs;
        show(d.value);
      }).catch(function (e) {
        status.textContent = box.dataset.labelFailed + " " + e.message;
      });
    });

    if (copyForm && navigator.clipboard && window.isSecureContext) {
      copyForm.hidden = false;
      copyForm.addEventListener("submit", function (ev) {
        ev.preventDefault();
        read(copyForm, "copy").then(function (d) {
          return navigator.clipboard.writeText(d.value).then(function () {
            status.textContent = box.dataset.labelCopied;
          });
        }).catch(function (e) {
          status.textContent = box.dataset.labelFailed + " " + e.message;
        });
      });
    }

    hide.addEventListener("click", function () {
      remask();
      var b = revealForm.querySelector("button");
      if (b) b.focus();
    });
    // Keyboard: Escape in a shown value masks it.
    shown.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape") hide.click();
    });

    // A value the server rendered (Reveal without the script, then the script loaded).
    if (shown.hasAttribute("data-revealed")) {
      show(shown.textContent);
    }
    boxes.push(remask);
  });

  // A stale edit came back: bring its explanation and the kept input into view.
  var conflict = document.getElementById("conflict");
  if (conflict) conflict.scrollIntoView({ block: "start" });

  // Leaving the page (another tab, minimised) masks every value at once.
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) boxes.forEach(function (f) { f(); });
  });
  window.addEventListener("pagehide", function () {
    boxes.forEach(function (f) { f(); });
  });
})();
