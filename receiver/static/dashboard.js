// The store page: charts (uPlot, vendored beside this file) and live numbers. Polls
// /api/stats for the page's date range every few seconds and updates the page in place.
// Text only ever goes in through textContent, never as HTML; nothing here needs inline
// script or eval, so the page runs under `script-src 'self'`.
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root) return;
  var INTERVAL = 3000;
  var CHART_HEIGHT = 240;
  var COLORS = { revenue: "#0b6e4f", orders: "#c2610c" };
  var range = root.dataset.range || "30d";
  var url = "/api/stats?shop=" + encodeURIComponent(root.dataset.shop) +
    "&range=" + encodeURIComponent(range);
  var timer = null;
  var busy = false;
  var charts = [];
  var chartKey = null;

  // -- formatting -----------------------------------------------------------------------

  var formatters = {};
  function moneyFormat(currency, compact) {
    var key = (currency || "") + (compact ? ":c" : "");
    if (!formatters[key]) {
      var options = compact ? { notation: "compact", maximumFractionDigits: 1 }
        : { minimumFractionDigits: 2, maximumFractionDigits: 4 };
      if (currency) {
        options.style = "currency";
        options.currency = currency;
      }
      try {
        formatters[key] = new Intl.NumberFormat(undefined, options);
      } catch (e) {  // a currency code Intl does not know: plain number and the code
        delete options.style;
        delete options.currency;
        var plain = new Intl.NumberFormat(undefined, options);
        formatters[key] = { format: function (n) { return plain.format(n) + " " + currency; } };
      }
    }
    return formatters[key];
  }
  function money(amount, currency, compact) {
    if (amount == null || amount === "") return "—";
    return moneyFormat(currency, compact).format(Number(amount));
  }
  var integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  function number(value) { return value == null ? "—" : integer.format(value); }

  function when(value) {
    return value ? value.slice(0, 16).replace("T", " ") : "—";
  }
  function duration(seconds) {
    if (seconds == null) return "";
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function formatMoneyCells(scope) {
    scope.querySelectorAll("[data-money]").forEach(function (el) {
      el.textContent = money(el.dataset.money, el.dataset.currency || null);
    });
  }

  // -- tables ---------------------------------------------------------------------------

  function lookup(data, path) {
    return path.split(".").reduce(function (value, key) {
      return value == null ? undefined : value[key];
    }, data);
  }

  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (className) td.className = className;
    return td;
  }
  function moneyCell(amount, currency) {
    var td = cell(money(amount, currency), "num");
    td.dataset.money = amount == null ? "" : amount;
    td.dataset.currency = currency || "";
    return td;
  }
  function badge(text, className, title) {
    var td = cell(""), span = document.createElement("span");
    span.className = "badge " + className;
    span.textContent = text;
    if (title) span.title = title;
    td.appendChild(span);
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

  // -- charts ---------------------------------------------------------------------------

  function bucketSeconds(date) {
    var parts = date.split("-").map(Number);
    return Date.UTC(parts[0], parts[1] - 1, parts[2]) / 1000;
  }

  function emptyText(stats) {
    var sales = stats.sales, window = stats.range;
    if (sales.orders) return "";
    if (!sales.newest_order_at) {
      return "No orders yet: they appear as webhooks arrive or after a backfill.";
    }
    return "No orders in this range (" + window.label.toLowerCase() + "). The store's newest " +
      "order is from " + sales.newest_order_at.slice(0, 10) + ": ";
  }

  function showEmpty(stats) {
    var box = document.getElementById("chart-empty");
    if (!box) return;
    var text = emptyText(stats);
    box.hidden = !text;
    if (!text) return;
    var parts = [document.createTextNode(text)];
    if (stats.sales.newest_order_at) {
      var link = document.createElement("a");
      link.href = "?range=all";
      link.textContent = "show all time";
      parts.push(link, document.createTextNode("."));
    }
    box.replaceChildren.apply(box, parts);
  }

  function chartFor(container, stats, series) {
    var monthly = stats.range.bucket === "month";
    var xs = stats.sales.buckets.map(bucketSeconds);
    var currency = series.currency;
    var label = "Revenue" + (currency ? " (" + currency + ")" : "");
    var figure = document.createElement("figure");
    figure.className = "chart-figure";
    figure.dataset.currency = currency || "";
    var caption = document.createElement("figcaption");
    caption.textContent = (currency || "No currency") + ": orders and revenue per " +
      stats.range.bucket;
    figure.appendChild(caption);
    container.appendChild(figure);
    var options = {
      width: Math.max(280, container.clientWidth),
      height: CHART_HEIGHT,
      // Buckets are UTC days or months: show them as such whatever the viewer's zone.
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      scales: {
        x: { time: true },
        money: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } },
        orders: { range: function (u, min, max) { return [0, max > 0 ? Math.ceil(max * 1.1) : 1]; } },
      },
      series: [
        {
          label: monthly ? "Month" : "Day",
          value: function (u, ts) {
            if (ts == null) return "—";
            var iso = new Date(ts * 1000).toISOString();
            return monthly ? iso.slice(0, 7) : iso.slice(0, 10);
          },
        },
        {
          label: label,
          scale: "money",
          stroke: COLORS.revenue,
          fill: "rgba(11, 110, 79, 0.25)",
          width: 1,
          paths: uPlot.paths.bars({ size: [0.7, 40] }),
          points: { show: false },
          value: function (u, v) { return v == null ? "—" : money(v, currency); },
        },
        {
          label: "Orders",
          scale: "orders",
          stroke: COLORS.orders,
          width: 2,
          points: { show: xs.length <= 40 },
          value: function (u, v) { return number(v); },
        },
      ],
      axes: [
        { stroke: "#5f6b73", grid: { stroke: "#eef1f4" } },
        {
          scale: "money",
          label: label,
          stroke: "#5f6b73",
          size: 70,
          grid: { stroke: "#eef1f4" },
          values: function (u, splits) {
            return splits.map(function (v) { return money(v, currency, true); });
          },
        },
        {
          scale: "orders",
          side: 1,
          label: "Orders",
          stroke: "#5f6b73",
          size: 56,
          grid: { show: false },
          values: function (u, splits) {
            return splits.map(function (v) { return Number.isInteger(v) ? number(v) : ""; });
          },
        },
      ],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
    var data = [xs, series.revenue.map(Number), series.orders];
    return new uPlot(options, data, figure);
  }

  function drawCharts(stats) {
    var container = document.getElementById("charts");
    if (!container || !window.uPlot) return;
    showEmpty(stats);
    var key = JSON.stringify([stats.range, stats.sales.buckets, stats.sales.series]);
    if (key === chartKey) return;
    chartKey = key;
    charts.forEach(function (chart) { chart.destroy(); });
    container.replaceChildren();
    charts = stats.sales.orders ? stats.sales.series.map(function (series) {
      return chartFor(container, stats, series);
    }) : [];
  }

  window.addEventListener("resize", function () {
    var container = document.getElementById("charts");
    if (!container) return;
    charts.forEach(function (chart) {
      chart.setSize({ width: Math.max(280, container.clientWidth), height: CHART_HEIGHT });
    });
  });

  // -- sync jobs ------------------------------------------------------------------------

  function waitText(throttled) {
    if (!throttled) return "";
    if (typeof throttled === "object") {
      if (throttled.points != null && throttled.rate != null) {
        return "Waiting for Shopify's rate limit: " + throttled.points + " points at " +
          throttled.rate + "/s";
      }
      return "Waiting for Shopify's rate limit";
    }
    if (typeof throttled === "string" && !isNaN(Date.parse(throttled))) {
      return "Waiting for Shopify's rate limit until " + throttled.slice(11, 19) + " UTC";
    }
    return "Waiting for Shopify's rate limit";
  }

  function progressCell(job) {
    var s = job.summary || {};
    var td = cell("");
    var line = document.createElement("div");
    line.className = "job-progress";
    if (s.percent != null) {
      var bar = document.createElement("progress");
      bar.max = 100;
      bar.value = s.percent;
      bar.textContent = s.percent + "%";
      line.appendChild(bar);
    }
    var figures = document.createElement("span");
    figures.className = "job-figures";
    var text = (s.percent != null ? s.percent + "% · " : "") + number(s.count) +
      (s.total != null ? " / " + number(s.total) : "") + " records";
    if (s.rate_per_s) text += " · " + s.rate_per_s + "/s";
    if (s.eta_s != null) text += " · ETA " + duration(s.eta_s);
    figures.textContent = text;
    line.appendChild(figures);
    if (job.status === "running" && s.throttled) {
      var wait = document.createElement("span");
      wait.className = "job-wait";
      wait.textContent = waitText(s.throttled);
      line.appendChild(wait);
    }
    td.appendChild(line);
    var chips = document.createElement("div");
    chips.className = "chips";
    (job.resources || []).forEach(function (name) {
      var p = (job.progress || {})[name] || {};
      var chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = name + " " + number(p.count || 0) +
        (p.total != null ? "/" + number(p.total) : "") + (p.done ? " ✓" : "");
      chips.appendChild(chip);
    });
    td.appendChild(chips);
    return td;
  }

  // -- health and reconcile -------------------------------------------------------------

  function health(data) {
    if (!data) return;
    var checked = !!data.subscriptions_checked_at;
    fill("health-rows", data.topics, function (t) {
      var state = t.silent ? badge("silent", "job-failed")
        : t.failed_7d ? badge("failures", "job-running")
        : !t.subscribed ? badge(checked ? "unsubscribed" : "unchecked", "job-queued",
          "Deliveries arrive, but Shopify's subscriptions were " +
          (checked ? "not found for this topic" : "never checked"))
        : badge("ok", "job-succeeded");
      return [cell(t.topic), cell(t.subscribed ? "yes" : checked ? "no" : "not checked"),
        cell(when(t.last_delivery_at)), cell(t.deliveries_7d, "num"), cell(t.failed_7d, "num"),
        cell(t.dedupe_hits_7d, "num"), state];
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
      return [cell(r.resource), cell(r.compared, "compared"), cell(dash(r.shopify_count), "num"),
        cell(dash(r.db_count), "num"), cell(when(r.shopify_watermark)),
        cell(when(r.db_watermark)), cell(r.drifted_windows || 0, "num"),
        cell(r.repaired || 0, "num"), cell(r.tombstoned || 0, "num")];
    }, "Not reconciled yet.");
  }

  // -- the whole page -------------------------------------------------------------------

  function update(stats) {
    root.querySelectorAll("[data-stat]").forEach(function (el) {
      var value = lookup(stats, el.dataset.stat);
      el.textContent = value == null ? (el.dataset.empty || "—")
        : typeof value === "number" ? number(value) : String(value);
    });
    document.getElementById("range-orders").textContent = number(stats.sales.orders);
    fill("sales-rows", stats.sales.by_currency, function (r) {
      return [cell(r.currency || "—"), cell(number(r.orders), "num"),
        moneyCell(r.gross, r.currency), moneyCell(r.refunds, r.currency),
        moneyCell(r.net, r.currency)];
    }, "No sales in this range.");
    drawCharts(stats);
    fill("top-products", stats.top_products, function (r) {
      return [cell(r.title || "—", "wrap"), cell(number(r.units), "num"),
        moneyCell(r.revenue, r.currency)];
    }, "No line items in this range.");
    fill("top-variants", stats.top_variants, function (r) {
      return [cell((r.title || "—") + (r.variant_title ? " · " + r.variant_title : ""), "wrap"),
        cell(number(r.units), "num"), moneyCell(r.revenue, r.currency)];
    }, "No line items in this range.");
    fill("low-stock", stats.low_stock, function (r) {
      return [cell(r.product_title || "—", "wrap"), cell(r.variant_title || "—"),
        cell(r.sku || "—"), cell(r.available, r.available <= 0 ? "num bad" : "num"),
        cell(r.locations, "num")];
    }, "No variant is running low (or no inventory levels are stored yet).");
    fill("webhook-rows", stats.webhooks_24h.by_topic, function (r) {
      return [cell(r.topic), cell(count(r.by_status, "processed"), "num"),
        cell(count(r.by_status, "ignored"), "num"), cell(count(r.by_status, "failed"), "num"),
        cell(r.total, "num")];
    }, "No webhooks in the last 24 hours.");
    fill("recent-orders", stats.recent_orders, function (o) {
      return [cell(o.name || "—"), moneyCell(o.total_price, o.currency),
        cell(o.cancelled ? "cancelled" : (o.financial_status || "—")), cell(when(o.happened_at))];
    }, "No orders yet.");
    fill("sync-rows", stats.sync_jobs, function (j) {
      return [cell(j.job_id), cell(j.mode), badge(j.status, "job-" + j.status), progressCell(j),
        cell(when(j.created_at)), cell(when(j.finished_at)), cell(j.error || "", "error-text")];
    }, "No sync jobs yet.");
    health(stats.delivery_health);
    reconcile(stats.last_reconcile);
    var failed = document.getElementById("failed-events");
    var ids = stats.failed_events.map(function (e) { return e.id; }).join(",");
    document.getElementById("failed-changed").hidden = !failed || failed.dataset.ids === ids;
    document.getElementById("live-status").textContent = "Updated " + when(stats.generated_at) +
      ":" + stats.generated_at.slice(17, 19) + " UTC";
  }

  // The next poll waits at least INTERVAL, and four times as long as the last answer took:
  // a heavy range on a big store is refreshed less often rather than keeping the database busy.
  var delay = INTERVAL;
  var stopped = false;

  function schedule() {
    if (!stopped) timer = setTimeout(poll, delay);
  }

  function poll() {
    clearTimeout(timer);
    if (busy || stopped) return;
    if (document.hidden) { schedule(); return; }
    busy = true;
    var started = Date.now();
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403 || response.status === 404) {
          stopped = true;
          document.getElementById("live-status").textContent =
            "Live updates stopped (signed out?). Reload the page.";
          return null;
        }
        return response.ok ? response.json() : null;
      })
      .then(function (stats) {
        delay = Math.max(INTERVAL, 4 * (Date.now() - started));
        if (stats) update(stats);
      })
      .catch(function () {
        document.getElementById("live-status").textContent = "Connection lost; retrying…";
      })
      .finally(function () { busy = false; schedule(); });
  }

  // The numbers the page was rendered with: charts and localised money right away, without
  // waiting for the first poll.
  var initial = document.getElementById("charts");
  formatMoneyCells(root);
  if (initial && initial.dataset.stats) drawCharts(JSON.parse(initial.dataset.stats));
  if (!window.fetch) return;
  schedule();
  document.addEventListener("visibilitychange", function () { if (!document.hidden) poll(); });
})();
