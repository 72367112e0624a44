// Part of pages/_ui/box_canvas.py (read there at import; Streamlit gets it inline).
// One box per slice on the slice image: drag on empty ground draws a new box (replacing the old one),
// drag inside moves it, drag on an edge or corner resizes it. Each finished drag is sent at once as
// an edit {seq, volume, slice, image, box}: the slice it was drawn on. Every edit the page has not
// acknowledged stays in the state value, so none is lost when page runs coalesce.
const STATES = new WeakMap();
const EDGE_PX = 7;  // how near an edge (CSS px) a press resizes instead of moving or drawing
const MIN_PX = 3;   // a smaller drag is a click, not a box
const CURSORS = { n: "ns-resize", s: "ns-resize", e: "ew-resize", w: "ew-resize", ne: "nesw-resize",
                  sw: "nesw-resize", nw: "nwse-resize", se: "nwse-resize", move: "move", new: "crosshair" };

const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);

function build(parent) {
  const root = parent.querySelector(".bc-root");
  const s = {
    root, stage: root.querySelector(".bc-stage"), canvas: root.querySelector(".bc-image"),
    boxEl: root.querySelector(".bc-box"), label: root.querySelector(".bc-label"),
    instance: Math.random().toString(36).slice(2, 10), counter: 0,
    pending: [], acked: new Set(), shown: null, box: null, drag: null, w: 1, h: 1, lastWheel: 0,
  };
  s.ctx = s.canvas.getContext("2d");
  const st = s.stage;
  st.addEventListener("pointerdown", (e) => down(s, e));
  st.addEventListener("pointermove", (e) => move(s, e));
  st.addEventListener("pointerup", (e) => up(s, e));
  st.addEventListener("pointercancel", () => cancel(s));
  st.addEventListener("lostpointercapture", () => { if (s.drag) up(s, null); });
  st.addEventListener("wheel", (e) => wheel(s, e), { passive: false });
  st.addEventListener("contextmenu", (e) => e.preventDefault());
  s.onKey = (e) => key(s, e);
  s.onResize = () => layout(s);
  document.addEventListener("keydown", s.onKey);
  window.addEventListener("resize", s.onResize);
  s.observer = new ResizeObserver(() => {
    if (Math.abs(root.clientWidth - (s.width || 0)) > 0.5) layout(s);
  });
  s.observer.observe(root);
  s.cleanup = () => {
    document.removeEventListener("keydown", s.onKey);
    window.removeEventListener("resize", s.onResize);
    s.observer.disconnect();
  };
  return s;
}

// ---- what is on screen
function boxFor(s, t) {  // the newest unacknowledged edit of the slice, else the stored box
  for (let i = s.pending.length - 1; i >= 0; i--) {
    if (s.pending[i].image === t.image && s.pending[i].volume === t.volume) return s.pending[i].box.slice();
  }
  return t.box ? t.box.slice() : null;
}

function kindFor(s, t) {
  return s.pending.some((p) => p.image === t.image && p.volume === t.volume) ? "person" : t.kind;
}

function render(s) {
  const b = s.box, el = s.boxEl, t = s.shown;
  if (!b || !t) { el.hidden = true; } else {
    el.hidden = false;
    el.style.left = `${b[0] * 100}%`; el.style.top = `${b[1] * 100}%`;
    el.style.width = `${(b[2] - b[0]) * 100}%`; el.style.height = `${(b[3] - b[1]) * 100}%`;
    const kind = s.drag ? "person" : kindFor(s, t);
    el.style.borderColor = (t.colours || {})[kind] || "#ff4b4b";
    el.dataset.kind = kind;
  }
  s.root.dataset.box = b ? b.map((v) => v.toFixed(4)).join(",") : "";
}

function paint(s, img) {
  const c = s.canvas, dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(s.cssW * dpr)), h = Math.max(1, Math.round(s.cssH * dpr));
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  if (!img) return;
  s.ctx.imageSmoothingEnabled = true;
  s.ctx.drawImage(img, 0, 0, w, h);
}

function layout(s) {
  const root = s.root;
  s.width = root.clientWidth;
  let top = root.getBoundingClientRect().top;
  for (let n = root.parentNode; n; n = n.parentNode || n.host) {  // the page's top, whatever is scrolled
    if (n.scrollTop) top += n.scrollTop;
    if (n === document.documentElement) break;
  }
  const maxH = Math.max(160, window.innerHeight - top - 10);
  const aspect = s.w / s.h;
  let w = Math.max(160, s.width), h = w / aspect;
  if (h > maxH) { h = maxH; w = h * aspect; }
  s.cssW = Math.floor(w); s.cssH = Math.floor(h);
  s.stage.style.width = `${s.cssW}px`; s.stage.style.height = `${s.cssH}px`;
  paint(s, s.img);
}

// Show the slice `t` once its image is decoded: until then the slice on screen (and the slice a drag
// belongs to) stays the previous one.
function show(s, t, img) {
  const fresh = !s.shown || s.shown.image !== t.image || s.shown.volume !== t.volume;
  s.shown = t; s.img = img;
  if (t.width !== s.w || t.height !== s.h) { s.w = t.width; s.h = t.height; layout(s); } else paint(s, img);
  if (!s.drag) s.box = boxFor(s, t);
  else if (fresh) s.drag.stale = true;
  s.label.textContent = `${t.slice + 1} / ${t.n}`;
  const d = s.root.dataset;
  d.volume = t.volume; d.slice = String(t.slice); d.rev = String(t.rev);
  render(s);
}

// ---- pointer
function point(s, e) {
  const r = s.stage.getBoundingClientRect();
  return { x: clamp((e.clientX - r.left) / r.width, 0, 1), y: clamp((e.clientY - r.top) / r.height, 0, 1),
           px: e.clientX - r.left, py: e.clientY - r.top, W: r.width, H: r.height };
}

function hit(s, p) {
  const b = s.box;
  if (!b) return "new";
  const [x0, y0, x1, y1] = [b[0] * p.W, b[1] * p.H, b[2] * p.W, b[3] * p.H];
  const inX = p.px >= x0 - EDGE_PX && p.px <= x1 + EDGE_PX, inY = p.py >= y0 - EDGE_PX && p.py <= y1 + EDGE_PX;
  if (!inX || !inY) return "new";
  let m = "";
  if (Math.abs(p.py - y0) <= EDGE_PX) m += "n"; else if (Math.abs(p.py - y1) <= EDGE_PX) m += "s";
  if (Math.abs(p.px - x0) <= EDGE_PX) m += "w"; else if (Math.abs(p.px - x1) <= EDGE_PX) m += "e";
  if (m) return m;
  return p.px > x0 && p.px < x1 && p.py > y0 && p.py < y1 ? "move" : "new";
}

function down(s, e) {
  if (e.button !== 0 || !s.shown) return;
  e.preventDefault();
  s.stage.focus({ preventScroll: true });
  const p = point(s, e);
  const t = s.shown;
  s.drag = { mode: hit(s, p), p0: p, orig: s.box ? s.box.slice() : null,
             target: { volume: t.volume, slice: t.slice, image: t.image } };
  try { s.stage.setPointerCapture(e.pointerId); } catch (err) { /* synthetic events */ }
}

function move(s, e) {
  const p = point(s, e);
  const d = s.drag;
  if (!d) { s.stage.style.cursor = CURSORS[hit(s, p)]; return; }
  const dx = p.x - d.p0.x, dy = p.y - d.p0.y;
  if (d.mode === "new") {
    s.box = [Math.min(d.p0.x, p.x), Math.min(d.p0.y, p.y), Math.max(d.p0.x, p.x), Math.max(d.p0.y, p.y)];
  } else if (d.mode === "move") {
    const o = d.orig, bw = o[2] - o[0], bh = o[3] - o[1];
    const x0 = clamp(o[0] + dx, 0, 1 - bw), y0 = clamp(o[1] + dy, 0, 1 - bh);
    s.box = [x0, y0, x0 + bw, y0 + bh];
  } else {
    let [x0, y0, x1, y1] = d.orig;
    if (d.mode.includes("w")) x0 = clamp(x0 + dx, 0, 1);
    if (d.mode.includes("e")) x1 = clamp(x1 + dx, 0, 1);
    if (d.mode.includes("n")) y0 = clamp(y0 + dy, 0, 1);
    if (d.mode.includes("s")) y1 = clamp(y1 + dy, 0, 1);
    s.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
  }
  render(s);
}

function up(s, e) {
  const d = s.drag;
  if (!d) return;
  if (e) move(s, e);
  s.drag = null;
  const b = s.box;
  const small = !b || (b[2] - b[0]) * s.cssW < MIN_PX || (b[3] - b[1]) * s.cssH < MIN_PX;
  const same = b && d.orig && b.every((v, i) => Math.abs(v - d.orig[i]) < 1e-6);
  if (small || same) {
    s.box = d.stale ? boxFor(s, s.shown) : d.orig;
  } else {
    const edit = { seq: `${s.instance}-${++s.counter}`, ...d.target, box: b.map((v) => +v.toFixed(6)) };
    s.pending.push(edit);
    s.setStateValue("edits", s.pending.slice());  // sends now: no debounce, nothing to lose
    if (d.stale) s.box = boxFor(s, s.shown);  // drawn on the slice that has since been replaced
  }
  render(s);
}

function cancel(s) {
  if (!s.drag) return;
  s.box = s.drag.stale ? boxFor(s, s.shown) : s.drag.orig;
  s.drag = null;
  render(s);
}

// ---- page buttons (the page's own controls) from the wheel and the extra keys
function press(buttonKey) {
  const b = document.querySelector(`.st-key-${buttonKey} button`);
  if (b && !b.disabled) { b.click(); return true; }
  return false;
}

function wheel(s, e) {
  e.preventDefault();
  const now = performance.now();
  if (now - s.lastWheel < 120 || !e.deltaY) return;
  s.lastWheel = now;
  press(e.deltaY > 0 ? s.nav.next : s.nav.prev);
}

function typing(e) {
  for (const n of e.composedPath ? e.composedPath() : [e.target]) {
    if (n && (n.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(n.tagName))) return true;
  }
  return false;
}

function key(s, e) {
  if (typing(e) || e.repeat) return;
  let combo = "";
  if (e.ctrlKey || e.metaKey) combo += "ctrl+";
  if (e.altKey) combo += "alt+";
  if (e.shiftKey) combo += "shift+";
  combo += (e.key || "").toLowerCase();
  const target = (s.keys || {})[combo];
  if (target && press(target)) { e.preventDefault(); e.stopPropagation(); }
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  if (!data) return undefined;
  let s = STATES.get(parentElement);
  if (!s) { s = build(parentElement); STATES.set(parentElement, s); }
  s.setStateValue = setStateValue;
  s.keys = data.keys; s.nav = data.nav;
  const acked = new Set(data.acked || []);
  s.pending = s.pending.filter((p) => !acked.has(p.seq));
  const t = { volume: data.volume, slice: data.slice, image: data.image_id, n: data.n, box: data.box,
              kind: data.kind, colours: data.colours, rev: data.rev, width: data.width, height: data.height };
  if (data.src === s.src && s.img) { show(s, t, s.img); return s.cleanup; }
  const token = (s.token = (s.token || 0) + 1);
  const img = new Image();
  img.onload = () => { if (token === s.token) { s.src = data.src; show(s, t, img); } };
  img.src = data.src;
  return s.cleanup;
}
