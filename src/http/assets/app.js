// Postern sandbox UI: live updates of the list over server-sent events
// (/api/events), a confirmation before deleting, the inbox switcher. The
// pages work without it. Message text is only ever set with textContent.
(function () {
  "use strict";
  var body = document.body;

  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.dataset.confirm)) e.preventDefault();
    });
  });
  var inbox = document.getElementById("inbox");
  if (inbox) inbox.addEventListener("change", function () { inbox.form.submit(); });

  // The message view's tabs are anchors (CSS shows the targeted one);
  // this only marks which tab is showing.
  var tabs = document.querySelector("nav.tabs");
  function markTab() {
    var want = "#" + (location.hash.slice(1) || tabs.dataset.first);
    tabs.querySelectorAll("a").forEach(function (a) {
      a.classList.toggle("active", a.getAttribute("href") === want);
    });
  }
  if (tabs) { markTab(); window.addEventListener("hashchange", markTab); }

  // Same as size() and when() in ui.rs.
  function size(n) {
    if (n < 1024) return n + " B";
    var units = ["KiB", "MiB", "GiB"], v = n / 1024, u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return v.toFixed(1) + " " + units[u];
  }
  function when(t) {
    var d = new Date(t);
    return isNaN(d) ? t : d.toISOString().slice(0, 19).replace("T", " ");
  }
  function who(a) { return a ? (a.Name || a.Address) : ""; }
  function full(a) { return a.Name ? a.Name + " <" + a.Address + ">" : a.Address; }
  function cell(cls, text, title) {
    var td = document.createElement("td");
    td.className = cls;
    td.textContent = text;
    if (title) td.title = title;
    return td;
  }

  function row(m) {
    var tr = document.createElement("tr");
    tr.className = "message fresh-row" + (m.Read ? "" : " unread");
    tr.dataset.id = m.ID;
    tr.dataset.inbox = m.Inbox;
    tr.dataset.live = "1";
    var to = (m.To || []).slice(0, 2).map(who);
    if ((m.To || []).length > 2) to.push("+" + (m.To.length - 2));
    tr.appendChild(cell("from", who(m.From), m.From ? full(m.From) : ""));
    tr.appendChild(cell("to", to.join(", "), (m.To || []).map(full).join(", ")));
    var subj = document.createElement("td");
    subj.className = "subject";
    var a = document.createElement("a");
    a.href = "/view/" + encodeURIComponent(m.ID);
    if (m.Subject) a.textContent = m.Subject;
    else { var em = document.createElement("em"); em.textContent = "(no subject)"; a.appendChild(em); }
    subj.appendChild(a);
    var snip = document.createElement("span");
    snip.className = "snippet";
    snip.textContent = m.Snippet || "";
    subj.appendChild(snip);
    if (m.Attachments > 0) {
      var clip = document.createElement("span");
      clip.className = "clip";
      clip.textContent = m.Attachments + " \u{1F4CE}";
      subj.appendChild(clip);
    }
    tr.appendChild(subj);
    tr.appendChild(cell("size", size(m.Size)));
    var t = document.createElement("td");
    t.className = "time";
    var time = document.createElement("time");
    time.dateTime = m.Created;
    time.textContent = when(m.Created);
    t.appendChild(time);
    tr.appendChild(t);
    return tr;
  }

  var count = document.getElementById("count");
  function counts(dTotal, dUnread) {
    if (!count) return;
    var total = Math.max(0, (+count.dataset.total) + dTotal);
    var unread = Math.max(0, (+count.dataset.unread) + dUnread);
    count.dataset.total = total;
    count.dataset.unread = unread;
    count.textContent = total + (total === 1 ? " message" : " messages") +
      (body.dataset.query ? " found" : "") + ", " + unread + " unread";
    document.title = (unread ? "(" + unread + ") " : "") + "Postern sandbox";
    var all = document.getElementById("delete-all");
    if (all) all.disabled = total === 0;
  }

  function onNew(m) {
    if (body.dataset.page !== "list") return;
    if (body.dataset.inbox && body.dataset.inbox !== m.Inbox) return;
    // A search or a later page cannot know where the message belongs.
    if (body.dataset.query || body.dataset.start !== "0") {
      document.getElementById("fresh").hidden = false;
      return;
    }
    var tbody = document.querySelector("#messages tbody");
    if (tbody.querySelector('tr[data-id="' + CSS.escape(m.ID) + '"]')) return;
    tbody.insertBefore(row(m), tbody.firstChild);
    var limit = +body.dataset.limit || 50;
    while (tbody.rows.length > limit) tbody.deleteRow(tbody.rows.length - 1);
    document.getElementById("empty").hidden = true;
    counts(1, m.Read ? 0 : 1);
  }

  function onDelete(ids) {
    if (body.dataset.page === "view" && ids.indexOf(body.dataset.id) >= 0) {
      document.getElementById("gone").hidden = false;
      return;
    }
    if (body.dataset.page !== "list") return;
    ids.forEach(function (id) {
      var tr = document.querySelector('#messages tr[data-id="' + CSS.escape(id) + '"]');
      if (tr) {
        var unread = tr.classList.contains("unread") ? 1 : 0;
        tr.remove();
        counts(-1, -unread);
      }
    });
    if (!document.querySelector("#messages tbody tr")) document.getElementById("empty").hidden = false;
  }

  // One connection per visible page: browsers allow six per host over
  // HTTP/1.1, so hidden tabs and pages being left let theirs go, and a list
  // that comes back reloads to catch up with what it missed.
  if (!window.EventSource) return;
  var es = null;
  function connect() {
    es = new EventSource("/api/events");
    es.addEventListener("open", function () { body.dataset.live = "on"; });
    es.addEventListener("error", function () { body.dataset.live = "off"; });
    es.addEventListener("new", function (e) { onNew(JSON.parse(e.data)); });
    es.addEventListener("delete", function (e) { onDelete(JSON.parse(e.data)); });
    es.addEventListener("reload", function () { if (body.dataset.page === "list") location.reload(); });
  }
  function disconnect() {
    if (es) es.close();
    es = null;
    body.dataset.live = "off";
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) disconnect();
    else if (!es) {
      if (body.dataset.page === "list") location.reload();
      else connect();
    }
  });
  window.addEventListener("pagehide", disconnect);
  window.addEventListener("pageshow", function () { if (!es && !document.hidden) connect(); });
  if (!document.hidden) connect();
})();
