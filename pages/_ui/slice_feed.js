// Part of pages/_ui/slice_viewer.py (read there at import; Streamlit gets it inline).
const SEEN = new WeakMap();

// A feed payload: more axial slices, or one layer, of a volume. Kept per volume in the registry, so a
// viewer that mounts (or changes orientation) after its feed arrived still finds the data.
export default function (component) {
  const { data, parentElement } = component;
  if (!data || SEEN.get(parentElement) === data) return;
  SEEN.set(parentElement, data);
  const part = unpack(data);
  if (part) addFeed(part);
}
