import { describe, expect, it } from 'vitest';
import { executorCompatibility } from '../../src/core/compatibility.js';

describe('executorCompatibility', () => {
  it.each([
    // [executor, server, expected]
    ['0.1.0', '0.1.9', 'up_to_date'], // patch levels are ignored
    ['0.1.9', '0.1.0', 'up_to_date'],
    ['0.2.0', '0.1.0', 'up_to_date'], // one minor ahead
    ['0.2.7', '0.1.0', 'up_to_date'],
    ['0.1.0', '0.2.3', 'up_to_date'], // one minor behind
    ['0.3.0', '0.1.0', 'version_ahead'],
    ['0.1.0', '0.3.0', 'outdated'],
    ['1.0.0', '0.9.0', 'version_ahead'], // the major differs
    ['0.9.0', '1.0.0', 'outdated'],
    ['2.0.0', '1.99.0', 'version_ahead'],
    ['1.0.0', '2.0.0', 'outdated'],
    ['3.40', '3.43', 'outdated'], // the patch level may be left out
    ['3.43', '3.40', 'version_ahead'],
    ['3.42.1', '3.43', 'up_to_date'],
    ['v1.2.3', '1.3.0', 'up_to_date'],
    ['1.2.0-rc.1', '1.3.0', 'up_to_date'], // pre-releases are ignored
    ['1.5.0-rc.1', '1.3.0+build.7', 'version_ahead'],
  ] as const)('%s on a %s server: %s', (executor, server, expected) => {
    expect(executorCompatibility(executor, server)).toBe(expected);
  });

  it.each([
    ['test', '0.1.0'],
    ['0.1.0', 'test'],
    ['0.0.0-dev', '0.1.0'],
    ['0.1.0', '0.0.0-dev'],
    ['0.0.0', '0.1.0'],
    ['1', '1.0.0'],
    ['', '1.0.0'],
    ['1.2.3.4', '1.2.3'],
    ['01.2.3', '1.2.3'],
  ])('%s on a %s server: null (does not parse)', (executor, server) => {
    expect(executorCompatibility(executor, server)).toBeNull();
  });
});
