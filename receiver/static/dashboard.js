// Live numbers for the store page: polls /api/stats every few seconds and updates the page in
// place. Text only ever goes in through textContent, never as HTML.
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root || !window.fetch) return;
  var INTERVAL = 3000;
  var url = "/api/stats?shop=" + encodeURIComponent(root.dataset.shop);
  var timer = null;
  var busy = false;

  function lookup(data, path) {
    return path.split(".").reduce(function (value, key) {
      return value == null ? undefined : value[key];
    }, data);
  }

  function when(value) {
    return value ? value.slice(0, 16).replace("T", " ") : "—";
  }

  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function fill(id, items, columns, emptyText) {
    var body = document.getElementById(id);
    if (!body) return;
    var rows = items.map(function (item) {
      var tr = document.createElement("tr");
      columns(item).forEach(function (td) { tr.appendChild(td); });
      return tr;
    });
    if (!rows.length) {
      var tr = document.createElement("tr");
      tr.className = "empty";
      var td = cell(emptyText);
      td.colSpan = body.closest("table").querySelectorAll("thead th").length;
      tr.appendChild(td);
      rows.push(tr);
    }
    body.replaceChildren.apply(body, rows);
  }

  function count(map, key) { return (map && map[key]) || 0; }

  function chart(days) {
    var svg = document.getElementById("orders-chart");
    if (!svg) return;
    var height = Number(svg.dataset.height), top = Number(svg.dataset.top);
    var peak = Math.max.apply(null, days.map(function (d) { return d.count; }).concat([0]));
    var scale = peak || 1;
    svg.querySelectorAll("rect.bar").forEach(function (rect) {
      var day = days[Number(rect.dataset.index)];
      if (!day) return;
      var h = Math.round((day.count / scale) * height * 100) / 100;
      rect.setAttribute("height", String(h));
      rect.setAttribute("y", String(top + height - h));
      rect.querySelector("title").textContent = day.date + ": " + day.count;
    });
    if (days.length) {
      document.getElementById("chart-first").textContent = days[0].date;
      document.getElementById("chart-last").textContent = days[days.length - 1].date;
    }
    document.getElementById("chart-peak").textContent = String(peak);
  }

  function progress(job) {
    return (job.resources || []).map(function (name) {
      var p = (job.progress || {})[name] || {};
      return name + " " + (p.count || 0) + (p.done ? " ✓" : "");
    }).join("  ");
  }

  function badge(text, className) {
    var td = cell(""), span = document.createElement("span");
    span.className = "badge " + className;
    span.textContent = text;
    td.appendChild(span);
    return td;
  }

  function health(data) {
    if (!data) return;
    fill("health-rows", data.topics, function (t) {
      var state = t.silent ? badge("silent", "job-failed")
        : t.failed_7d ? badge("failures", "job-running") : badge("ok", "job-succeeded");
      return [cell(t.topic), cell(t.subscribed ? "yes" : "no"), cell(when(t.last_delivery_at)),
        cell(t.deliveries_7d, "num"), cell(t.failed_7d, "num"), cell(t.dedupe_hits_7d, "num"),
        state];
    }, "No subscriptions or deliveries yet.");
    document.getElementById("subscriptions-checked").textContent =
      when(data.subscriptions_checked_at);
    document.getElementById("silent-topics").textContent = data.silent_topics.join(", ");
    document.getElementById("silent-warning").hidden = !data.silent_topics.length;
  }

  function dash(value) { return value == null ? "—" : value; }

  function reconcile(run) {
    document.getElementById("reconcile-status").textContent = run ? run.status : "never";
    document.getElementById("reconcile-when").textContent =
      run ? run.trigger + ", finished " + when(run.finished_at) + " UTC" : "";
    fill("reconcile-rows", run ? run.resources : [], function (r) {
      return [cell(r.resource), cell(dash(r.shopify_count), "num"), cell(dash(r.db_count), "num"),
        cell(when(r.shopify_watermark)), cell(when(r.db_watermark)),
        cell(r.drifted_windows || 0, "num"), cell(r.repaired || 0, "num"),
        cell(r.tombstoned || 0, "num")];
    }, "Not reconciled yet.");
  }

  function update(stats) {
    root.querySelectorAll("[data-stat]").forEach(function (el) {
      var value = lookup(stats, el.dataset.stat);
      el.textContent = value == null ? (el.dataset.empty || "—") : String(value);
    });
    fill("revenue-rows", stats.revenue, function (r) {
      return [cell(r.currency || "—"), cell(r.all_time, "num"), cell(r.last_30_days, "num"),
        cell(r.last_7_days, "num")];
    }, "No orders yet.");
    chart(stats.orders_per_day);
    fill("webhook-rows", stats.webhooks_24h.by_topic, function (r) {
      return [cell(r.topic), cell(count(r.by_status, "processed"), "num"),
        cell(count(r.by_status, "ignored"), "num"), cell(count(r.by_status, "failed"), "num"),
        cell(r.total, "num")];
    }, "No webhooks in the last 24 hours.");
    fill("recent-orders", stats.recent_orders, function (o) {
      return [cell(o.name || "—"), cell((o.total_price || "—") + " " + (o.currency || ""), "num"),
        cell(o.cancelled ? "cancelled" : (o.financial_status || "—")), cell(when(o.happened_at))];
    }, "No orders yet.");
    fill("sync-rows", stats.sync_jobs, function (j) {
      var status = cell(""), badge = document.createElement("span");
      badge.className = "badge job-" + j.status;
      badge.textContent = j.status;
      status.appendChild(badge);
      return [cell(j.job_id), cell(j.mode), status, cell(progress(j)), cell(when(j.created_at)),
        cell(when(j.finished_at)), cell(j.error || "", "error-text")];
    }, "No sync jobs yet.");
    health(stats.delivery_health);
    reconcile(stats.last_reconcile);
    var failed = document.getElementById("failed-events");
    var ids = stats.failed_events.map(function (e) { return e.id; }).join(",");
    document.getElementById("failed-changed").hidden = !failed || failed.dataset.ids === ids;
    document.getElementById("live-status").textContent = "Updated " + when(stats.generated_at) +
      ":" + stats.generated_at.slice(17, 19) + " UTC";
  }

  function poll() {
    if (busy || document.hidden) return;
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403 || response.status === 404) {
          clearInterval(timer);
          document.getElementById("live-status").textContent =
            "Live updates stopped (signed out?). Reload the page.";
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (stats) { if (stats) update(stats); })
      .catch(function () {
        document.getElementById("live-status").textContent = "Connection lost; retrying…";
      })
      .finally(function () { busy = false; });
  }

  timer = setInterval(poll, INTERVAL);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) poll(); });
})();
