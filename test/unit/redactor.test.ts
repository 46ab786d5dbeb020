import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { LogEntryUpdate } from '../../src/core/protocol.js';
import { JobLog } from '../../src/executor/jobLog.js';
import { Redactor, executorLogHooks, executorLogRedactor, redactionForms } from '../../src/executor/redactor.js';

// Characters that change under URL and JSON encoding, a non-ASCII one, and bytes whose base64 has "+" and "/".
const SECRET = 'p@ss/w0rd "x" +y é~?>>';
const MASK = '${{ secrets.S }}';

const redactor = (): Redactor => new Redactor().add(SECRET, MASK);

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const b64url = (s: string): string => b64(s).replace(/\+/g, '-').replace(/\//g, '_');

/** True when `text` still holds the secret, or a long enough run of one of its encodings. */
function leaks(text: string, value = SECRET): boolean {
  return redactionForms(value).some((form) => text.includes(form));
}

describe('Redactor: the forms of a value', () => {
  it('masks the raw value wherever it is', () => {
    expect(redactor().redact(`a${SECRET}b${SECRET}`)).toBe(`a${MASK}b${MASK}`);
  });

  it('masks its base64, standard and URL-safe, with and without padding', () => {
    const std = b64(SECRET);
    const url = b64url(SECRET);
    expect(std).toMatch(/[+/]/); // so the URL-safe alphabet differs
    expect(std).toMatch(/=$/);
    for (const form of [std, std.replace(/=+$/, ''), url, url.replace(/=+$/, '')]) {
      expect(redactor().redact(`auth: ${form}!`)).toBe(`auth: ${MASK}!`);
    }
  });

  it('masks its base64 when the value was encoded with a trailing newline (echo | base64)', () => {
    const out = redactor().redact(b64(`${SECRET}\n`));
    expect(out).toBe(MASK);
  });

  it('masks each line of the base64 of a long value, wrapped at 76 (base64) or 64 (openssl base64) characters', () => {
    const long = `${SECRET}-0123456789abcdefghijklmnopqrstuvwxyz0123456789`;
    const r = new Redactor().add(long, MASK);
    for (const encoded of [b64(long), b64(`${long}\n`)]) {
      for (const width of [64, 76]) {
        const lines = encoded.match(new RegExp(`.{1,${width}}`, 'g'))!;
        expect(lines.length).toBeGreaterThan(1);
        for (const line of lines) expect(r.redact(line)).toBe(line.length >= 8 ? MASK : line);
      }
    }
  });

  // The value starts at each of the three byte positions of a base64 group, with text after it of each length.
  for (const prefix of ['', 'u', 'us', 'user:', 'Basic user:']) {
    for (const suffix of ['', 'z', 'zz', 'zzz']) {
      it(`masks its base64 inside a longer encoded string (prefix ${JSON.stringify(prefix)}, suffix ${JSON.stringify(suffix)})`, () => {
        for (const encode of [b64, b64url]) {
          const encoded = encode(`${prefix}${SECRET}${suffix}`);
          const out = redactor().redact(encoded);
          expect(out).toContain(MASK);
          // Only the characters the value shares with its neighbours are left: at most 3 on each side.
          expect(out.length - MASK.length).toBeLessThanOrEqual(
            Math.ceil((prefix.length * 4) / 3) + 3 + Math.ceil((suffix.length * 4) / 3) + 4,
          );
          // The middle of the value's bytes can no longer be decoded from what is left.
          expect(Buffer.from(out.replace(MASK, ''), 'base64').toString('latin1')).not.toContain('w0rd');
        }
      });
    }
  }

  it('masks its URL-encoded forms', () => {
    const component = encodeURIComponent(SECRET);
    const forms = [
      component,
      component.replace(/%[0-9A-F]{2}/g, (h) => h.toLowerCase()),
      component.replace(/%20/g, '+'),
      new URLSearchParams({ q: SECRET }).toString().slice(2),
      encodeURI(SECRET),
      component.replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`),
    ];
    expect(new Set(forms).size).toBeGreaterThan(3);
    for (const form of forms)
      expect(redactor().redact(`GET /login?password=${form}&x=1`)).toBe(`GET /login?password=${MASK}&x=1`);
  });

  it('masks its JSON-escaped forms', () => {
    const json = JSON.stringify(SECRET).slice(1, -1);
    const forms = [
      json,
      json.replace(/\//g, '\\/'),
      json.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`),
      JSON.stringify(SECRET).slice(1, -1).replace(/é/g, '\\u00E9'),
    ];
    expect(new Set(forms).size).toBe(4);
    for (const form of forms) expect(redactor().redact(`{"password":"${form}"}`)).toBe(`{"password":"${MASK}"}`);
  });

  it('masks each line of a multi-line value that is at least 8 characters long', () => {
    const key =
      '-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nshort\nAASCBKcwggSjAgEAAoIBAQC7\n-----END KEY-----\n';
    const r = new Redactor().add(key, '[key]');
    expect(r.redact(key)).toBe('[key]');
    expect(r.redact('MIIEvQIBADANBgkqhkiG9w0BAQEF')).toBe('[key]');
    expect(r.redact('line: AASCBKcwggSjAgEAAoIBAQC7')).toBe('line: [key]');
    expect(r.redact('-----END KEY-----')).toBe('[key]');
    expect(r.redact('short')).toBe('short');
    expect(r.redact(JSON.stringify(key))).toBe('"[key]"');
    expect(r.redact(b64(key))).toBe('[key]');
  });

  it('handles the largest values (a 64 KiB key) quickly', () => {
    const body = Buffer.alloc(48 * 1024, 'key material 0123456789 ')
      .toString('base64')
      .match(/.{1,64}/g)!;
    const key = `-----BEGIN KEY-----\n${body.join('\n')}\n-----END KEY-----\n`;
    const started = performance.now();
    const r = new Redactor().add(key, '[key]');
    expect(r.redact(`${key} ${JSON.stringify(key)} ${b64(key)}`)).toBe('[key] "[key]" [key]');
    expect(r.redact(`line: ${body[100]}`)).toBe('line: [key]');
    const line = 'x'.repeat(1000);
    for (let i = 0; i < 1000; i++) r.redact(line);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('masks a value read with a trailing newline without it', () => {
    const r = new Redactor().add('hunter22\n', '[s]');
    expect(r.redact('pw=hunter22')).toBe('pw=[s]');
  });

  it('lists each form once and none shorter than 4 characters', () => {
    const forms = redactionForms('abcd1234');
    expect(new Set(forms).size).toBe(forms.length);
    expect(forms.every((f) => f.length >= 4)).toBe(true);
    expect(redactionForms('abc')).toEqual([]);
    expect(new Redactor().add('abc', 'X').redact('abc YWJj')).toBe('abc YWJj');
    expect(redactionForms('abcd')).toContain('abcd');
    expect(redactionForms('abcd').every((f) => f.length >= 4)).toBe(true);
  });

  it('exposes the length of its longest form', () => {
    const r = new Redactor();
    expect(r.maxLength).toBe(0);
    r.add(SECRET, MASK);
    expect(r.maxLength).toBe(Math.max(...redactionForms(SECRET).map((f) => f.length)));
    expect(r.maxLength).toBeGreaterThanOrEqual(encodeURIComponent(SECRET).length);
  });

  it('prefers the longest form where several match', () => {
    const r = new Redactor().add('secret', '[short]').add('secret-long', '[long]');
    expect(r.redact('secret-long secret')).toBe('[long] [short]');
  });

  it('keeps a value masked until each holder has removed it', () => {
    const r = new Redactor().add('shared-value', '[s]').add('shared-value', '[s]');
    r.remove('shared-value');
    expect(r.redact('shared-value')).toBe('[s]');
    r.remove('shared-value');
    expect(r.redact('shared-value')).toBe('shared-value');
    r.remove('shared-value'); // one too many: harmless
    expect(r.maxLength).toBe(0);
  });

  it('masks values with regular expression characters literally', () => {
    const r = new Redactor().add('a.b*c(d)[e]$^|\\/', '[s]');
    expect(r.redact('x a.b*c(d)[e]$^|\\/ y axbbc')).toBe('x [s] y axbbc');
  });

  it('redacts a head of text without ending inside a secret', () => {
    const r = new Redactor().add('0123456789', '[s]');
    const text = 'aaaa0123456789bbbb';
    for (let end = 0; end <= text.length; end++) {
      const { redacted, consumed } = r.redactHead(text, end);
      expect(consumed).toBeGreaterThanOrEqual(end);
      expect(redacted + r.redact(text.slice(consumed))).toBe('aaaa[s]bbbb');
    }
  });

  it('is fast with many secrets', () => {
    const r = new Redactor();
    for (let i = 0; i < 50; i++) r.add(`secret-${i}-${SECRET}-${i}`, `[s${i}]`);
    const line = 'the quick brown fox jumps over the lazy dog 0123456789 '.repeat(20);
    const started = performance.now();
    for (let i = 0; i < 2_000; i++) r.redact(line);
    // About 2 MB of log lines; well under a second even on a slow machine.
    expect(performance.now() - started).toBeLessThan(2_000);
  });
});

/** JobLog with a fake server that keeps what would be sent. */
function jobLog(r: Redactor) {
  const sent: LogEntryUpdate[] = [];
  const log = new JobLog(
    async (updates) => {
      sent.push(...structuredClone(updates));
      return { entries: updates.map((u) => ({ index: u.index, length: u.offset + u.out.length })) };
    },
    r,
    100_000_000,
  );
  const text = (): string => sent.map((u) => u.out).join('');
  return { log, sent, text };
}

describe('Redactor in the job log', () => {
  it('masks a value split across two writes', async () => {
    const { log, text } = jobLog(redactor());
    const e = log.startEntry('step.a', ['sh']);
    e.write('stdout', `before ${SECRET.slice(0, 7)}`);
    await log.flush();
    e.write('stdout', `${SECRET.slice(7)} after\n`);
    e.finish(0, 1);
    await log.flush();
    expect(text()).toBe(`stdout: before ${MASK} after\n`);
  });

  it('masks a value written one character at a time, with flushes in between', async () => {
    const { log, text } = jobLog(redactor());
    const e = log.startEntry('step.a', ['sh']);
    for (const c of `x${SECRET}y${b64(SECRET)}`) {
      e.write('stderr', c);
      await log.flush();
    }
    e.finish(1, 1);
    await log.flush();
    expect(text()).toBe(`stderr: x${MASK}y${MASK}\n`);
  });

  // A partial line over 64 KiB is sent without its newline. Written a character at a time, the secret is where the
  // line passes 64 KiB, at each of these distances from its start.
  for (const shift of [1, 2, 5, 10, 20, 22, 40]) {
    it(`never splits a value when a long partial line is sent early (line passes 64 KiB ${shift} characters into the secret)`, async () => {
      const { log, text } = jobLog(redactor());
      const e = log.startEntry('step.a', ['sh']);
      const filler = 'x'.repeat(64 * 1024 - shift + 1);
      for (let i = 0; i < 3; i++) {
        e.write('stdout', filler);
        for (const c of SECRET) e.write('stdout', c);
      }
      await log.flush();
      // Sent early, before the step ends.
      expect(text().length).toBeGreaterThan(60 * 1024);
      e.write('stdout', 'end\n');
      e.finish(0, 1);
      await log.flush();
      const out = text();
      expect(leaks(out)).toBe(false);
      expect(out.replace(/stdout: |\n/g, '')).toBe(`${`${filler}${MASK}`.repeat(3)}end`);
    });
  }

  it('sends one huge write as a line of its own, with every value masked', async () => {
    const { log, text } = jobLog(redactor());
    const e = log.startEntry('step.a', ['sh']);
    e.write('stdout', `${'z'.repeat(100_000)}${SECRET}${'z'.repeat(100_000)}`);
    await log.flush();
    e.finish(0, 1);
    await log.flush();
    expect(leaks(text())).toBe(false);
    expect(text()).toContain(MASK);
  });

  it('masks the command and the executor notes of an entry', async () => {
    const { log, sent, text } = jobLog(redactor());
    const e = log.startEntry('step.a', ['sh', '-c', `echo ${SECRET}`]);
    e.note(`[dockhand] could not start: ${JSON.stringify({ pw: SECRET })}\nsecond line ${encodeURIComponent(SECRET)}`);
    e.finish(127, 1);
    await log.flush();
    expect(sent[0].command).toEqual(['sh', '-c', `echo ${MASK}`]);
    expect(text()).toBe(`stderr: [dockhand] could not start: {"pw":"${MASK}"}\nstderr: second line ${MASK}\n`);
  });
});

describe('the executor log redactor', () => {
  function logger() {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = pino({ level: 'info', hooks: executorLogHooks('executor-shared-token-0123456789') }, stream);
    return { log, output: () => lines.join('') };
  }

  it("masks the executor token, and a job's values while they are registered, in every line pino writes", () => {
    const { log, output } = logger();
    executorLogRedactor.add(SECRET, MASK).add('dhj_job_token_abcdef', 'JOB_TOKEN_REMOVED');
    log.info(
      { err: `bad request: ${SECRET}`, token: 'dhj_job_token_abcdef' },
      `oops executor-shared-token-0123456789 ${SECRET}`,
    );
    executorLogRedactor.remove(SECRET).remove('dhj_job_token_abcdef');
    const masked = output();
    expect(masked).not.toContain('executor-shared-token-0123456789');
    expect(masked).not.toContain('dhj_job_token_abcdef');
    expect(leaks(masked)).toBe(false);
    // pino wrote the value JSON-escaped (its quotes): that form is masked, and the line is still JSON.
    const line = JSON.parse(masked.trim().split('\n')[0]) as { msg: string; err: string };
    expect(line.msg).toBe(`oops PASSWORD_REMOVED ${MASK}`);
    expect(line.err).toBe(`bad request: ${MASK}`);

    log.info(`after the job: ${SECRET}`);
    expect(output()).toContain(JSON.stringify(`after the job: ${SECRET}`));
  });

  it('keeps a value two jobs share masked until both are done', () => {
    const { log, output } = logger();
    executorLogRedactor.add('shared-secret-value', '${{ secrets.A }}').add('shared-secret-value', '${{ secrets.B }}');
    executorLogRedactor.remove('shared-secret-value');
    log.info('one job done: shared-secret-value');
    executorLogRedactor.remove('shared-secret-value');
    log.info('both done: shared-secret-value');
    const [first, second] = output()
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { msg: string }).msg);
    expect(first).toBe('one job done: ${{ secrets.A }}');
    expect(second).toBe('both done: shared-secret-value');
  });
});
