import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { REDACTED, logRedact } from '../../src/core/logRedact.js';

function logged(obj: Record<string, unknown>): Record<string, unknown> {
  const lines: string[] = [];
  const log = pino({ level: 'info', ...logRedact }, { write: (line: string) => void lines.push(line) });
  log.info(obj, 'message');
  return JSON.parse(lines[0]) as Record<string, unknown>;
}

describe('log redaction', () => {
  it('masks secret keys at the top of a log object and one or two levels down', () => {
    const out = logged({
      token: 'T',
      password: 'P',
      jobId: 7,
      req: { headers: { authorization: 'Bearer A', 'proxy-authorization': 'Basic B', cookie: 'C', host: 'h' } },
      config: { executorsAccessToken: 'E', adminToken: 'D', frontendPassword: 'F', tls: { key: 'K', cert: 'public' } },
    });
    expect(out).toMatchObject({
      token: REDACTED,
      password: REDACTED,
      jobId: 7,
      req: { headers: { authorization: REDACTED, 'proxy-authorization': REDACTED, cookie: REDACTED, host: 'h' } },
      config: {
        executorsAccessToken: REDACTED,
        adminToken: REDACTED,
        frontendPassword: REDACTED,
        tls: { key: REDACTED, cert: 'public' },
      },
    });
    expect(JSON.stringify(out)).not.toMatch(/Bearer A|Basic B|"[TPCEDFK]"/);
  });

  it('never changes the object it was handed (a log call may get live request headers)', () => {
    const headers = { authorization: 'Bearer A' };
    const obj = { req: { headers } };
    logged(obj);
    expect(headers.authorization).toBe('Bearer A');
    expect(obj.req.headers).toBe(headers);
  });

  it('leaves objects without secrets as they are', () => {
    expect(logged({ jobId: 1, nested: { queue: 'q', deeper: { state: 'done' } } })).toMatchObject({
      jobId: 1,
      nested: { queue: 'q', deeper: { state: 'done' } },
    });
  });
});
