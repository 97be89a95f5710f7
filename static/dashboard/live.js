/* Live dashboard: connection status, half-open countdowns and uPlot charts.
 *
 * htmx's websocket extension does the swapping (every message is out-of-band HTML);
 * this file only reacts to it. Metric samples arrive as a hidden #live-sample element
 * (one a second) and #live-history (the last minutes, on page load and reconnect). */
(function () {
  'use strict';

  var KEEP = 300;
  var RETRYABLE = [1006, 1011, 1012, 1013];

  // After a restart, come back quickly: ~0.5 s, 1 s, 2 s ... at most 10 s, with jitter.
  function reconnectDelay(retry) {
    var base = Math.min(500 * Math.pow(2, retry), 10000);
    return base / 2 + Math.random() * base / 2;
  }
  if (window.htmx) {
    htmx.config.wsReconnectDelay = reconnectDelay;
  }

  // -- connection status -----------------------------------------------------------
  var everOpen = false;
  var retries = 0;

  function setStatus(state, text) {
    var el = document.getElementById('live-status');
    document.body.classList.toggle('live-disconnected', state === 'disconnected');
    if (!el) return;
    el.dataset.status = state;
    el.textContent = text;
  }

  document.addEventListener('htmx:wsConnecting', function () {
    if (!everOpen) setStatus('connecting', 'connecting…');
  });
  document.addEventListener('htmx:wsOpen', function () {
    everOpen = true;
    retries = 0;
    setStatus('live', 'live');
  });
  document.addEventListener('htmx:wsClose', function (evt) {
    var socketElt = evt.target;
    if (!document.body.contains(socketElt)) return;
    var code = evt.detail && evt.detail.event ? evt.detail.event.code : 1006;
    // 4401/4403: the server ended this session (logout, deactivation, lost permission).
    // Retrying cannot help: say so and stop.
    if (code >= 4400 && code < 4500) {
      setStatus('logged-out', 'logged out — reload the page to log in');
      document.body.classList.add('live-disconnected');
      return;  // the extension only retries 1006/1011/1012/1013 itself

    }
    setStatus('disconnected', 'disconnected — reconnecting…');
    checkSignedIn();
    // The extension retries abnormal closures itself; a server going away cleanly
    // (1000/1001 on shutdown) would otherwise leave the page disconnected for good.
    if (RETRYABLE.indexOf(code) < 0 && evt.detail && evt.detail.socketWrapper) {
      var wrapper = evt.detail.socketWrapper;
      setTimeout(function () { wrapper.reconnect(); }, reconnectDelay(retries++));
    }
  });

  // A refused socket looks like any other drop; a login redirect on the page itself
  // tells that the session ended, and retrying alone will not fix it.
  function checkSignedIn() {
    fetch(location.href, { method: 'HEAD', redirect: 'manual', credentials: 'same-origin' })
      .then(function (response) {
        if (response.type === 'opaqueredirect' || response.status === 403) {
          setStatus('disconnected', 'signed out — reload the page to log in');
        }
      })
      .catch(function () { /* the server is down: keep retrying */ });
  }

  // -- alert banners: the dismiss button (no inline handlers: CSP allows no inline script)
  document.addEventListener('click', function (evt) {
    var button = evt.target.closest && evt.target.closest('[data-dismiss-banner]');
    if (button && button.parentElement) button.parentElement.remove();
  });

  // -- countdowns to half-open -----------------------------------------------------
  var countdownStart = new WeakMap();

  function tickCountdowns() {
    var now = performance.now();
    document.querySelectorAll('[data-countdown]').forEach(function (el) {
      var start = countdownStart.get(el);
      if (start === undefined) {
        start = now;
        countdownStart.set(el, now);
      }
      var left = parseFloat(el.dataset.countdown) - (now - start) / 1000;
      el.textContent = left > 0 ? left.toFixed(1) + ' s' : 'now (on the next call)';
    });
  }
  setInterval(tickCountdowns, 250);

  // -- samples ---------------------------------------------------------------------
  var samples = [];
  var lastT = null;
  var historySeen = null;

  function readSamples() {
    var changed = false;
    var history = document.getElementById('live-history');
    if (history && history.dataset.samples !== historySeen) {
      historySeen = history.dataset.samples;
      try {
        samples = JSON.parse(historySeen || '[]').slice(-KEEP);
      } catch (e) {
        samples = [];
      }
      lastT = samples.length ? samples[samples.length - 1].t : null;
      changed = true;
    }
    var el = document.getElementById('live-sample');
    if (el && el.dataset.sample) {
      var t = parseFloat(el.dataset.t);
      if (lastT === null || t > lastT) {
        samples.push(JSON.parse(el.dataset.sample));
        if (samples.length > KEEP) samples.shift();
        lastT = t;
        changed = true;
      }
    }
    if (changed) draw();
  }

  function rates(values, times) {
    var out = [null];
    for (var i = 1; i < values.length; i++) {
      var dt = times[i] - times[i - 1];
      var dv = values[i] - values[i - 1];
      // A counter that went down was reset: no rate for that step.
      out.push(values[i] == null || values[i - 1] == null || dt <= 0 || dv < 0 ? null : dv / dt);
    }
    return out;
  }

  function pick(path) {
    return samples.map(function (s) {
      var v = s;
      for (var i = 0; i < path.length && v != null; i++) v = v[path[i]];
      return v == null ? null : v;
    });
  }

  // -- charts ----------------------------------------------------------------------
  var charts = {};
  var COLOURS = ['#2563eb', '#d64545', '#e6a100', '#1f9d55', '#7d2ae8'];

  function chart(figure, labels, data, small) {
    var id = figure.dataset.chartId;
    var existing = charts[id];
    figure.dataset.points = String(data[0].length);
    if (data[0].length) figure.dataset.lastT = String(data[0][data[0].length - 1]);
    if (existing) {
      existing.setData(data);
      return;
    }
    if (!window.uPlot) return;
    var width = Math.max(figure.clientWidth - 8, 160);
    var series = [{}].concat(labels.map(function (label, i) {
      return { label: label, stroke: COLOURS[i % COLOURS.length], width: small ? 1.5 : 2, spanGaps: true };
    }));
    var opts = {
      width: width,
      height: small ? 60 : 180,
      series: series,
      scales: { x: { time: true } },
      legend: { show: !small },
      cursor: { show: !small },
      axes: small ? [{ show: false }, { show: false }] : [{}, { size: 60 }]
    };
    charts[id] = new uPlot(opts, data, figure);
  }

  function drawSparklines(container) {
    var times = pick(['t']);
    container.querySelectorAll('figure[data-key]').forEach(function (fig) {
      fig.dataset.chartId = 'spark:' + fig.dataset.key;
      chart(fig, [fig.querySelector('figcaption').textContent], [times, rates(pick(['key', fig.dataset.key]), times)], true);
    });
  }

  function ensureFigure(container, id, title) {
    var fig = container.querySelector('figure[data-chart-id="' + CSS.escape(id) + '"]');
    if (!fig) {
      fig = document.createElement('figure');
      fig.className = 'chart';
      fig.dataset.chartId = id;
      var cap = document.createElement('figcaption');
      cap.textContent = title;
      fig.appendChild(cap);
      container.appendChild(fig);
    }
    return fig;
  }

  function drawCharts(container) {
    var times = pick(['t']);
    var last = samples[samples.length - 1] || { counters: {}, gauges: {}, histograms: {} };
    var any = false;
    Object.keys(last.counters || {}).sort().forEach(function (key) {
      any = true;
      var fig = ensureFigure(container, 'counter:' + key, key + ' (per second)');
      chart(fig, ['per second'], [times, rates(pick(['counters', key]), times)], false);
    });
    Object.keys(last.gauges || {}).sort().forEach(function (key) {
      any = true;
      var fig = ensureFigure(container, 'gauge:' + key, key);
      chart(fig, ['value'], [times, pick(['gauges', key])], false);
    });
    Object.keys(last.histograms || {}).sort().forEach(function (key) {
      any = true;
      var fig = ensureFigure(container, 'histogram:' + key, key + ' (p50 / p95 / p99)');
      chart(fig, ['p50', 'p95', 'p99'], [times,
        pick(['histograms', key, 'p50']), pick(['histograms', key, 'p95']), pick(['histograms', key, 'p99'])], false);
    });
    container.classList.toggle('has-charts', any);
  }

  function draw() {
    var sparks = document.querySelector('[data-sparklines]');
    if (sparks) drawSparklines(sparks);
    var container = document.querySelector('[data-charts]');
    if (container) drawCharts(container);
  }

  document.addEventListener('htmx:wsAfterMessage', readSamples);
  readSamples();
})();
