import { formatSize } from '../../../src/core/units';
import type { Executor, Me } from '../api';
import { Ago, ErrorBox, PageHeader } from '../components';
import { usePolled, useNow } from '../hooks';

interface ExecutorsAnswer {
  executors: Executor[];
  serverVersion?: string;
}

/** The most one job may use on the executor (0 = unbounded); "–" when its runtime enforces no limits. */
function JobLimits({ e }: { e: Executor }) {
  if (e.jobCpus === null || e.jobMemoryBytes === null)
    return (
      <span className="muted" title="This runtime enforces no per-job limits">
        –
      </span>
    );
  return (
    <div data-testid="job-limits">
      <div>{e.jobCpus ? `${e.jobCpus} ${e.jobCpus === 1 ? 'CPU' : 'CPUs'}` : 'any CPUs'}</div>
      <div>{e.jobMemoryBytes ? `${formatSize(e.jobMemoryBytes)} memory` : 'any memory'}</div>
      {/* An executor from before disk limits reports none; the server lets any disk size through to it. */}
      {e.jobDiskBytes == null ? (
        <div className="muted" title="This executor is from before disk limits and does not report one">
          disk not reported
        </div>
      ) : (
        <div>{e.jobDiskBytes ? `${formatSize(e.jobDiskBytes)} disk` : 'any disk'}</div>
      )}
    </div>
  );
}

function CompatibilityWarning({ e, serverVersion }: { e: Executor; serverVersion?: string }) {
  const server = serverVersion ? `server ${serverVersion}` : 'the server';
  if (e.compatibility === 'outdated') {
    return (
      <div className="warning" data-testid="compat-warning">
        Outdated: executor {e.version} is behind {server}. Upgrade it.
      </div>
    );
  }
  if (e.compatibility === 'version_ahead') {
    return (
      <div className="warning" data-testid="compat-warning">
        Version ahead: executor {e.version} is newer than {server}. Upgrade the server.
      </div>
    );
  }
  return null;
}

export function ExecutorsPage({ me }: { me: Me }) {
  const { data, error, loading } = usePolled<ExecutorsAnswer>(me.user.siteAdmin ? '/executors' : null);
  const now = useNow(1000);
  if (!me.user.siteAdmin) {
    return (
      <>
        <PageHeader title="Executors" />
        <div className="notice" role="alert">
          <strong>Site admins only.</strong> Executors are listed for site admins; ask one to make{' '}
          <code>{me.user.name}</code> a site admin.
        </div>
      </>
    );
  }
  const executors = data?.executors ?? [];
  const flagged = executors.filter((e) => e.compatibility === 'outdated' || e.compatibility === 'version_ahead').length;
  const active = executors.filter((e) => e.active).length;
  return (
    <>
      <PageHeader title="Executors" loading={loading && !data}>
        {data && (
          <span className="muted">
            {active} active of {executors.length}
            {data.serverVersion ? ` · server ${data.serverVersion}` : ''}
          </span>
        )}
      </PageHeader>
      <ErrorBox error={error} />
      {flagged > 0 && (
        <div className="warning banner" role="alert">
          {flagged === 1 ? 'One executor runs' : `${flagged} executors run`} a Dockhand version that does not match the
          server's.
        </div>
      )}
      {data && executors.length === 0 && (
        <div className="empty">
          No executor has sent a heartbeat yet. Start one with <code>dockhand executor</code>.
        </div>
      )}
      {executors.length > 0 && (
        <div className="table-wrap">
          <table className="table" data-testid="executors">
            <thead>
              <tr>
                <th>Name</th>
                <th>Queues</th>
                <th>OS / arch</th>
                <th>Runtime</th>
                <th>Per job</th>
                <th>Dockhand</th>
                <th>Running</th>
                <th>First seen</th>
                <th>Last seen</th>
                <th>Status</th>
              </tr>
            </thead>
            <tbody>
              {executors.map((e) => {
                const flaggedRow = e.compatibility === 'outdated' || e.compatibility === 'version_ahead';
                return (
                  <tr key={e.name} data-executor={e.name} className={flaggedRow ? 'flagged' : ''}>
                    <td>
                      <div className="strong">{e.name}</div>
                      <div className="muted small">
                        {e.hostname}
                        {e.pid != null && ` · pid ${e.pid}`}
                      </div>
                      <CompatibilityWarning e={e} serverVersion={data?.serverVersion} />
                    </td>
                    <td>
                      {e.queues.length ? (
                        e.queues.map((q) => (
                          <span key={q} className="chip">
                            {q}
                          </span>
                        ))
                      ) : (
                        <span className="muted">–</span>
                      )}
                    </td>
                    <td className="nowrap">
                      {e.os} / {e.arch}
                    </td>
                    <td>
                      <div>{e.runtime}</div>
                      {e.runtimeVersion && <div className="muted small">{e.runtimeVersion}</div>}
                    </td>
                    <td className="small nowrap">
                      <JobLimits e={e} />
                    </td>
                    <td className={flaggedRow ? 'warn-text' : ''}>{e.version}</td>
                    <td className="num">
                      {e.runningJobs}
                      {e.maxJobs !== null ? ` / ${e.maxJobs}` : ''}
                    </td>
                    <td>
                      <Ago ms={e.firstSeenAt} now={now} />
                    </td>
                    <td>
                      <Ago ms={e.lastSeenAt} now={now} />
                    </td>
                    <td>
                      {e.active ? <span className="dot ok">active</span> : <span className="dot off">inactive</span>}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
