// GET …/pods/{name}/log: the apiserver's checks (pod, container, node) and the kubelet's (container state), then
// the container's Docker log (json-file) with stdout and stderr merged in order, as the kubelet serves it.
import type http from 'node:http';
import type Docker from 'dockerode';
import type { PodLogSource } from './apiServer.js';
import type { Registry } from './registry.js';
import { badRequest, fieldErrors as fe, invalid, notFound } from './status.js';
import type { KubeObject } from './util.js';

export class PodLogs implements PodLogSource {
  constructor(
    private readonly registry: Registry,
    private readonly docker: Docker,
    private readonly nodeName: string,
  ) {}

  async serve(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    namespace: string,
    name: string,
    query: URLSearchParams,
    track: (res: http.ServerResponse) => void,
  ): Promise<void> {
    const flag = (key: string) => query.get(key) === 'true' || query.get(key) === '1';
    const int = (key: string) => (query.has(key) ? Number(query.get(key)) : undefined);
    const follow = flag('follow');
    const timestamps = flag('timestamps');
    const previous = flag('previous');
    const limitBytes = int('limitBytes');
    const tailLines = int('tailLines');
    const sinceSeconds = int('sinceSeconds');
    const sinceTime = query.get('sinceTime') ?? undefined;

    // ValidatePodLogOptions runs before anything is looked up.
    const errors = [];
    if (sinceSeconds !== undefined && sinceTime !== undefined) {
      errors.push(fe.forbidden('sinceSeconds', 'at most one of `sinceTime` or `sinceSeconds` may be specified'));
    }
    if (sinceSeconds !== undefined && !(sinceSeconds >= 1))
      errors.push(fe.invalid('sinceSeconds', sinceSeconds, 'must be greater than 0'));
    if (limitBytes !== undefined && !(limitBytes >= 1))
      errors.push(fe.invalid('limitBytes', limitBytes, 'must be greater than 0'));
    if (tailLines !== undefined && !(tailLines >= 0))
      errors.push(fe.invalid('tailLines', tailLines, 'must be greater than or equal to 0'));
    if (errors.length) throw invalid('', 'PodLogOptions', name, errors);
    let since: number | undefined;
    if (sinceTime !== undefined) {
      const ms = Date.parse(sinceTime);
      if (Number.isNaN(ms))
        throw badRequest(`parsing time "${sinceTime}" as "2006-01-02T15:04:05Z07:00": cannot parse`);
      since = Math.floor(ms / 1000); // second precision, inclusive
    } else if (sinceSeconds !== undefined) {
      since = Math.floor(Date.now() / 1000) - sinceSeconds;
    }

    const pod = this.registry.get('pods', namespace, name);
    const container = pickContainer(pod, query.get('container') ?? '');
    if (!pod.spec.nodeName) {
      // Not scheduled yet: no location to stream from, and so no content.
      res.writeHead(204);
      res.end();
      return;
    }
    if (pod.spec.nodeName !== this.nodeName) throw notFound('', 'nodes', pod.spec.nodeName);
    const id = containerId(pod, container, previous);

    const handle = this.docker.getContainer(id);
    const tty = (await handle.inspect().catch(() => undefined))?.Config?.Tty === true;
    const options = {
      stdout: true,
      stderr: true,
      timestamps,
      ...(since !== undefined ? { since } : {}),
      ...(tailLines !== undefined ? { tail: tailLines } : {}),
    };
    let remaining = limitBytes ?? Infinity;
    const write = (chunk: Buffer): boolean => {
      if (remaining <= 0) return false;
      const part = chunk.length > remaining ? chunk.subarray(0, remaining) : chunk;
      remaining -= part.length;
      res.write(part);
      return remaining > 0;
    };

    const stamp = timestamps ? lineStartStamps() : (payload: Buffer) => payload;
    if (!follow) {
      const raw = await handle.logs({ ...options, follow: false }).catch(() => Buffer.alloc(0));
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      write(tty ? raw : Buffer.concat(frames(raw).map(stamp)));
      res.end();
      return;
    }

    const stream = (await handle.logs({ ...options, follow: true })) as NodeJS.ReadableStream & { destroy(): void };
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    track(res);
    const demux = new Demuxer(tty);
    const finish = () => {
      stream.destroy();
      if (!res.writableEnded) res.end();
    };
    stream.on('data', (chunk: Buffer) => {
      for (const payload of demux.push(chunk)) {
        if (!write(stamp(payload))) return finish();
      }
    });
    // The log ends when the container does: Docker ends a follow stream when the container stops.
    stream.on('end', finish);
    stream.on('error', finish);
    res.on('close', () => stream.destroy());
  }
}

/**
 * Docker splits a long line into 16 KiB messages and stamps each; the kubelet (which the CRI splits the same way)
 * stamps a line once, at its start. This keeps the first stamp of a line and drops those of its continuations.
 */
function lineStartStamps(): (payload: Buffer) => Buffer {
  let atLineStart = true;
  return (payload) => {
    const text = payload.toString('latin1');
    const space = text.indexOf(' ');
    const rest = space >= 0 ? text.slice(space + 1) : text;
    const out = atLineStart ? text : rest;
    atLineStart = rest.endsWith('\n');
    return Buffer.from(out, 'latin1');
  };
}

/** The apiserver's container choice: the named one, or the only one; 400 otherwise. */
function pickContainer(pod: KubeObject, requested: string): string {
  const all = [
    ...((pod.spec.initContainers ?? []) as KubeObject[]),
    ...((pod.spec.containers ?? []) as KubeObject[]),
  ].map((c) => c.name as string);
  if (!requested) {
    if ((pod.spec.containers ?? []).length === 1) return pod.spec.containers[0].name;
    throw badRequest(
      `a container name must be specified for pod ${pod.metadata.name}, choose one of: [${all.join(' ')}]`,
    );
  }
  if (!all.includes(requested)) throw badRequest(`container ${requested} is not valid for pod ${pod.metadata.name}`);
  return requested;
}

/** The kubelet's validateContainerLogStatus: which Docker container holds the log, or why there is none. */
function containerId(pod: KubeObject, container: string, previous: boolean): string {
  const statuses = [
    ...((pod.status?.initContainerStatuses ?? []) as KubeObject[]),
    ...((pod.status?.containerStatuses ?? []) as KubeObject[]),
  ];
  const status = statuses.find((s) => s.name === container);
  const podName = pod.metadata.name;
  const strip = (id: string) => id.replace(/^docker:\/\//, '');
  if (!status) throw badRequest(`container "${container}" in pod "${podName}" is waiting to start - no logs yet`);
  if (previous) {
    const id = status.lastState?.terminated?.containerID as string | undefined;
    if (!id) throw badRequest(`previous terminated container "${container}" in pod "${podName}" not found`);
    return strip(id);
  }
  if (status.state?.running) return strip(status.containerID);
  if (status.state?.terminated) {
    const id = (status.state.terminated.containerID ?? status.containerID) as string | undefined;
    if (!id) throw badRequest(`container "${container}" in pod "${podName}" is terminated`);
    return strip(id);
  }
  const reason = status.state?.waiting?.reason as string | undefined;
  if (reason === 'ErrImagePull')
    throw badRequest(`container "${container}" in pod "${podName}" is waiting to start: image can't be pulled`);
  if (reason === 'ImagePullBackOff')
    throw badRequest(
      `container "${container}" in pod "${podName}" is waiting to start: trying and failing to pull image`,
    );
  if (reason) throw badRequest(`container "${container}" in pod "${podName}" is waiting to start: ${reason}`);
  throw badRequest(`container "${container}" in pod "${podName}" is waiting to start - no logs yet`);
}

function frames(raw: Buffer): Buffer[] {
  const demux = new Demuxer(false);
  return demux.push(raw);
}

/** Splits Docker's multiplexed stream (8-byte header: stream, 0, 0, 0, big-endian size) into payloads. */
class Demuxer {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private readonly raw: boolean) {}

  push(chunk: Buffer): Buffer[] {
    if (this.raw) return [chunk];
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Buffer[] = [];
    while (this.pending.length >= 8) {
      const size = this.pending.readUInt32BE(4);
      if (this.pending.length < 8 + size) break;
      out.push(this.pending.subarray(8, 8 + size));
      this.pending = this.pending.subarray(8 + size);
    }
    return out;
  }
}
