/* FlexUNet slice viewer: written for the report, no library, no network (see flexunet/viewer.py). */
(function () {
  "use strict";
  var palette = JSON.parse(document.querySelector("script.fv-palette").textContent);
  function rgb(hex) { return [1, 3, 5].map(function (i) { return parseInt(hex.substr(i, 2), 16); }); }
  var CLASS = palette.classes.map(rgb), FP = rgb(palette.fp), FN = rgb(palette.fn), EXTRA = rgb(palette.extra);
  var CACHE = 48;   // decoded label maps kept per viewer

  function Viewer(root) {
    this.root = root;
    this.slices = JSON.parse(root.querySelector("script.fv-data").textContent);
    this.w = +root.dataset.width; this.h = +root.dataset.height;
    this.img = root.querySelector(".fv-image");
    this.canvas = root.querySelector(".fv-overlay");
    this.ctx = this.canvas.getContext("2d");
    this.slider = root.querySelector(".fv-slider");
    this.opacity = root.querySelector(".fv-opacity");
    this.labels = new Map();
    this.k = -1;
    var self = this;
    this.slider.addEventListener("input", function () { self.show(+self.slider.value - 1); });
    root.querySelector(".fv-prev").addEventListener("click", function () { self.show(self.k - 1); });
    root.querySelector(".fv-next").addEventListener("click", function () { self.show(self.k + 1); });
    this.opacity.addEventListener("input", function () { self.fade(); });
    root.querySelectorAll(".fv-layer, .fv-class").forEach(function (box) {
      box.addEventListener("change", function () { self.draw(); });
    });
    var stage = root.querySelector(".fv-stage");
    stage.addEventListener("wheel", function (e) {
      if (!e.deltaY) return;            // sideways scrolling is the page's
      e.preventDefault();
      self.show(self.k + (e.deltaY > 0 ? 1 : -1));
    }, {passive: false});
    stage.addEventListener("keydown", function (e) {
      var step = {ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10}[e.key];
      if (e.key === "Home") step = -self.k;
      if (e.key === "End") step = self.slices.length - 1 - self.k;
      if (step === undefined) return;
      e.preventDefault();
      self.show(self.k + step);
    });
    this.fade();
    this.show(0);
  }

  Viewer.prototype.fade = function () { this.canvas.style.opacity = (+this.opacity.value / 100).toString(); };

  Viewer.prototype.show = function (k) {
    k = Math.max(0, Math.min(this.slices.length - 1, k));
    if (k === this.k) return;
    this.k = k;
    var s = this.slices[k];
    this.slider.value = String(k + 1);
    this.root.querySelector(".fv-index").textContent = (k + 1) + " / " + this.slices.length;
    this.root.querySelector(".fv-name").textContent = s.name;
    this.root.querySelectorAll(".fv-dice").forEach(function (cell) {
      var v = s.dice[cell.dataset.class];
      cell.dataset.value = JSON.stringify(v === undefined ? null : v);
      cell.textContent = v === null || v === undefined ? "n/a" : v.toFixed(3);
    });
    this.img.src = s.img;              // the image file is loaded only now
    this.img.alt = "slice " + (k + 1) + ": " + s.name;
    for (var d = 1; d <= 2; d++) {      // and its neighbours, ahead of the reader
      [k - d, k + d].forEach(function (j) {
        if (j >= 0 && j < this.slices.length) { new Image().src = this.slices[j].img; }
      }, this);
    }
    this.draw();
  };

  Viewer.prototype.label = function (k, done) {
    var hit = this.labels.get(k);
    if (hit) { done(hit); return; }
    var self = this, im = new Image();
    im.onload = function () {
      var c = document.createElement("canvas");
      c.width = self.w; c.height = self.h;
      var cx = c.getContext("2d");
      cx.drawImage(im, 0, 0);
      var data = cx.getImageData(0, 0, self.w, self.h).data;
      self.labels.set(k, data);
      if (self.labels.size > CACHE) self.labels.delete(self.labels.keys().next().value);
      done(data);
    };
    im.onerror = function () { console.warn("viewer: cannot decode the masks of " + self.slices[k].name); };
    im.src = this.slices[k].lab;
  };

  Viewer.prototype.state = function () {
    var on = {}, visible = [false];
    this.root.querySelectorAll(".fv-layer").forEach(function (b) { on[b.dataset.layer] = b.checked; });
    this.root.querySelectorAll(".fv-class").forEach(function (b) { visible[+b.dataset.class] = b.checked; });
    return {on: on, visible: visible};
  };

  Viewer.prototype.draw = function () {
    var self = this, k = this.k;
    this.label(k, function (lab) {
      if (k !== self.k) return;        // the reader moved on while it decoded
      self.paint(lab, self.state());
    });
  };

  Viewer.prototype.paint = function (lab, st) {
    var w = this.w, h = this.h, out = this.ctx.createImageData(w, h), px = out.data, vis = st.visible;
    function put(i, c, a) { px[i] = c[0]; px[i + 1] = c[1]; px[i + 2] = c[2]; px[i + 3] = a; }
    for (var y = 0; y < h; y++) {
      for (var x = 0; x < w; x++) {
        var p = y * w + x, i = 4 * p, t = lab[i], q = lab[i + 1];
        if (st.on.extra && lab[i + 2] > 0) put(i, EXTRA, lab[i + 2]);
        if (st.on.pred && q > 0 && vis[q]) put(i, CLASS[q] || CLASS[CLASS.length - 1], 255);
        if (st.on.truth && t > 0 && vis[t]) {
          var edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 ||
            lab[i - 4] !== t || lab[i + 4] !== t || lab[i - 4 * w] !== t || lab[i + 4 * w] !== t;
          if (edge) put(i, CLASS[t] || CLASS[CLASS.length - 1], 255);
        }
        if (st.on.diff && t !== q) {
          if (q > 0 && vis[q]) put(i, FP, 255);
          else if (t > 0 && vis[t]) put(i, FN, 255);
        }
      }
    }
    this.ctx.putImageData(out, 0, 0);
    this.root.dataset.drawn = String(this.k + 1);
  };

  document.querySelectorAll("div.fv-viewer").forEach(function (root) { root.viewer = new Viewer(root); });
})();
