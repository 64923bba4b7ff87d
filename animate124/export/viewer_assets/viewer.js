// animate124 web viewer: draws one tile of the atlas (azimuth × time) on a canvas, 1:1. No dependencies.
// Data: window.ANIMATE124_VIEWER from viewer_data.js (see animate124/export/viewer.py).
(function () {
  "use strict";
  var D = window.ANIMATE124_VIEWER;
  var canvas = document.getElementById("view");
  var ctx = canvas.getContext("2d");
  var slider = document.getElementById("time");
  var playBtn = document.getElementById("play");
  var label = document.getElementById("label");
  var S = D.size, V = D.views, T = D.times;
  var state = { az: 0, t: 0 };
  var timer = null;
  var images = [];
  var loaded = 0;

  function mod(a, n) { return ((a % n) + n) % n; }

  function nearestTime(tau) {
    var best = 0;
    for (var j = 1; j < T; j++) {
      if (Math.abs(D.taus[j] - tau) < Math.abs(D.taus[best] - tau)) { best = j; }
    }
    return best;
  }

  function nearestAzimuth(deg) {
    var step = 360 / V;
    return mod(Math.round((deg - D.azimuths[0]) / step), V);
  }

  function draw() {
    var im = images[state.t];
    if (!im || !im.complete) { return; }
    var col = state.az % D.cols, row = Math.floor(state.az / D.cols);
    ctx.drawImage(im, col * S, row * S, S, S, 0, 0, S, S);
    slider.value = String(state.t);
    canvas.dataset.az = String(state.az);
    canvas.dataset.t = String(state.t);
    label.textContent = "az " + mod(D.azimuths[state.az], 360).toFixed(0) + "°  τ " + D.taus[state.t].toFixed(2);
  }

  function setView(az, t) { state.az = mod(az, V); state.t = mod(t, T); draw(); }

  function play(on) {
    if (on && !timer && T > 1) {
      timer = window.setInterval(function () { setView(state.az, state.t + 1); }, 1000 / D.fps);
    } else if (!on && timer) {
      window.clearInterval(timer);
      timer = null;
    }
    playBtn.textContent = timer ? "Pause" : "Play";
  }

  function setupDrag() {
    var startX = 0, startAz = 0, dragging = false;
    var pxPerStep = Math.max(2, S / V);  // dragging across the whole canvas turns the object once
    canvas.addEventListener("pointerdown", function (e) {
      dragging = true; startX = e.clientX; startAz = state.az;
      canvas.classList.add("dragging");
      if (canvas.setPointerCapture) { canvas.setPointerCapture(e.pointerId); }
      e.preventDefault();
    });
    canvas.addEventListener("pointermove", function (e) {
      if (dragging) { setView(startAz - Math.round((e.clientX - startX) / pxPerStep), state.t); }
    });
    function stop() { dragging = false; canvas.classList.remove("dragging"); }
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
  }

  function setupKeys() {
    document.addEventListener("keydown", function (e) {
      var steps = { ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [1, 0], ArrowDown: [-1, 0] };
      if (steps[e.key]) {
        play(false);
        setView(state.az + steps[e.key][0], state.t + steps[e.key][1]);
        e.preventDefault();
      } else if (e.key === " ") {
        play(!timer);
        e.preventDefault();
      }
    });
  }

  function readQuery() {
    var q = new URLSearchParams(window.location.search);
    var given = false;
    if (q.has("az") && isFinite(parseFloat(q.get("az")))) { state.az = nearestAzimuth(parseFloat(q.get("az"))); given = true; }
    if (q.has("t") && isFinite(parseFloat(q.get("t")))) { state.t = nearestTime(parseFloat(q.get("t"))); given = true; }
    return given;
  }

  function setupInfo() {
    document.getElementById("prompt").textContent = D.prompt || "";
    if (D.prompt) { document.title = "animate124 — " + D.prompt; }
    if (D.input_image) {
      var img = document.getElementById("input");
      img.src = D.input_image;
      img.hidden = false;
    }
  }

  function start() {
    canvas.width = S; canvas.height = S;
    canvas.style.width = S + "px"; canvas.style.height = S + "px";
    slider.max = String(T - 1);
    slider.addEventListener("input", function () { play(false); setView(state.az, parseInt(slider.value, 10)); });
    playBtn.addEventListener("click", function () { play(!timer); });
    var fromQuery = readQuery();
    setupInfo(); setupDrag(); setupKeys();
    D.atlas.forEach(function (src, j) {
      var im = new Image();
      im.onload = function () {
        loaded += 1;
        if (j === state.t) { draw(); }
        if (loaded === T) {
          draw();
          document.body.dataset.ready = "1";
          if (!fromQuery) { play(true); }
        }
      };
      im.src = src;
      images.push(im);
    });
  }

  start();
})();
