// The SSE parser the CLI's follower and the web UI's log view share.
import { describe, expect, it } from 'vitest';
import { SseParser, jobStreamEvent, type SseMessage } from '../../src/core/sse.js';

const STREAM =
  'event: attempt\ndata: {"attempt":1}\n\n' +
  ': keepalive\n\n' +
  'event: output\r\ndata: {"index":0,"offset":0,"data":"stdout: h\\u00e9\\n"}\r\n\r\n' +
  'data: first\ndata: second\n\n' +
  'event: end\ndata: {"state":"completed"}\n\n';

function parse(chunks: string[]): SseMessage[] {
  const parser = new SseParser();
  const messages: SseMessage[] = [];
  for (const chunk of chunks) parser.push(chunk, (m) => messages.push(m));
  return messages;
}

describe('SseParser', () => {
  it('reads events, CRLF lines, comments and multi-line data', () => {
    expect(parse([STREAM])).toEqual([
      { event: 'attempt', data: '{"attempt":1}' },
      { event: 'output', data: '{"index":0,"offset":0,"data":"stdout: h\\u00e9\\n"}' },
      { event: 'message', data: 'first\nsecond' },
      { event: 'end', data: '{"state":"completed"}' },
    ]);
  });

  it('gives the same messages however the stream is cut', () => {
    const whole = parse([STREAM]);
    for (let cut = 1; cut < STREAM.length; cut++) {
      expect(parse([STREAM.slice(0, cut), STREAM.slice(cut)]), `cut at ${cut}`).toEqual(whole);
    }
    expect(parse([...STREAM])).toEqual(whole);
  });

  it("types a job stream's messages, and leaves others (from a newer server) out", () => {
    const [attempt, output, other, end] = parse([STREAM]).map(jobStreamEvent);
    expect(attempt).toEqual({ event: 'attempt', data: { attempt: 1 } });
    expect(output).toEqual({ event: 'output', data: { index: 0, offset: 0, data: 'stdout: hé\n' } });
    expect(other).toBeUndefined();
    expect(end).toEqual({ event: 'end', data: { state: 'completed' } });
  });
});
