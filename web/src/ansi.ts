// A small ANSI SGR parser: colours (16, 256 and RGB), bold, dim, italic, underline, inverse. Other escape
// sequences (cursor movement, OSC titles and links) are dropped, so they never show as garbage.

export interface AnsiState {
  fg: number | string | null;
  bg: number | string | null;
  bold: boolean;
  dim: boolean;
  italic: boolean;
  underline: boolean;
  inverse: boolean;
}

export interface Span {
  text: string;
  className: string;
  /** Only for 256-colour and RGB colours, which have no class. */
  color?: string;
  background?: string;
}

/** A parsed line: plain text when it had no styling, spans otherwise. */
export type StyledLine = string | Span[];

export const PLAIN: AnsiState = Object.freeze({
  fg: null,
  bg: null,
  bold: false,
  dim: false,
  italic: false,
  underline: false,
  inverse: false,
});

const ESCAPE = /\x1b(?:\[([0-9;:?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])/g;

function isPlain(s: AnsiState): boolean {
  return s.fg === null && s.bg === null && !s.bold && !s.dim && !s.italic && !s.underline && !s.inverse;
}

/** The xterm 256-colour palette, for colours 16..255. */
function xterm256(n: number): string {
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v},${v},${v})`;
  }
  const i = n - 16;
  const level = (x: number): number => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${level(Math.floor(i / 36))},${level(Math.floor(i / 6) % 6)},${level(i % 6)})`;
}

function applySgr(state: AnsiState, params: string): AnsiState {
  const codes = params === '' ? [0] : params.split(/[;:]/).map((p) => (p === '' ? 0 : Number(p)));
  const s = { ...state };
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(s, PLAIN);
    else if (c === 1) s.bold = true;
    else if (c === 2) s.dim = true;
    else if (c === 3) s.italic = true;
    else if (c === 4) s.underline = true;
    else if (c === 7) s.inverse = true;
    else if (c === 22) s.bold = s.dim = false;
    else if (c === 23) s.italic = false;
    else if (c === 24) s.underline = false;
    else if (c === 27) s.inverse = false;
    else if (c >= 30 && c <= 37) s.fg = c - 30;
    else if (c >= 90 && c <= 97) s.fg = c - 90 + 8;
    else if (c === 39) s.fg = null;
    else if (c >= 40 && c <= 47) s.bg = c - 40;
    else if (c >= 100 && c <= 107) s.bg = c - 100 + 8;
    else if (c === 49) s.bg = null;
    else if (c === 38 || c === 48) {
      let colour: number | string | null = null;
      if (codes[i + 1] === 5 && codes[i + 2] !== undefined) {
        colour = codes[i + 2];
        i += 2;
      } else if (codes[i + 1] === 2 && codes[i + 4] !== undefined) {
        colour = `rgb(${codes[i + 2]},${codes[i + 3]},${codes[i + 4]})`;
        i += 4;
      } else break;
      if (c === 38) s.fg = colour;
      else s.bg = colour;
    }
  }
  return s;
}

function span(text: string, s: AnsiState): Span {
  let fg = s.fg;
  let bg = s.bg;
  const classes: string[] = [];
  if (s.inverse) {
    [fg, bg] = [bg ?? 'inverse-fg', fg ?? 'inverse-bg'];
  }
  const out: Span = { text, className: '' };
  if (typeof fg === 'number' && fg < 16) classes.push(`af${fg}`);
  else if (typeof fg === 'number') out.color = xterm256(fg);
  else if (fg === 'inverse-fg') classes.push('af-inv');
  else if (fg === 'inverse-bg') classes.push('ab-inv');
  else if (fg) out.color = fg;
  if (typeof bg === 'number' && bg < 16) classes.push(`ab${bg}`);
  else if (typeof bg === 'number') out.background = xterm256(bg);
  else if (bg === 'inverse-bg') classes.push('ab-inv');
  else if (bg === 'inverse-fg') classes.push('ab-fg');
  else if (bg) out.background = bg;
  if (s.bold) classes.push('a-b');
  if (s.dim) classes.push('a-d');
  if (s.italic) classes.push('a-i');
  if (s.underline) classes.push('a-u');
  out.className = classes.join(' ');
  return out;
}

/** Parses one line that starts in `state`; returns the line and the state it ends in (for the next line). */
export function parseAnsiLine(line: string, state: AnsiState): { line: StyledLine; state: AnsiState } {
  if (!line.includes('\x1b')) {
    return { line: isPlain(state) ? line : [span(line, state)], state };
  }
  const spans: Span[] = [];
  let s = state;
  let last = 0;
  ESCAPE.lastIndex = 0;
  for (let m = ESCAPE.exec(line); m; m = ESCAPE.exec(line)) {
    if (m.index > last) spans.push(span(line.slice(last, m.index), s));
    if (m[2] === 'm') s = applySgr(s, m[1] ?? '');
    last = ESCAPE.lastIndex;
  }
  if (last < line.length) spans.push(span(line.slice(last), s));
  const styled = spans.every((p) => p.className === '' && !p.color && !p.background);
  return { line: styled ? spans.map((p) => p.text).join('') : spans, state: s };
}

/** The text of a line without its styling. */
export function lineText(line: StyledLine): string {
  return typeof line === 'string' ? line : line.map((s) => s.text).join('');
}
