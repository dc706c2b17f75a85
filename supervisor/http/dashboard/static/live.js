// botvisor dashboard: live figures. Plain JavaScript, no build step, no inline script
// (the CSP forbids it). Pages are complete without it; this refreshes figures every
// 5 s while the tab is visible and draws the last-hour charts.
"use strict";
(function () {
  var PERIOD_MS = 5000; // dashboard.poll_interval_s, from <body data-poll-ms>

  function ago(wall) {
    if (!wall) return "never";
    var s = Math.max(0, Math.floor(Date.now() / 1000 - wall));
    if (s < 120) return s + " s ago";
    if (s < 7200) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  function draw(canvas, a, b) {
    var ctx = canvas.getContext && canvas.getContext("2d");
    if (!ctx || !a) return;
    var w = canvas.width, h = canvas.height, max = 1, i;
    for (i = 0; i < a.length; i++) max = Math.max(max, a[i], b ? b[i] : 0);
    ctx.clearRect(0, 0, w, h);
    function line(series, dash, color) {
      ctx.beginPath();
      ctx.setLineDash(dash);
      ctx.strokeStyle = color;
      ctx.lineWidth = canvas.hasAttribute("data-big") ? 2 : 1.5;
      for (var j = 0; j < series.length; j++) {
        var x = (j / (series.length - 1)) * (w - 2) + 1;
        var y = h - 2 - (series[j] / max) * (h - 4);
        if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      }
      ctx.stroke();
    }
    line(a, [], "#0b5fff");
    if (b) line(b, [4, 3], "#067647");
  }

  function setFields(root, data) {
    var cells = root.querySelectorAll("[data-field]");
    for (var i = 0; i < cells.length; i++) {
      var el = cells[i], key = el.getAttribute("data-field");
      if (!(key in data)) continue;
      var v = data[key];
      if (key === "last_update_at") {
        el.setAttribute("data-time", v || "");
        el.textContent = ago(v);
      } else if (key === "state_text") {
        el.textContent = v;
        el.className = "state state-" + String(v).replace(/ /g, "-");
      } else {
        el.textContent = v === null || v === undefined ? "" : v;
      }
    }
  }

  function getJSON(url, done) {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", url);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.timeout = PERIOD_MS;
    xhr.onload = function () {
      if (xhr.status === 200) done(JSON.parse(xhr.responseText));
      else if (xhr.status === 401) window.location.reload(); // session over: to the login
    };
    xhr.send();
  }

  function every(fn) {
    fn();
    setInterval(function () { if (!document.hidden) fn(); }, PERIOD_MS);
  }

  function liveList(table) {
    var rows = table.querySelectorAll("tr[data-bot-id]"), ids = [], byId = {};
    for (var i = 0; i < rows.length; i++) {
      var id = rows[i].getAttribute("data-bot-id");
      ids.push(id);
      byId[id] = rows[i];
    }
    if (!ids.length) return;
    every(function () {
      getJSON("/ui/live/bots?ids=" + ids.join(","), function (data) {
        data.bots.forEach(function (bot) {
          var row = byId[String(bot.id)];
          if (!row) return;
          setFields(row, bot);
          var c = row.querySelector("canvas[data-chart]");
          if (c) draw(c, bot.in_series, bot.out_series);
        });
      });
    });
  }

  function liveBot(section) {
    var id = section.getAttribute("data-live-bot");
    every(function () {
      getJSON("/ui/live/bots/" + id, function (bot) {
        setFields(section, bot);
        var c = section.querySelector("canvas[data-chart]");
        if (c) draw(c, bot.in_series, bot.out_series);
      });
    });
  }

  function liveFleet(section) {
    var table = document.querySelector("[data-live-workers]");
    every(function () {
      getJSON("/ui/live/fleet", function (data) {
        setFields(section, data.fleet);
        var c = section.querySelector("canvas[data-chart]");
        if (c) draw(c, data.fleet.in_series, data.fleet.out_series);
        if (!table) return;
        data.workers.forEach(function (w) {
          var row = table.querySelector('tr[data-worker="' + w.index + '"]');
          if (!row) return;
          setFields(row, {
            pid: w.pid || "—", state: w.state, bots: w.bots_running + " / " + w.bots_desired,
            loop_lag_ms: (w.loop_lag_ms === null ? "—" : w.loop_lag_ms) + " ms",
            restarts: w.restarts, rss_mib: (w.rss_mib === null ? "—" : w.rss_mib) + " MiB",
            received_per_s: w.received_per_s, sent_per_s: w.sent_per_s
          });
        });
      });
    });
  }

  // a broadcast's progress: polled until it is done or cancelled, then the cancel form goes
  function liveBroadcast(section) {
    var url = section.getAttribute("data-live-broadcast"), timer = null;
    var bar = section.querySelector("progress[data-progress]");
    var cancel = section.querySelector("form[data-while-active]");
    function tick() {
      if (document.hidden) return;
      getJSON(url, function (b) {
        setFields(section, b);
        var state = section.querySelector("[data-field=state]");
        if (state) state.className = "state state-" + b.state;
        if (bar) {
          bar.max = b.total || 1;
          bar.value = b.total ? b.total - b.remaining : 1;
        }
        if (!b.active) {
          if (cancel) cancel.hidden = true;
          if (timer !== null) clearInterval(timer);
          timer = null;
        }
      });
    }
    tick();
    timer = setInterval(tick, PERIOD_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var poll = parseInt(document.body.getAttribute("data-poll-ms"), 10);
    if (poll >= 200) PERIOD_MS = poll;
    var list = document.querySelector("[data-live-bots]");
    if (list) liveList(list);
    var bot = document.querySelector("[data-live-bot]");
    if (bot) liveBot(bot);
    var fleet = document.querySelector("[data-live-fleet]");
    if (fleet) liveFleet(fleet);
    var broadcast = document.querySelector("[data-live-broadcast]");
    if (broadcast) liveBroadcast(broadcast);
  });
})();
