// One worker process of a peer job runner (graphile-worker or BullMQ), started by bench/peers.ts with an IPC
// channel: `node dist-bench/bench/peerWorker.js PEER MODE` with its settings in PEER_* environment variables.
// Its handler is a no-op. In `throughput` mode it reports how many jobs it has run (every 20 ms while that number
// changes); in `latency` mode it sends a message the moment each handler starts, so the parent times
// enqueue → handler with one clock. It says `ready` once it is waiting for jobs, and stops on `stop` or SIGTERM.
import { Worker as BullWorker } from 'bullmq';
import { Logger, run, type Runner } from 'graphile-worker';

export type PeerName = 'graphile' | 'bullmq';
export type WorkerMode = 'throughput' | 'latency';

export type FromWorker = { type: 'ready' } | { type: 'ran'; count: number } | { type: 'hit' } | { type: 'stopped' };
export type ToWorker = { type: 'stop' } | { type: 'flush' };

const [peer, mode] = process.argv.slice(2) as [PeerName, WorkerMode];
const env = (name: string): string => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`peerWorker: ${name} is not set`);
  return v;
};

let count = 0;
let reported = 0;
const send = (m: FromWorker): void => {
  process.send?.(m);
};
const report = (): void => {
  if (count !== reported) {
    reported = count;
    send({ type: 'ran', count });
  }
};
const handler = async (): Promise<void> => {
  if (mode === 'latency') send({ type: 'hit' });
  count++;
};

let stop: () => Promise<void>;

if (peer === 'graphile') {
  const runner: Runner = await run({
    connectionString: env('PEER_PG_URL'),
    concurrency: Number(env('PEER_CONCURRENCY')),
    maxPoolSize: Number(env('PEER_POOL')),
    pollInterval: Number(env('PEER_POLL_MS')),
    noHandleSignals: true,
    // Only errors: its per-job info lines would cost more than the no-op jobs.
    logger: new Logger(() => (level, message) => {
      if (level === 'error') console.error(`graphile-worker: ${message}`);
    }),
    taskList: { noop: handler },
  });
  stop = () => runner.stop();
} else {
  const worker = new BullWorker(env('PEER_QUEUE'), handler, {
    connection: { host: '127.0.0.1', port: Number(env('PEER_REDIS_PORT')), maxRetriesPerRequest: null },
    concurrency: Number(env('PEER_CONCURRENCY')),
    autorun: false,
  });
  worker.on('error', (err) => console.error(`bullmq worker: ${err.message}`));
  void worker.run();
  await worker.waitUntilReady();
  stop = () => worker.close();
}

const timer = setInterval(report, 20);
let stopping = false;
const shutdown = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  await stop();
  report();
  send({ type: 'stopped' });
  process.disconnect?.();
  process.exit(0);
};
process.on('message', (m: ToWorker) => {
  if (m.type === 'stop') void shutdown();
  else if (m.type === 'flush') {
    reported = -1;
    report();
  }
});
process.on('SIGTERM', () => void shutdown());
process.on('disconnect', () => void shutdown());
send({ type: 'ready' });
