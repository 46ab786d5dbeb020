// `dockhand build …` (submit, list, show, logs, cancel) and `dockhand build-worker` (what a control plane starts).
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import {
  BUILD_EXIT_CODES,
  buildRequest,
  buildResponses,
  type BuildLogEntry,
  type BuildView,
} from '../../core/builds.js';
import { describeIssues, issuesOf } from '../../core/jobSpec.js';
import { ClientApi, CliError } from '../client.js';
import { openStream, sseMessages } from '../follow.js';
import { ago, print, table } from '../output.js';

type BuildResponse = z.infer<typeof buildResponses.build>;
type BuildDetail = z.infer<typeof buildResponses.buildDetail>;
type BuildsResponse = z.infer<typeof buildResponses.builds>;
type LogsResponse = z.infer<typeof buildResponses.logs>;

function parseBuildId(raw: string): number {
  const id = Number(raw);
  if (!Number.isInteger(id) || id <= 0) throw new CliError(`"${raw}" is not a build id (a positive whole number)`);
  return id;
}

/** `--context URL@COMMIT` for git; anything else is a local folder, uploaded as a tar.gz. */
function gitContext(context: string): { url: string; commit: string } | undefined {
  const m = /^((?:https?|ssh|git|file):\/\/.+)@([0-9a-f]{7,64})$/.exec(context);
  return m ? { url: m[1], commit: m[2] } : undefined;
}

/** The folder as a tar.gz, made by tar (its ownership dropped, so the archive says nothing about this machine). */
function tarGz(dir: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', ['-czf', '-', '--owner=0', '--group=0', '--numeric-owner', '-C', dir, '.'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const chunks: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('error', (e) => reject(new CliError(`cannot run tar to pack ${dir}: ${e.message}`)));
    child.once('close', (code) =>
      code === 0 ? resolve(Buffer.concat(chunks)) : reject(new CliError(`tar could not pack ${dir}: ${err.trim()}`)),
    );
  });
}

function buildLine(b: BuildView): string[] {
  return [
    String(b.id),
    b.phase,
    b.spec.tags[0] + (b.spec.tags.length > 1 ? ` +${b.spec.tags.length - 1}` : ''),
    b.commit?.slice(0, 12) ?? '-',
    b.plane ?? '-',
    String(b.tries),
    ago(b.createdAt),
  ];
}

function entryText(e: BuildLogEntry): string {
  const at = new Date(e.at).toISOString().slice(11, 23);
  if (e.kind === 'phase') return `--- ${at} phase ${e.phase}`;
  if (e.kind === 'system') return `*** ${at} ${e.text}`;
  return e.text;
}

/** Prints the log from `after` until the build is final; returns its final phase. */
export async function followBuild(api: ClientApi, id: number, json: boolean): Promise<BuildView['phase']> {
  let after = 0;
  let failures = 0;
  for (;;) {
    const body = await openStream(api, `/builds/${id}/logs?follow=true&after=${after}`, `build ${id}`);
    failures = 0;
    try {
      for await (const message of sseMessages(body)) {
        const data = JSON.parse(message.data) as Record<string, unknown>;
        if (json) process.stdout.write(`${JSON.stringify({ event: message.event, ...data })}\n`);
        if (message.event === 'entry') {
          const entry = data as unknown as BuildLogEntry;
          after = Math.max(after, entry.seq);
          if (!json) (entry.kind === 'log' ? process.stdout : process.stderr).write(`${entryText(entry)}\n`);
        } else if (message.event === 'end') {
          const end = data as { phase: BuildView['phase']; digest: string | null };
          if (!json) process.stderr.write(`build ${id} ${end.phase}${end.digest ? ` ${end.digest}` : ''}\n`);
          return end.phase;
        }
      }
    } catch (e) {
      if (++failures > 60) throw e;
    }
    await sleep(1_000);
  }
}

export function registerBuildCommands(program: Command): void {
  const build = program
    .command('build')
    .description('Build images on ephemeral workers and push them (uses DOCKHAND_URL and DOCKHAND_TOKEN)');

  build
    .command('submit')
    .description('Build a Dockerfile from a local folder (uploaded) or a git commit (URL@COMMIT) and push its tags')
    .requiredOption(
      '--context <dir|url@commit>',
      'a local folder, or a git URL and commit: https://host/repo.git@<sha>',
    )
    .option('--dockerfile <path>', 'the Dockerfile, relative to the context', 'Dockerfile')
    .requiredOption('--tag <image>', 'REGISTRY/PATH:TAG to push (repeat for more tags of one repository)', collect, [])
    .option('--build-arg <NAME=VALUE>', 'a build argument (repeatable)', collect, [])
    .option(
      '--secret <name>',
      'a secret of the namespace for the build (DOCKER_AUTH_CONFIG logs in to registries)',
      collect,
      [],
    )
    .option('--namespace <namespace>', 'whose build this is (default: your user:NAME)')
    .option('--commit <sha>', "the commit the image is built from (default: the git context's)")
    .option('--follow', 'stream the phases and the log; exit 0 complete, 1 error, 2 cancelled, 3 internal error')
    .option('--json', 'machine-readable output: the build record (with --follow, the events, then the record)')
    .action(
      async (opts: {
        context: string;
        dockerfile: string;
        tag: string[];
        buildArg: string[];
        secret: string[];
        namespace?: string;
        commit?: string;
        follow?: boolean;
        json?: boolean;
      }) => {
        const buildArgs: Record<string, string> = {};
        for (const pair of opts.buildArg) {
          const eq = pair.indexOf('=');
          if (eq <= 0) throw new CliError(`--build-arg ${pair}: give NAME=VALUE`);
          buildArgs[pair.slice(0, eq)] = pair.slice(eq + 1);
        }
        const git = gitContext(opts.context);
        const api = new ClientApi();
        const body: Record<string, unknown> = {
          ...(opts.namespace ? { namespace: opts.namespace } : {}),
          dockerfile: opts.dockerfile,
          tags: opts.tag,
          ...(Object.keys(buildArgs).length ? { buildArgs } : {}),
          ...(opts.secret.length ? { secrets: opts.secret } : {}),
          ...(opts.commit ? { commit: opts.commit } : {}),
        };
        // Check locally first (the server's schema, its messages), with a placeholder for a context not yet uploaded.
        const checked = buildRequest.safeParse({
          ...body,
          context: git ? { git } : { upload: `ctx_${'0'.repeat(32)}` },
        });
        if (!checked.success) throw new CliError(`invalid build:\n${describeIssues(issuesOf(checked.error))}`);
        if (git) body.context = { git };
        else {
          if (!existsSync(opts.context) || !statSync(opts.context).isDirectory())
            throw new CliError(
              `--context ${opts.context}: not a folder, nor a git URL@COMMIT (https://host/repo.git@<sha>)`,
            );
          if (!existsSync(`${opts.context}/${opts.dockerfile}`))
            throw new CliError(
              `--context ${opts.context} has no ${opts.dockerfile} (--dockerfile names it, relative to the context)`,
            );
          const data = await tarGz(opts.context);
          const query = opts.namespace ? `?namespace=${encodeURIComponent(opts.namespace)}` : '';
          const res = await api.fetchRaw('POST', `/builds/contexts${query}`, data, 'application/gzip');
          const uploaded = (await res.json()) as { id?: string; error?: string };
          if (!res.ok || !uploaded.id)
            throw new CliError(`cannot upload the context: ${uploaded.error ?? `HTTP ${res.status}`}`);
          body.context = { upload: uploaded.id };
        }
        const { build: created } = await api.request<BuildResponse>('POST', '/builds', body);
        if (!opts.follow) {
          print(opts.json ?? false, created, () => `submitted build ${created.id} (${created.spec.tags.join(', ')})`);
          return;
        }
        if (!opts.json) process.stderr.write(`submitted build ${created.id} (${created.spec.tags.join(', ')})\n`);
        const phase = await followBuild(api, created.id, opts.json ?? false);
        if (opts.json) {
          process.stdout.write(`${JSON.stringify(await api.request<BuildDetail>('GET', `/builds/${created.id}`))}\n`);
        }
        process.exitCode = BUILD_EXIT_CODES[phase] ?? 3;
      },
    );

  build
    .command('list')
    .description('List builds, newest first')
    .option('--namespace <namespace>')
    .option('--active', 'only builds not yet final')
    .option('--limit <n>', 'how many', '50')
    .option('--json')
    .action(async (opts: { namespace?: string; active?: boolean; limit: string; json?: boolean }) => {
      const params = new URLSearchParams({ limit: opts.limit });
      if (opts.namespace) params.set('namespace', opts.namespace);
      if (opts.active) params.set('active', 'true');
      const { builds } = await new ClientApi().request<BuildsResponse>('GET', `/builds?${params}`);
      print(opts.json ?? false, { builds }, () =>
        builds.length === 0
          ? 'no builds'
          : table([['ID', 'PHASE', 'TAG', 'COMMIT', 'PLANE', 'TRIES', 'CREATED'], ...builds.map(buildLine)]),
      );
    });

  build
    .command('show <id>')
    .description('Show a build: phases with their times, tries (plane, worker, outcome), digest')
    .option('--json')
    .action(async (raw: string, opts: { json?: boolean }) => {
      const detail = await new ClientApi().request<BuildDetail>('GET', `/builds/${parseBuildId(raw)}`);
      print(opts.json ?? false, detail, () => {
        const b = detail.build;
        const lines = [
          `build ${b.id}: ${b.phase}${b.final ? '' : ' (not final)'}`,
          `  namespace:  ${b.namespace}`,
          `  tags:       ${b.spec.tags.join(', ')}`,
          `  context:    ${'git' in b.spec.context ? `${b.spec.context.git.url}@${b.spec.context.git.commit}` : `upload ${b.spec.context.upload}`}`,
          `  dockerfile: ${b.spec.dockerfile}`,
          `  digest:     ${b.digest ?? '-'}`,
          ...(b.message ? [`  message:    ${b.message}`] : []),
          `  tries left: ${b.triesRemaining}`,
          '  phases:',
          ...b.phases.map((p) => `    ${new Date(p.at).toISOString()}  ${p.phase}`),
          '  tries:',
          ...detail.tries.map(
            (t) =>
              `    ${t.number}. ${t.plane || '-'} ${t.executionId ?? ''} ${t.outcome ?? 'running'}${t.message ? `: ${t.message}` : ''}`,
          ),
        ];
        return lines.join('\n');
      });
    });

  build
    .command('logs <id>')
    .description("Print a build's log (phases, the manager's notes, the worker's output)")
    .option('--follow', 'keep printing until the build is final')
    .option('--json')
    .action(async (raw: string, opts: { follow?: boolean; json?: boolean }) => {
      const id = parseBuildId(raw);
      const api = new ClientApi();
      if (opts.follow) {
        const phase = await followBuild(api, id, opts.json ?? false);
        process.exitCode = BUILD_EXIT_CODES[phase] ?? 3;
        return;
      }
      // Page by page: a long log comes in pieces (`next`).
      for (let after = 0; ;) {
        const { entries, next } = await api.request<LogsResponse>('GET', `/builds/${id}/logs?after=${after}`);
        for (const e of entries) process.stdout.write(opts.json ? `${JSON.stringify(e)}\n` : `${entryText(e)}\n`);
        if (next === null) break;
        after = next;
      }
    });

  build
    .command('cancel <id>')
    .description('Cancel a build (not once it is pushing); its worker is stopped')
    .option('--json')
    .action(async (raw: string, opts: { json?: boolean }) => {
      const { build: b } = await new ClientApi().request<BuildResponse>('POST', `/builds/${parseBuildId(raw)}/cancel`);
      print(opts.json ?? false, b, () => `build ${b.id} ${b.phase}`);
    });

  const worker = program
    .command('build-worker')
    .description(
      'Run one build as an ephemeral worker (started by a control plane; the token comes on stdin or a file)',
    );
  // Its options and action live with the worker, which also runs on its own (buildWorker/main.ts).
  worker
    .requiredOption('--server <url>', 'the Dockhand server')
    .option(
      '--token-file <file>',
      'read the registration token from this file (removed after reading) instead of stdin',
    )
    .action(async (opts: { server: string; tokenFile?: string }) => {
      const { runWorkerCommand } = await import('../../buildWorker/main.js');
      await runWorkerCommand(opts);
    });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
