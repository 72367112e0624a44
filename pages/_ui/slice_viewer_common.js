// Part of pages/_ui/slice_viewer.py (read there at import; Streamlit gets it inline).
// Volumes (decoded slices, layer data) and viewers, shared by the viewer and its feeds: two
// components, so two modules, one registry on window.
const REG = (window.__slicewiseViewer2 ||= { viewers: new Map(), vols: new Map() });

function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }

function unpack(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  if (String.fromCharCode(u8[0], u8[1], u8[2], u8[3]) !== "SWV2") return null;
  const length = view.getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(u8.subarray(8, 8 + length)));
  let offset = 8 + length;
  header.blobs = header.sizes.map((size) => {
    const b = u8.subarray(offset, offset + size);
    offset += size;
    return b;
  });
  return header;
}

async function inflate(blob) {
  const stream = new Blob([blob]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

// The volume `id` (created on first mention: a feed may arrive before its viewer).
function volumeOf(id, shape) {
  let vol = REG.vols.get(id);
  if (!vol) {
    for (const [other, v] of REG.vols) if (other !== id && !v.keep) REG.vols.delete(other);  // one held
    vol = { id, slices: [], have: 0, started: new Set(), layers: new Map(), layerStarted: new Set(),
            queue: [], ready: false, pumping: false };
    REG.vols.set(id, vol);
  }
  if (shape && !vol.shape) vol.shape = shape;
  return vol;
}

function notify(volId) {
  for (const s of REG.viewers.values()) if (s.vol && s.vol.id === volId && s.root.isConnected) s.schedule();
}

// Axial slice blob -> Uint16Array of raw values (low bytes, then high bytes, deflated).
function addSlice(vol, i, blob) {
  if (vol.started.has(i)) return Promise.resolve();
  vol.started.add(i);
  return inflate(blob).then((b) => {
    const n = b.length >> 1, out = new Uint16Array(n);
    for (let k = 0; k < n; k++) out[k] = b[k] | (b[n + k] << 8);
    vol.slices[i] = out;
    vol.have += 1;
    notify(vol.id);
  }).catch((e) => console.error("slice", i, e));
}

function addLayer(vol, id, blob) {
  if (vol.layerStarted.has(id) || !blob.length) return Promise.resolve();
  vol.layerStarted.add(id);
  return inflate(blob).then((b) => { vol.layers.set(id, b); notify(vol.id); })
    .catch((e) => console.error("layer", id, e));
}

// Feed data is decoded one piece at a time, the slice nearest the one on screen first (layers after
// the nearest few slices), and only once the viewer has painted its opening slice (or after 1.5 s):
// decoding never holds up the first paint, and stepping stays smooth while the rest comes in.
function nearest(vol) {
  const viewer = [...REG.viewers.values()].find((s) => s.vol === vol);
  const at = viewer && viewer.orientation === "axial" ? viewer.index : (vol.shape ? vol.shape[0] >> 1 : 0);
  let best = 0, bestKey = Infinity;
  vol.queue.forEach((job, k) => {
    const key = job.layer ? 8 : Math.abs(job.i - at);
    if (key < bestKey) { best = k; bestKey = key; }
  });
  return vol.queue.splice(best, 1)[0];
}

function pump(vol) {
  if (vol.pumping || !vol.queue.length) return;
  if (!vol.ready) {
    vol.readyTimer ||= setTimeout(() => { vol.ready = true; pump(vol); }, 1500);
    return;
  }
  vol.pumping = true;
  const job = nearest(vol);
  const done = job.layer ? addLayer(vol, job.id, job.blob) : addSlice(vol, job.i, job.blob);
  done.finally(() => { vol.pumping = false; pump(vol); });
}

function addFeed(part) {
  const vol = volumeOf(part.volume, part.shape);
  if (part.kind === "slices") part.indices.forEach((i, k) => vol.queue.push({ i, blob: part.blobs[k] }));
  else if (part.kind === "layer") vol.queue.push({ layer: true, id: part.id, blob: part.blobs[0] });
  pump(vol);
}
