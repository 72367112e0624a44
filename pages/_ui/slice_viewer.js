// Part of pages/_ui/slice_viewer.py (read there at import; Streamlit gets it inline).
const STATES = new WeakMap();
const CMAPS = {};

function ramp(name) {  // colour maps: 256 x RGB, as core.render.jet for "jet"
  if (CMAPS[name]) return CMAPS[name];
  const t = new Uint8Array(768);
  for (let v = 0; v < 256; v++) {
    const x = v / 255;
    let rgb;
    if (name === "hot") rgb = [clamp(3 * x, 0, 1), clamp(3 * x - 1, 0, 1), clamp(3 * x - 2, 0, 1)];
    else if (name === "grey") rgb = [x, x, x];
    else rgb = [clamp(1.5 - Math.abs(4 * x - 3), 0, 1), clamp(1.5 - Math.abs(4 * x - 2), 0, 1),
                clamp(1.5 - Math.abs(4 * x - 1), 0, 1)];
    for (let c = 0; c < 3; c++) t[3 * v + c] = Math.floor(rgb[c] * 255 + 0.5);
  }
  return (CMAPS[name] = t);
}

// ---- geometry: the plane of the current orientation, resliced from axial slices
function planeSize(s) {
  const [Z, Y, X] = s.vol.shape;
  return s.orientation === "axial" ? [Y, X] : s.orientation === "coronal" ? [Z, X] : [Z, Y];
}

function sliceCount(s) {
  const [Z, Y, X] = s.vol.shape;
  return s.orientation === "axial" ? Z : s.orientation === "coronal" ? Y : X;
}

// (row, col) of the plane -> voxel [z, y, x] (core.render.to_voxel)
function toVoxel(s, row, col) {
  const Z = s.vol.shape[0];
  if (s.orientation === "axial") return [s.index, row, col];
  const z = s.flip ? Z - 1 - row : row;
  return s.orientation === "coronal" ? [z, s.index, col] : [z, col, s.index];
}

// Plane of a (planes, Y, X) stack given as per-z arrays `get(z)`; null when a needed z is missing.
function reslice(s, get, Ctor, planes) {
  const [Z, Y, X] = s.vol.shape;
  const i = s.index;
  if (s.orientation === "axial") return planes === 1 && Z > 1 ? get(0) : get(i);
  if (planes === 1 && Z > 1) return null;  // a single-plane layer: axial slices only
  const [h, w] = planeSize(s);
  const out = new Ctor(h * w);
  let missing = 0;
  for (let r = 0; r < h; r++) {
    const src = get(s.flip ? Z - 1 - r : r);
    if (!src) { missing++; continue; }
    if (s.orientation === "coronal") out.set(src.subarray(i * X, i * X + X), r * w);
    else for (let c = 0; c < w; c++) out[r * w + c] = src[c * X + i];
  }
  if (missing) s.missing = (s.missing || 0) + missing;
  return out;
}

function rawPlane(s) {
  s.missing = 0;
  return reslice(s, (z) => s.vol.slices[z], Uint16Array, s.vol.shape[0]);
}

function layerPlane(s, L) {
  const data = s.vol.layers.get(L.id);
  if (!data) return null;
  const [lz, Y, X] = L.shape, size = Y * X;
  const saved = s.missing;
  const p = reslice(s, (z) => (z < lz ? data.subarray(z * size, (z + 1) * size) : null), Uint8Array, lz);
  s.missing = saved;
  return p;
}

// ---- window: a lookup table raw -> grey for the whole uint16 range
function buildLut(s) {
  const lut = s.lut || (s.lut = new Uint8Array(65536));
  const { slope, intercept } = s.coding, low = s.center - s.width / 2, w = Math.max(s.width, 1e-6);
  for (let r = 0; r < 65536; r++) {
    const v = clamp((r * slope + intercept - low) / w, 0, 1);
    lut[r] = Math.floor(v * 255 + 0.5);
  }
  s.lutFor = `${s.center}/${s.width}`;
}

function blendAt(d, i, r, g, b, a) {
  const j = 4 * i;
  d[j] = Math.floor(d[j] * (1 - a) + r * a + 0.5);
  d[j + 1] = Math.floor(d[j + 1] * (1 - a) + g * a + 0.5);
  d[j + 2] = Math.floor(d[j + 2] * (1 - a) + b * a + 0.5);
}

// Scratch buffers reused between paints (no garbage per step).
function scratch(s, name, n) {
  const b = s[name];
  return b && b.length === n ? b : (s[name] = new Uint8Array(n));
}

// Inner boundary of `inside`, `width` px thick (core.render.contour: 4-neighbour erosion, the image
// border counts as outside), within the rows r0..r1 and columns c0..c1 that hold the mask.
function edges(s, inside, h, w, width, [r0, r1, c0, c1]) {
  const n = h * w;
  let e = scratch(s, "bufA", n), next = scratch(s, "bufB", n);
  e.set(inside);
  const rs = Math.max(1, r0), re = Math.min(h - 2, r1), cs = Math.max(1, c0), ce = Math.min(w - 2, c1);
  for (let k = 0; k < Math.max(1, width); k++) {
    next.fill(0);
    for (let r = rs; r <= re; r++) {
      for (let c = cs, i = r * w + cs; c <= ce; c++, i++) {
        if (e[i] && e[i - 1] && e[i + 1] && e[i - w] && e[i + w]) next[i] = 1;
      }
    }
    [e, next] = [next, e];
  }
  return e;  // interior: an edge pixel is inside and not interior
}

function drawMask(s, d, plane, L, h, w) {
  const [r, g, b] = L.colour, n = h * w;
  if (L.style !== "contour") for (let i = 0; i < n; i++) if (plane[i]) blendAt(d, i, r, g, b, L.opacity);
  if (L.style === "fill") return;
  const inside = scratch(s, "bufI", n);
  let r0 = h, r1 = -1, c0 = w, c1 = -1;
  for (let row = 0, i = 0; row < h; row++) {
    for (let c = 0; c < w; c++, i++) {
      if (plane[i]) {
        inside[i] = 1;
        if (row < r0) r0 = row;
        r1 = row;
        if (c < c0) c0 = c;
        if (c > c1) c1 = c;
      } else inside[i] = 0;
    }
  }
  if (r1 < 0) return;
  const interior = edges(s, inside, h, w, L.line_width, [r0, r1, c0, c1]);
  const a = L.style === "both" ? 1 : L.opacity;
  for (let row = r0; row <= r1; row++) {
    for (let c = c0, i = row * w + c0; c <= c1; c++, i++) {
      if (inside[i] && !interior[i]) blendAt(d, i, r, g, b, a);
    }
  }
}

function drawHeat(d, plane, L, n) {
  const map = ramp(L.colormap || "jet"), cut = L.threshold * 255;
  for (let i = 0; i < n; i++) {
    const v = plane[i];
    if (v > cut) blendAt(d, i, map[3 * v], map[3 * v + 1], map[3 * v + 2], L.opacity);
  }
}

function drawBoxes(d, L, index, h, w) {  // core.render.box_to_pixels / box_outline
  const lw = Math.max(1, L.line_width), [r, g, b] = L.colour;
  for (const [z, xmin, ymin, xmax, ymax] of L.boxes) {
    if (z !== index) continue;
    const x0 = clamp(Math.floor(xmin * w), 0, w - 1), y0 = clamp(Math.floor(ymin * h), 0, h - 1);
    const x1 = clamp(Math.ceil(xmax * w) - 1, x0, w - 1), y1 = clamp(Math.ceil(ymax * h) - 1, y0, h - 1);
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const edge = x < x0 + lw || x > x1 - lw || y < y0 + lw || y > y1 - lw;
        if (edge) blendAt(d, y * w + x, r, g, b, L.opacity);
      }
    }
  }
}

// ---- painting
function schedule(s) {
  if (s.frame) return;
  s.frame = requestAnimationFrame(() => { s.frame = 0; draw(s); });
}

function markPainted(s) {
  const index = s.index, stack = s.stack;
  const ch = new MessageChannel();
  ch.port1.onmessage = () => {
    s.paints += 1;
    s.root.dataset.painted = String(index);
    s.root.dataset.paintedStack = stack;
    s.root.dataset.paints = String(s.paints);
    window.__slicewisePaint = { key: s.key, stack, index, t: performance.now(), n: s.paints, draw: s.drawMs };
  };
  ch.port2.postMessage(0);
}

function showStatus(s) {
  const [Z] = s.vol.shape;
  s.label.textContent = `${s.orientation} slice ${s.index + 1} / ${s.n}`;
  s.wl.textContent = `C ${fmt(s, s.center)} W ${fmt(s, s.width)}`;
  s.status.textContent = s.vol.have < Z ? `loading slices ${s.vol.have} / ${Z}` : "";
  if (s.vol.have < Z) s.root.dataset.pending = String(Z - s.vol.have); else delete s.root.dataset.pending;
}

function fmt(s, v) { return Math.abs(v) >= 100 || s.coding.exact ? v.toFixed(0) : v.toPrecision(3); }

function draw(s) {
  const t0 = performance.now();
  s.root.dataset.index = String(s.index);
  if (String(s.slider.value) !== String(s.index)) s.slider.value = String(s.index);
  showStatus(s);
  const raw = rawPlane(s);
  if (!raw || s.missing) { s.root.dataset.waiting = ""; if (!raw) return; }
  else delete s.root.dataset.waiting;
  const [h, w] = planeSize(s), n = h * w;
  if (`${s.center}/${s.width}` !== s.lutFor) buildLut(s);
  if (!s.image || s.image.width !== w || s.image.height !== h) s.image = new ImageData(w, h);
  const d = s.image.data, lut = s.lut;
  const d32 = new Uint32Array(d.buffer, d.byteOffset, n);  // RGBA little-endian: 0xAABBGGRR
  for (let i = 0; i < n; i++) d32[i] = 0xff000000 | (lut[raw[i]] * 0x010101);
  for (const L of s.layers) {
    if (!L.visible || L.opacity <= 0) continue;
    if (L.kind === "boxes") { if (s.orientation === "axial") drawBoxes(d, L, s.index, h, w); continue; }
    const plane = layerPlane(s, L);
    if (!plane) continue;
    if (L.kind === "mask") drawMask(s, d, plane, L, h, w); else drawHeat(d, plane, L, n);
  }
  s.plane = raw;
  if (s.canvas.width !== w || s.canvas.height !== h) { s.canvas.width = w; s.canvas.height = h; layout(s); }
  s.ctx.putImageData(s.image, 0, 0);
  s.drawMs = performance.now() - t0;  // the compositing itself (bench_stepping reports it)
  if (!s.missing) markPainted(s);  // a resliced plane still filling in is not "painted" yet
  if (!s.vol.ready) {  // the first paint of this volume: now the feeds (the server waits for this report)
    s.vol.ready = true;
    setTimeout(() => pump(s.vol), 0);
    report(s, 0);
  }
  if (s.hover) readout(s);
}

// The height the canvas may take: the window below the stage's top (as laid out with the page scrolled
// to the top), less the slider under it, so that image and slider are on screen without scrolling.
function fitHeight(s) {
  const view = window.innerHeight || 900;
  let top = s.canvas.parentElement.getBoundingClientRect().top;
  for (let e = s.root.getRootNode().host; e; e = e.parentElement) top += e.scrollTop || 0;
  const below = (s.slider.offsetHeight || 20) + 24;  // the slider and its margins, a little air
  return Math.max(240, Math.min(view * 0.9, view - top - below));
}

function layout(s) {
  const [h, w] = planeSize(s);
  const avail = Math.max(160, s.root.clientWidth || s.maxWidth);
  const ratio = (h * s.aspect) / w;
  const maxH = fitHeight(s);
  const cssW = Math.min(avail, s.maxWidth, maxH / ratio);
  s.canvas.style.width = `${cssW}px`;
  s.canvas.style.height = `${cssW * ratio}px`;
}

// ---- reporting back (debounced, never during a drag): slice, window, layers in one state value
function report(s, delay = 400) {
  clearTimeout(s.timer);
  s.timer = setTimeout(() => {
    if (s.dragging) { report(s, delay); return; }
    const view = {
      volume: s.vol.id, stack: s.stack, orientation: s.orientation, index: s.index,
      window: [s.center, s.width],
      layers: Object.fromEntries(s.layers.map((L) => [L.name, { visible: L.visible, opacity: L.opacity,
        style: L.style, colormap: L.colormap || null }])),
      complete: s.vol.have >= s.vol.shape[0], loaded: [...s.vol.layers.keys()],  // the server stops feeding
    };
    const text = JSON.stringify(view);
    if (text !== s.reported) { s.reported = text; s.setStateValue("view", view); }
  }, delay);
}

function remember(s) {  // the browser's choices per volume survive a rerun, a new orientation
  REG.looks ||= new Map();
  REG.looks.set(s.vol.id, { center: s.center, width: s.width, preset: s.preset.value,
    layers: Object.fromEntries(s.layers.map((L) => [L.name, { visible: L.visible, opacity: L.opacity,
      style: L.style, colormap: L.colormap }])) });
}

function changed(s) { remember(s); schedule(s); report(s); }

function goTo(s, index) {
  const next = clamp(Math.round(index), 0, s.n - 1);
  if (next === s.index) return;
  s.index = next;
  draw(s);
  report(s, 350);
}

function pointerPixel(s, ev) {
  const r = s.canvas.getBoundingClientRect(), [h, w] = planeSize(s);
  const col = Math.floor((ev.clientX - r.left) / r.width * w);
  const row = Math.floor((ev.clientY - r.top) / r.height * h);
  return { row: clamp(row, 0, h - 1), col: clamp(col, 0, w - 1) };
}

function readout(s) {
  const { row, col } = s.hover, [, w] = planeSize(s);
  if (!s.plane) return;
  const [z, y, x] = toVoxel(s, row, col);
  const have = !!s.vol.slices[z];
  const value = s.plane[row * w + col] * s.coding.slope + s.coding.intercept;
  const shown = !have ? "…" : s.coding.exact ? value.toFixed(0) : value.toPrecision(4);
  s.pointer.textContent = `voxel x ${x}, y ${y}, z ${z}: ${shown}${s.unit ? " " + s.unit : ""}`;
  s.root.dataset.readout = JSON.stringify({ x, y, z, value: have ? value : null });
}

function setWindow(s, center, width) {
  s.center = center; s.width = Math.max(1, width);
  s.wl.textContent = `C ${fmt(s, s.center)} W ${fmt(s, s.width)}`;
}

function bind(s) {
  s.canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    goTo(s, s.index + (ev.deltaY > 0 ? 1 : -1));
  }, { passive: false });
  s.root.addEventListener("keydown", (ev) => {
    if (ev.target !== s.root) return;
    const big = Math.max(1, Math.round(s.n / 10));
    const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: big, PageUp: -big };
    if (ev.key in moves) goTo(s, s.index + moves[ev.key]);
    else if (ev.key === "Home") goTo(s, 0);
    else if (ev.key === "End") goTo(s, s.n - 1);
    else return;
    ev.preventDefault();
    ev.stopPropagation();
  });
  s.slider.addEventListener("input", () => goTo(s, Number(s.slider.value)));
  s.slider.addEventListener("keydown", (ev) => { if (ev.key.startsWith("Arrow")) ev.stopPropagation(); });
  s.canvas.addEventListener("pointerenter", () => s.root.focus({ preventScroll: true }));
  s.canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  s.canvas.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 2) return;
    ev.preventDefault();
    s.dragging = { x: ev.clientX, y: ev.clientY };
    s.canvas.setPointerCapture(ev.pointerId);
  });
  s.canvas.addEventListener("pointermove", (ev) => {
    s.hover = pointerPixel(s, ev);
    if (s.dragging && (ev.buttons & 2)) {
      const dx = ev.clientX - s.dragging.x, dy = ev.clientY - s.dragging.y;
      s.dragging = { x: ev.clientX, y: ev.clientY };
      const step = Math.max(1, s.range / s.dragPixels);  // core.view_payload.drag_window
      setWindow(s, s.center + dy * step, s.width + dx * step);
      s.preset.value = "";
      window.__slicewiseInput = performance.now();
      remember(s);
      schedule(s);
      return;
    }
    readout(s);
  });
  const endDrag = (ev) => {
    if (!s.dragging) return;
    s.dragging = null;
    if (s.canvas.hasPointerCapture(ev.pointerId)) s.canvas.releasePointerCapture(ev.pointerId);
    report(s);
  };
  s.canvas.addEventListener("pointerup", endDrag);
  s.canvas.addEventListener("pointercancel", endDrag);
  s.canvas.addEventListener("pointerleave", () => {
    if (s.dragging) return;
    s.hover = null; s.pointer.textContent = ""; delete s.root.dataset.readout;
  });
  s.canvas.addEventListener("click", (ev) => {
    if (ev.button !== 0) return;
    const p = pointerPixel(s, ev);
    s.root.focus({ preventScroll: true });
    clearTimeout(s.timer);  // a state report landing during the probe's run could drop the trigger
    s.setTriggerValue("probe", { row: p.row, col: p.col, index: s.index, stack: s.stack });
    report(s, 1500);
  });
  s.preset.addEventListener("change", () => {
    const p = s.presets.find((q) => q.name === s.preset.value);
    if (!p) return;
    setWindow(s, p.center, p.width);
    window.__slicewiseInput = performance.now();
    changed(s);
  });
  new ResizeObserver(() => { if (s.vol) layout(s); }).observe(s.root);
}

function layerControls(s) {
  s.panel.replaceChildren();
  for (const L of s.layers) {
    const row = document.createElement("div");
    row.className = "sw-layer";
    row.dataset.layer = L.name;
    const [r, g, b] = L.colour;
    const swatch = L.kind === "heatmap" ? "linear-gradient(90deg,#00f,#0ff,#ff0,#f00)"
      : L.kind === "boxes" ? "transparent" : `rgb(${r},${g},${b})`;
    row.innerHTML = `<label class="sw-toggle"><input type="checkbox" class="sw-on">`
      + `<span class="sw-swatch" style="background:${swatch};border-color:rgb(${r},${g},${b})"></span>`
      + `<span class="sw-name"></span></label>`
      + `<input type="range" class="sw-opacity" min="0" max="1" step="0.05" aria-label="opacity">`
      + (L.kind === "mask" ? `<select class="sw-style" aria-label="draw"><option>fill</option>`
        + `<option>contour</option><option>both</option></select>` : "")
      + (L.kind === "heatmap" ? `<select class="sw-cmap" aria-label="colour map">`
        + s.colormaps.map((c) => `<option>${c}</option>`).join("") + `</select>` : "");
    row.querySelector(".sw-name").textContent = L.name;
    row.title = L.name;
    const on = row.querySelector(".sw-on"), op = row.querySelector(".sw-opacity");
    on.checked = L.visible; op.value = String(L.opacity); op.disabled = !L.visible;
    on.addEventListener("change", () => {
      L.visible = on.checked; op.disabled = !on.checked; mark(); changed(s);
    });
    op.addEventListener("input", () => { L.opacity = Number(op.value); mark(); changed(s); });
    const style = row.querySelector(".sw-style"), cmap = row.querySelector(".sw-cmap");
    if (style) {
      style.value = L.style;
      style.addEventListener("change", () => { L.style = style.value; mark(); changed(s); });
    }
    if (cmap) {
      cmap.value = L.colormap;
      cmap.addEventListener("change", () => { L.colormap = cmap.value; mark(); changed(s); });
    }
    s.panel.append(row);
  }
  function mark() { window.__slicewiseInput = performance.now(); }
  s.panel.hidden = !s.layers.length;
}

if (!REG.resizeBound) {  // once per page, however often this module is evaluated
  REG.resizeBound = true;
  window.addEventListener("resize", () => {  // a taller or narrower window: the canvas follows
    for (const v of REG.viewers.values()) if (v.vol && v.root.isConnected && v.relayout) v.relayout();
  });
}

function build(parentElement) {
  const q = (sel) => parentElement.querySelector(sel);
  const s = {
    root: q(".sw-root"), canvas: q(".sw-canvas"), slider: q(".sw-slider"), label: q(".sw-index"),
    status: q(".sw-status"), pointer: q(".sw-pointer"), wl: q(".sw-wl"), preset: q(".sw-preset"),
    panel: q(".sw-layers"), index: 0, n: 0, paints: 0, layers: [],
  };
  s.ctx = s.canvas.getContext("2d");
  s.schedule = () => schedule(s);
  s.relayout = () => layout(s);
  bind(s);
  return s;
}

function configure(s, cfg) {
  const look = (REG.looks && REG.looks.get(cfg.volume)) || null;
  if (s.vol && s.vol.id !== cfg.volume) {  // another volume: no readout of the last one's voxel
    s.hover = null; s.pointer.textContent = ""; delete s.root.dataset.readout;
  }
  s.vol = volumeOf(cfg.volume, cfg.shape);
  s.vol.keep = true;
  for (const v of REG.vols.values()) if (v !== s.vol) v.keep = false;
  s.stack = cfg.stack;
  s.orientation = cfg.orientation;
  s.flip = cfg.flip;
  s.coding = cfg.coding;
  s.unit = cfg.unit || "";
  s.range = cfg.range;
  s.dragPixels = cfg.drag_pixels;
  s.aspect = cfg.aspect || 1;
  s.maxWidth = cfg.max_width || 720;
  s.presets = cfg.presets;
  s.colormaps = cfg.colormaps;
  s.n = sliceCount(s);
  s.index = clamp(cfg.index || 0, 0, s.n - 1);
  s.preset.replaceChildren(...[{ name: "" }, ...cfg.presets].map((p) => {
    const o = document.createElement("option");
    o.value = p.name; o.textContent = p.name || "custom";
    return o;
  }));
  s.preset.hidden = !cfg.presets.length;
  s.layers = cfg.layers.map((L) => ({ ...L, ...((look && look.layers[L.name]) || {}) }));
  setWindow(s, look ? look.center : cfg.window[0], look ? look.width : cfg.window[1]);
  const match = cfg.presets.find((p) => p.center === s.center && p.width === s.width);
  s.preset.value = match ? match.name : "";
  layerControls(s);
  s.root.dataset.stack = s.stack;
  s.slider.max = String(s.n - 1);
  s.slider.disabled = s.n < 2;
  s.reported = null;
  layout(s);
}

export default function (component) {
  const { data, parentElement, setStateValue, setTriggerValue, key } = component;
  if (!data) return;
  let s = STATES.get(parentElement);
  if (!s) { s = build(parentElement); STATES.set(parentElement, s); }
  s.key = key; s.setStateValue = setStateValue; s.setTriggerValue = setTriggerValue;
  if (s.payload === data) return;
  s.payload = data;
  const cfg = unpack(data);
  if (!cfg) return;
  window.__slicewiseLoad = { stack: cfg.stack, t: performance.now() };  // bench_stepping's mark
  const text = JSON.stringify({ ...cfg, blobs: undefined, sizes: undefined });
  REG.viewers.set(cfg.target || key, s);
  const vol = volumeOf(cfg.volume, cfg.shape);
  cfg.first.forEach((i, k) => addSlice(vol, i, cfg.blobs[k]));
  if (text === s.config) return;  // the same stack again (a rerun): keep what the reader chose
  s.config = text;
  configure(s, cfg);
  draw(s);
}
