// The command plane: operator scripts start, stop and count workers, which is how EC2 or any other cloud plugs in
// (docs/builds.md has an EC2 example). START_COMMAND gets the registration token on its stdin and the rest in
// DOCKHAND_* variables; it must start a worker that runs `dockhand build-worker` with that token, then exit 0.
import { spawn } from 'node:child_process';
import type { CommandPlaneConfig } from '../buildsConfig.js';
import { PlaneError, type ControlPlane, type WorkerLaunch } from './controlPlane.js';

/** Lines of a failing command's stderr kept for the build's log. */
const STDERR_LINES = 5;

export class CommandPlane implements ControlPlane {
  /** Started and not yet stopped by this server: the count when there is no COUNT_COMMAND. */
  private readonly started = new Set<string>();

  constructor(readonly config: CommandPlaneConfig) {}

  get name(): string {
    return this.config.NAME;
  }

  private run(what: string, command: string, env: Record<string, string>, stdin = ''): Promise<{ stdout: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn('/bin/sh', ['-c', command], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', DOCKHAND_PLANE: this.config.NAME, ...env },
        detached: true,
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout = (stdout + d.toString()).slice(-64 * 1024)));
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-64 * 1024)));
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // gone
        }
      }, this.config.COMMAND_TIMEOUT * 1000);
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new PlaneError(`${what}: cannot run it: ${err.message}`));
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) return resolve({ stdout });
        // The token went in on stdin; a script that echoes it still never gets it into the build's log.
        const tail = stderr
          .split('\n')
          .filter(Boolean)
          .slice(-STDERR_LINES)
          .join(' | ')
          .split(stdin.trim() || '\u0000')
          .join('[redacted]');
        const how = signal
          ? `was killed (${signal}; COMMAND_TIMEOUT is ${this.config.COMMAND_TIMEOUT}s)`
          : `exited ${code}`;
        reject(new PlaneError(`${what} ${how}${tail ? `: ${tail}` : ''}`));
      });
      child.stdin.on('error', () => undefined);
      child.stdin.end(stdin);
    });
  }

  async start(launch: WorkerLaunch): Promise<void> {
    await this.run(
      'START_COMMAND',
      this.config.START_COMMAND,
      {
        DOCKHAND_BUILD_ID: String(launch.buildId),
        DOCKHAND_BUILD_TRY: String(launch.tryNumber),
        DOCKHAND_EXECUTION_ID: launch.executionId,
        DOCKHAND_SERVER_URL: launch.serverUrl,
        DOCKHAND_MAX_BUILD_SECONDS: String(launch.maxBuildS),
      },
      `${launch.registrationToken}\n`,
    );
    this.started.add(launch.executionId);
  }

  async stop(executionId: string): Promise<void> {
    await this.run('STOP_COMMAND', this.config.STOP_COMMAND, { DOCKHAND_EXECUTION_ID: executionId });
    this.started.delete(executionId);
  }

  async running(): Promise<number> {
    if (!this.config.COUNT_COMMAND) return this.started.size;
    const { stdout } = await this.run('COUNT_COMMAND', this.config.COUNT_COMMAND, {});
    const n = Number(stdout.trim());
    if (!Number.isInteger(n) || n < 0)
      throw new PlaneError(`COUNT_COMMAND printed ${JSON.stringify(stdout.trim().slice(0, 40))}, not a count`);
    return n;
  }

  async close(): Promise<void> {}
}
