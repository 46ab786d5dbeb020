import { describe, it, expect } from 'vitest';
import { formatDuration, parseDuration, parseSize } from '../../src/core/units.js';
import { isSafeRelativePath } from '../../src/core/paths.js';

describe('parseDuration', () => {
  it.each([
    ['90s', 90_000],
    ['5m', 300_000],
    ['1h30m', 5_400_000],
    ['250ms', 250],
    ['1d', 86_400_000],
    ['1h0m5s', 3_605_000],
    ['1.5s', 1500],
    ['0.5h', 1_800_000],
    [' 10s ', 10_000],
    ['45', 45_000],
    ['2.5', 2500],
    ['0', 0],
    ['0s', 0],
  ] as const)('%j -> %d ms', (input, ms) => {
    expect(parseDuration(input)).toBe(ms);
  });

  it('reads a bare number as seconds', () => {
    expect(parseDuration(45)).toBe(45_000);
    expect(parseDuration(0.25)).toBe(250);
    expect(parseDuration(0)).toBe(0);
  });

  it.each(['', 'soon', '5 m', '-5s', '5x', 'm5', '1h 30m', '1e3s', 's', '1.s', '.5s', '5sm'])('rejects %j', (input) => {
    expect(parseDuration(input)).toBeUndefined();
  });

  it('rejects negative and non-finite numbers', () => {
    expect(parseDuration(-1)).toBeUndefined();
    expect(parseDuration(Number.NaN)).toBeUndefined();
    expect(parseDuration(Number.POSITIVE_INFINITY)).toBeUndefined();
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0ms'],
    [250, '250ms'],
    [999, '999ms'],
    [1000, '1s'],
    [1500, '1.5s'],
    [59_000, '59s'],
    [60_000, '1m'],
    [90_000, '1m30s'],
    [3_600_000, '1h'],
    [3_605_000, '1h5s'],
    [5_400_000, '1h30m'],
    [86_400_000, '24h'],
  ] as const)('%d ms -> %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it('round-trips through parseDuration for whole seconds', () => {
    for (const ms of [1000, 59_000, 61_000, 3_599_000, 3_600_000, 3_661_000, 7_322_000]) {
      expect(parseDuration(formatDuration(ms))).toBe(ms);
    }
  });

  // Rounding the seconds part must carry into the minutes: 1m59.6s is "2m", never "1m60s".
  it('never shows 60 seconds', () => {
    for (const ms of [59_999, 119_600, 3_599_500, 7_199_999]) {
      expect(formatDuration(ms)).not.toMatch(/(^|[^0-9.])60(\.0)?s$/);
    }
    expect(formatDuration(59_999)).toBe('1m');
    expect(formatDuration(119_600)).toBe('2m');
    expect(formatDuration(3_599_500)).toBe('1h');
  });
});

describe('parseSize', () => {
  it.each([
    ['0', 0],
    ['100', 100],
    ['100b', 100],
    ['1k', 1024],
    ['1K', 1024],
    ['1kb', 1024],
    ['512M', 512 * 2 ** 20],
    ['512m', 512 * 2 ** 20],
    ['512MB', 512 * 2 ** 20],
    ['2G', 2 * 2 ** 30],
    ['1T', 2 ** 40],
    ['1.5Gi', 1.5 * 2 ** 30],
    ['4Mi', 4 * 2 ** 20],
    ['1Ki', 1024],
    ['1 G', 2 ** 30],
    [' 8G ', 8 * 2 ** 30],
    ['0.5k', 512],
  ] as const)('%j -> %d bytes', (input, bytes) => {
    expect(parseSize(input)).toBe(bytes);
  });

  it('takes numbers as bytes, rounded', () => {
    expect(parseSize(4096)).toBe(4096);
    expect(parseSize(1.6)).toBe(2);
    expect(parseSize(0)).toBe(0);
  });

  it.each(['', 'lots', '-1M', '1P', '1e6', 'M', '1.5.5G', '1GG', '1 G B'])('rejects %j', (input) => {
    expect(parseSize(input)).toBeUndefined();
  });

  it('rejects negative and non-finite numbers', () => {
    expect(parseSize(-1)).toBeUndefined();
    expect(parseSize(Number.NaN)).toBeUndefined();
    expect(parseSize(Number.POSITIVE_INFINITY)).toBeUndefined();
  });
});

describe('isSafeRelativePath', () => {
  it.each(['a', 'a.txt', 'dir/file', 'a/b/c/d.json', './a', 'a/./b', '.hidden', '..hidden', 'a..b', 'dir/...', 'a/b/'])(
    'accepts %j',
    (p) => {
      expect(isSafeRelativePath(p)).toBe(true);
    },
  );

  it.each([
    '',
    '/etc/passwd',
    '/',
    '..',
    '../a',
    'a/..',
    'a/../b',
    'a/b/../../..',
    './..',
    'a\\..\\b',
    'a\\b',
    'a\0b',
    '//server/share',
  ])('refuses %j', (p) => {
    expect(isSafeRelativePath(p)).toBe(false);
  });
});
