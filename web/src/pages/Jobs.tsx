import { useEffect, useState, type FormEvent } from 'react';
import { JOB_STATES, type Job, type Me, type QueueStats } from '../api';
import { Ago, ErrorBox, PageHeader, StateBadge } from '../components';
import { usePolled, useNow } from '../hooks';
import { Link, navigate, useLocation } from '../router';
import { duration } from '../time';

const PAGE_SIZE = 50;
const FILTERS = ['queue', 'state', 'namespace'] as const;

function jobsUrl(params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `/jobs?${s}` : '/jobs';
}

function summary(job: Job): string {
  const steps = job.spec.steps ?? [];
  const first = steps[0];
  const text = first?.run?.split('\n')[0] ?? first?.key ?? '';
  return steps.length > 1 ? `${text}  (+${steps.length - 1} step${steps.length > 2 ? 's' : ''})` : text;
}

function jobDuration(job: Job, now: number): string {
  if (!job.startedAt) return '–';
  return duration((job.finishedAt ?? (job.state === 'processing' ? now : job.startedAt)) - job.startedAt);
}

export function JobsPage({ me }: { me: Me }) {
  const { search } = useLocation();
  const filters = Object.fromEntries(FILTERS.map((f) => [f, search.get(f) ?? undefined])) as Record<
    (typeof FILTERS)[number],
    string | undefined
  >;
  const before = search.get('before') ?? undefined;
  const [newer, setNewer] = useState<(string | undefined)[]>([]);
  const filterKey = JSON.stringify(filters);
  useEffect(() => setNewer([]), [filterKey]);

  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const f of FILTERS) if (filters[f]) query.set(f, filters[f]!);
  if (before) query.set('before', before);
  const { data, error, loading } = usePolled<{ jobs: Job[]; nextBefore: number | null }>(`/jobs?${query}`);
  const queues = usePolled<{ queues: QueueStats[] }>('/queues', 30_000);
  const now = useNow(1000);

  const [draft, setDraft] = useState(filters);
  // Only when the filters in the URL change (filterKey), not on every render's new filters object.
  useEffect(() => setDraft(filters), [filterKey]);

  const apply = (e?: FormEvent, next = draft): void => {
    e?.preventDefault();
    navigate(jobsUrl({ ...next }));
  };
  const older = (): void => {
    if (!data?.nextBefore) return;
    setNewer((s) => [...s, before]);
    navigate(jobsUrl({ ...filters, before: String(data.nextBefore) }));
  };
  const newerPage = (): void => {
    const stack = [...newer];
    const target = stack.pop();
    setNewer(stack);
    navigate(jobsUrl({ ...filters, before: target }));
  };
  const queueNames = [
    ...new Set([...(queues.data?.queues.map((q) => q.queue) ?? []), ...(data?.jobs.map((j) => j.queue) ?? [])]),
  ].sort();

  return (
    <>
      <PageHeader title="Jobs" loading={loading && !data} />
      <form className="filters" onSubmit={apply} data-testid="job-filters">
        <label>
          Queue
          <input
            list="queue-names"
            name="queue"
            value={draft.queue ?? ''}
            placeholder="any"
            onChange={(e) => setDraft({ ...draft, queue: e.target.value || undefined })}
          />
          <datalist id="queue-names">
            {queueNames.map((q) => (
              <option key={q} value={q} />
            ))}
          </datalist>
        </label>
        <label>
          State
          <select
            name="state"
            value={draft.state ?? ''}
            onChange={(e) => apply(undefined, { ...draft, state: e.target.value || undefined })}
          >
            <option value="">any</option>
            {JOB_STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Namespace
          <input
            list="namespaces"
            name="namespace"
            value={draft.namespace ?? ''}
            placeholder={me.user.siteAdmin ? 'any' : 'yours'}
            onChange={(e) => setDraft({ ...draft, namespace: e.target.value || undefined })}
          />
          <datalist id="namespaces">
            {me.namespaces.map((n) => (
              <option key={n} value={n} />
            ))}
          </datalist>
        </label>
        <button type="submit">Filter</button>
        {FILTERS.some((f) => filters[f]) && (
          <button type="button" className="link" onClick={() => navigate('/jobs')}>
            Clear
          </button>
        )}
      </form>
      <ErrorBox error={error} />
      {data && data.jobs.length === 0 && (
        <div className="empty">
          {before ? 'No older jobs.' : 'No jobs match.'} Submit one with{' '}
          <code>dockhand job submit examples/hello.yaml</code>.
        </div>
      )}
      {data && data.jobs.length > 0 && (
        <div className="table-wrap">
          <table className="table jobs" data-testid="jobs">
            <thead>
              <tr>
                <th>Job</th>
                <th>State</th>
                <th>Queue</th>
                <th>Namespace</th>
                <th>Steps</th>
                <th>Executor</th>
                <th>Submitted</th>
                <th>Duration</th>
              </tr>
            </thead>
            <tbody>
              {data.jobs.map((j) => (
                <tr
                  key={j.id}
                  data-job={j.id}
                  className="clickable"
                  onClick={(e) => {
                    if (!(e.target as HTMLElement).closest('a')) navigate(`/jobs/${j.id}`);
                  }}
                >
                  <td className="strong">
                    <Link to={`/jobs/${j.id}`}>#{j.id}</Link>
                  </td>
                  <td>
                    <StateBadge state={j.state} cancelRequested={j.cancelRequested} />
                  </td>
                  <td>{j.queue}</td>
                  <td className="muted">{j.namespace}</td>
                  <td className="mono ellipsis" title={summary(j)}>
                    {summary(j)}
                  </td>
                  <td className="muted">{j.executorName ?? '–'}</td>
                  <td>
                    <Ago ms={j.createdAt} now={now} />
                    {j.submittedBy ? <span className="muted small"> by {j.submittedBy}</span> : null}
                  </td>
                  <td className="num">{jobDuration(j, now)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div className="pager">
        <button
          type="button"
          disabled={!before}
          onClick={() => (newer.length ? newerPage() : navigate(jobsUrl(filters)))}
        >
          ← Newer
        </button>
        {before && (
          <button
            type="button"
            className="link"
            onClick={() => {
              setNewer([]);
              navigate(jobsUrl(filters));
            }}
          >
            Newest
          </button>
        )}
        <button type="button" disabled={!data?.nextBefore} onClick={older}>
          Older →
        </button>
      </div>
    </>
  );
}
