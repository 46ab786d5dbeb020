// resource.Quantity strings ("500Mi", "1.5", "250m", "2G") as plain numbers.

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL: Record<string, number> = {
  n: 1e-9,
  u: 1e-6,
  m: 1e-3,
  '': 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
};

/** The value of a quantity, or undefined when it does not parse. */
export function parseQuantity(text: unknown): number | undefined {
  if (typeof text === 'number') return text;
  if (typeof text !== 'string') return undefined;
  const m = /^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?)$/.exec(text.trim());
  if (!m) return undefined;
  const base = Number(m[1]);
  if (m[2]) return base * 10 ** Number(m[2].slice(1));
  const suffix = m[3] ?? '';
  return base * (BINARY[suffix] ?? DECIMAL[suffix]);
}

/** Bytes, rounded up as the kubelet rounds memory limits. */
export function parseBytes(text: unknown): number | undefined {
  const v = parseQuantity(text);
  return v === undefined ? undefined : Math.ceil(v);
}

/** A quantity printed back: the original spelling for strings (Quantity keeps its format), canonical for numbers. */
export function quantityText(value: unknown): string {
  return typeof value === 'string' ? value : String(value);
}
