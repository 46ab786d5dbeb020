// Replaces secret values before text leaves the executor: in job logs, in reports to the server and in the
// executor's own log. A value is masked in the forms a step is likely to print it in, not only as it is:
// base64 (also when the value is part of a longer base64'd string), URL-encoded and JSON-escaped.
import { JOB_TOKEN_PREFIX } from '../core/tokens.js';

/** No form shorter than this is ever masked: it would mask ordinary text. */
const MIN_FORM_LENGTH = 4;
/** A line of a multi-line value is masked on its own (logs are redacted line by line) when at least this long. */
const MIN_LINE_LENGTH = 8;
/** Up to this many bytes, a value's base64 is also masked line by line as `base64` and `openssl` wrap it. */
const MAX_WRAPPED_BYTES = 8 * 1024;
/** Forms are found by their first characters (one RegExp over these keys), then compared whole. */
const KEY_LENGTH = 16;

const toUrlSafe = (b64: string): string => b64.replace(/\+/g, '-').replace(/\//g, '_');

/**
 * The value's base64 forms. Standalone: the whole encoding, with and without padding. Embedded in a longer
 * string that was encoded: the value can start at any of the three byte positions of a 3-byte group, and for each
 * only the characters that depend on the value's bytes alone (the stable middle) are the same whatever surrounds it.
 */
function base64Forms(value: string): string[] {
  const bytes = Buffer.from(value, 'utf8');
  const out: string[] = [];
  for (const whole of [bytes, Buffer.concat([bytes, Buffer.from('\n')])]) {
    const b64 = whole.toString('base64');
    out.push(b64, b64.replace(/=+$/, ''));
    // `base64` wraps its output at 76 characters, `openssl base64` at 64: each line of a long value's encoding.
    for (const width of [64, 76]) {
      if (b64.length <= width || bytes.length > MAX_WRAPPED_BYTES) continue;
      for (let at = 0; at < b64.length; at += width)
        if (b64.length - at >= MIN_LINE_LENGTH) out.push(b64.slice(at, at + width));
    }
  }
  for (const lead of [0, 1, 2]) {
    const b64 = Buffer.concat([Buffer.alloc(lead), bytes]).toString('base64');
    // Character i holds bits 6i..6i+5: it is the value's alone when those bits all lie within the value's bytes.
    out.push(b64.slice(Math.ceil((8 * lead) / 6), Math.floor((8 * (lead + bytes.length)) / 6)));
  }
  return [...out, ...out.map(toUrlSafe)];
}

const percent = (c: string): string => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`;

/** encodeURIComponent, RFC 3986 (also !'()*), HTML forms (URLSearchParams) and encodeURI; "+" for space; either hex case. */
function urlForms(value: string): string[] {
  let component: string;
  let uri: string;
  try {
    component = encodeURIComponent(value);
    uri = encodeURI(value);
  } catch {
    return []; // a lone surrogate: not valid text to URL-encode, so no program prints it that way either
  }
  const strict = component.replace(/[!'()*]/g, percent);
  const form = new URLSearchParams([['', value]]).toString().slice(1);
  const out: string[] = [];
  for (const base of [component, strict, form, uri]) {
    for (const spaced of [base, base.replace(/%20/g, '+')])
      out.push(
        spaced,
        spaced.replace(/%[0-9A-F]{2}/g, (h) => h.toLowerCase()),
      );
  }
  return out;
}

const unicodeEscape = (c: string, upper = false): string => {
  const hex = c.charCodeAt(0).toString(16).padStart(4, '0');
  return `\\u${upper ? hex.toUpperCase() : hex}`;
};

/** The value inside a JSON string: as JSON.stringify writes it, with "\/", ASCII-only ("\u00e9"), and as Go escapes it. */
function jsonForms(value: string): string[] {
  const json = JSON.stringify(value).slice(1, -1);
  const ascii = json.replace(/[\u007f-\uffff]/g, (c) => unicodeEscape(c));
  const asciiUpper = json.replace(/[\u007f-\uffff]/g, (c) => unicodeEscape(c, true));
  const go = json.replace(/[<>&\u2028\u2029]/g, (c) => unicodeEscape(c));
  const slashed = (s: string): string => s.replace(/\//g, '\\/');
  return [json, slashed(json), ascii, slashed(ascii), asciiUpper, slashed(asciiUpper), go];
}

/** Every string that masks `value`, without duplicates or forms too short to mask. */
export function redactionForms(value: string): string[] {
  const forms = new Set<string>();
  const addAll = (v: string): void => {
    if (v.length < MIN_FORM_LENGTH) return; // a value this short is not masked in any form: its encodings are as guessable
    for (const form of [v, ...base64Forms(v), ...urlForms(v), ...jsonForms(v)])
      if (form.length >= MIN_FORM_LENGTH) forms.add(form);
  };
  addAll(value);
  // A value read from a file often ends with a newline the step's output will not show.
  const trimmed = value.replace(/^[\r\n]+|[\r\n]+$/g, '');
  if (trimmed !== value) addAll(trimmed);
  // Logs are redacted line by line: each line of a multi-line value on its own, as it is (a PEM key's body lines).
  const lines = trimmed.split(/\r?\n/);
  if (lines.length > 1) for (const line of lines) if (line.length >= MIN_LINE_LENGTH) forms.add(line);
  return [...forms];
}

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');

export class Redactor {
  /** Registered values, in the order they were first added, with how many holders each has. */
  private readonly values = new Map<string, { replacement: string; holders: number; forms?: string[] }>();
  /** Form → its replacement; the first value that has a form decides its replacement. */
  private table = new Map<string, string>();
  /** Forms by their first KEY_LENGTH characters (all of a shorter form), each list longest first. */
  private buckets = new Map<string, string[]>();
  /** The lengths keys have, longest first. */
  private keyLengths: number[] = [];
  /** Finds where a form may start: every key, escaped, longest first. */
  private pattern: RegExp | undefined;
  private longest = 0;
  /** Values changed since the lookup tables were built: they are rebuilt when next needed, once for many changes. */
  private stale = false;

  /** Masks `value` (and its encoded forms) with `replacement`. Adding a value again counts one more holder. */
  add(value: string, replacement: string): this {
    const known = this.values.get(value);
    if (known) {
      known.holders++;
      return this;
    }
    // Its forms are worked out when the tables are next built: a job that never prints anything never pays for them.
    this.values.set(value, { replacement, holders: 1 });
    this.stale = true;
    return this;
  }

  /**
   * A new redactor that masks what this one does, sharing the forms already worked out: the executor's own secrets
   * are encoded once, not again for every job.
   */
  fork(): Redactor {
    this.build();
    const copy = new Redactor();
    for (const [value, known] of this.values) copy.values.set(value, { ...known, holders: 1 });
    copy.stale = true;
    return copy;
  }

  /** Drops one holder of `value`; it stops being masked when none is left. */
  remove(value: string): this {
    const known = this.values.get(value);
    if (!known) return this;
    if (--known.holders > 0) return this;
    this.values.delete(value);
    this.stale = true;
    return this;
  }

  /** Length of the longest form masked: a piece of text this long can hold any whole secret. */
  get maxLength(): number {
    this.build();
    return this.longest;
  }

  redact(text: string): string {
    this.build();
    if (!this.pattern) return text;
    return this.scan(text, text.length).redacted;
  }

  /**
   * Redacts the start of `text` for sending it ahead of the rest: at least `end` characters, more when a masked
   * form starts before `end` and goes on after it, so nothing that starts in the part sent is split. The caller
   * keeps `text.slice(consumed)` and puts the next text after it; with `text.length - end >= maxLength - 1` every
   * form that starts before `end` is already whole in `text`.
   */
  redactHead(text: string, end: number): { redacted: string; consumed: number } {
    const limit = Math.min(end, text.length);
    this.build();
    if (!this.pattern) return { redacted: text.slice(0, limit), consumed: limit };
    return this.scan(text, limit);
  }

  /** Replaces the leftmost-longest forms that start before `limit`; `consumed`: where the redacted part ends. */
  private scan(text: string, limit: number): { redacted: string; consumed: number } {
    const pattern = this.pattern!;
    let redacted = '';
    let last = 0;
    pattern.lastIndex = 0;
    for (let m = pattern.exec(text); m && m.index < limit; m = pattern.exec(text)) {
      const form = this.formAt(text, m.index);
      if (!form) {
        pattern.lastIndex = m.index + 1; // only a key matched here: look on from the next character
        continue;
      }
      redacted += text.slice(last, m.index) + this.table.get(form)!;
      last = m.index + form.length;
      pattern.lastIndex = last;
    }
    pattern.lastIndex = 0;
    const consumed = Math.max(limit, last);
    return { redacted: redacted + text.slice(last, consumed), consumed };
  }

  /** The longest form that starts at `index`, if any. */
  private formAt(text: string, index: number): string | undefined {
    for (const length of this.keyLengths) {
      const bucket = this.buckets.get(text.substr(index, length));
      if (bucket) for (const form of bucket) if (text.startsWith(form, index)) return form;
    }
    return undefined;
  }

  private build(): void {
    if (!this.stale) return;
    this.stale = false;
    const table = new Map<string, string>();
    for (const [value, known] of this.values) {
      known.forms ??= redactionForms(value);
      for (const form of known.forms) if (!table.has(form)) table.set(form, known.replacement);
    }
    this.table = table;
    const buckets = new Map<string, string[]>();
    for (const form of table.keys()) {
      const key = form.slice(0, KEY_LENGTH);
      const bucket = buckets.get(key);
      if (bucket) bucket.push(form);
      else buckets.set(key, [form]);
    }
    for (const bucket of buckets.values()) bucket.sort((a, b) => b.length - a.length);
    this.buckets = buckets;
    const keys = [...buckets.keys()].sort((a, b) => b.length - a.length);
    this.keyLengths = [...new Set(keys.map((k) => k.length))];
    this.longest = 0;
    for (const bucket of buckets.values()) this.longest = Math.max(this.longest, bucket[0].length);
    this.pattern = keys.length ? new RegExp(keys.map(escapeRegExp).join('|'), 'g') : undefined;
  }
}

/**
 * The executor's own log passes through this (see `executorLogHooks`): the agent registers the executor token,
 * and each running job's token and secrets while it runs.
 */
export const executorLogRedactor = new Redactor();

/** pino `hooks` for the executor's logger: every line written is redacted with `executorLogRedactor`. */
export function executorLogHooks(executorToken: string): { streamWrite: (line: string) => string } {
  executorLogRedactor.add(executorToken, 'PASSWORD_REMOVED');
  return { streamWrite: (line) => executorLogRedactor.redact(line).replace(JOB_TOKEN_PATTERN, 'JOB_TOKEN_REMOVED') };
}

/** Any job token (newToken(JOB_TOKEN_PREFIX)): the executor's log masks them all by their shape. */
const JOB_TOKEN_PATTERN = new RegExp(`${JOB_TOKEN_PREFIX}[0-9a-f]{48}`, 'g');
