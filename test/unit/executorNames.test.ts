import { describe, expect, it } from 'vitest';
import { instanceWindowMs, mayUseName, nameInUseMessage, type ExecutorInstance } from '../../src/core/executorNames.js';

const holder: ExecutorInstance = { id: 'instance-a', hostname: 'host-a', seenAt: 10_000, windowMs: 3_000 };

describe('executor names', () => {
  it('keeps a name for three heartbeat intervals (5 s when not declared), at most the stall timeout', () => {
    expect(instanceWindowMs(1_000, 25_000)).toBe(3_000);
    expect(instanceWindowMs(undefined, 25_000)).toBe(15_000);
    expect(instanceWindowMs(20_000, 25_000)).toBe(25_000);
    expect(instanceWindowMs(100, 200)).toBe(200);
  });

  it('lets the holder use its name, and another process only when nobody holds it or the holder was silent for its window', () => {
    expect(mayUseName(undefined, 'instance-b', 0)).toBe(true);
    expect(mayUseName(holder, 'instance-a', 99_999)).toBe(true);
    expect(mayUseName(holder, 'instance-b', 12_999)).toBe(false);
    expect(mayUseName(holder, 'instance-b', 13_000)).toBe(true);
  });

  it('names the name, both hosts and the fix', () => {
    expect(nameInUseMessage('builder-1', holder, 'host-b', 12_000)).toBe(
      'executor name "builder-1" is in use by another executor on host host-a (last seen 2s ago); this one runs on host host-b. ' +
        'Give each executor its own name with EXECUTOR_NAME=... (e.g. EXECUTOR_NAME=builder-1-2).',
    );
    expect(nameInUseMessage('builder-1', holder, 'host-a', 10_250)).toContain(
      '(last seen 250ms ago); this one runs on host host-a too.',
    );
    expect(nameInUseMessage('builder-1', holder, undefined, 10_000)).toContain('; this one is another process.');
  });
});
