import type { QueueStats } from '../api';
import { ErrorBox, PageHeader } from '../components';
import { usePolled, useNow } from '../hooks';
import { Link } from '../router';
import { age } from '../time';

export function QueuesPage() {
  const { data, error, loading } = usePolled<{ queues: QueueStats[] }>('/queues');
  const now = useNow(1000);
  const queues = data?.queues ?? [];
  const count = (n: number | undefined) =>
    n === undefined ? (
      <span className="muted" title="this server does not report it">
        –
      </span>
    ) : (
      n
    );
  return (
    <>
      <PageHeader title="Queues" loading={loading && !data} />
      <ErrorBox error={error} />
      {data && queues.length === 0 && <div className="empty">No queue has queued or running jobs right now.</div>}
      {queues.length > 0 && (
        <div className="table-wrap">
          <table className="table" data-testid="queues">
            <thead>
              <tr>
                <th>Queue</th>
                <th className="num">Queued</th>
                <th>Oldest queued</th>
                <th className="num">Running</th>
                <th className="num">Completed (1 h)</th>
                <th className="num">Failed (1 h)</th>
              </tr>
            </thead>
            <tbody>
              {queues.map((q) => (
                <tr key={q.queue} data-queue={q.queue}>
                  <td className="strong">
                    <Link to={`/jobs?queue=${encodeURIComponent(q.queue)}`}>{q.queue}</Link>
                  </td>
                  <td className="num">{q.queued}</td>
                  <td>
                    {q.oldestQueuedAt === null ? (
                      <span className="muted">–</span>
                    ) : (
                      <span title={new Date(q.oldestQueuedAt).toLocaleString()}>{age(q.oldestQueuedAt, now)}</span>
                    )}
                  </td>
                  <td className="num">{q.processing}</td>
                  <td className="num">{count(q.completedLastHour)}</td>
                  <td className={`num${q.failedLastHour ? ' bad-text' : ''}`}>{count(q.failedLastHour)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </>
  );
}
