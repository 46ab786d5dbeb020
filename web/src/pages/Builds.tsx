import { useEffect, useState, type FormEvent } from 'react';
import type { Build, BuildList, Me } from '../api';
import { Ago, ErrorBox, PageHeader, PhaseBadge } from '../components';
import { usePolled, useNow } from '../hooks';
import { Link, navigate, useLocation } from '../router';

const PAGE_SIZE = 50;

function buildsUrl(params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  return s ? `/builds?${s}` : '/builds';
}

/** The first tag, and how many more there are. */
export function tagsSummary(tags: string[]): string {
  return tags.length > 1 ? `${tags[0]} (+${tags.length - 1})` : (tags[0] ?? '');
}

export function shortCommit(commit: string | null): string | null {
  return commit ? commit.slice(0, 12) : null;
}

export function BuildsPage({ me }: { me: Me }) {
  const { search } = useLocation();
  const namespace = search.get('namespace') ?? undefined;
  const active = search.get('active') === 'true' ? 'true' : undefined;
  const before = search.get('before') ?? undefined;
  const filters = { namespace, active };
  const filterKey = JSON.stringify(filters);
  // The pages seen before this one, so "Newer" goes back exactly (the API pages by id).
  const [newer, setNewer] = useState<(string | undefined)[]>([]);
  useEffect(() => setNewer([]), [filterKey]);
  const [draft, setDraft] = useState(namespace ?? '');
  useEffect(() => setDraft(namespace ?? ''), [namespace]);

  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (namespace) query.set('namespace', namespace);
  if (active) query.set('active', active);
  if (before) query.set('before', before);
  const { data, error, loading } = usePolled<BuildList>(`/builds?${query}`);
  const now = useNow(1000);
  const builds = data?.builds ?? [];
  // No cursor in the answer: a full page may have more after its last id.
  const nextBefore = builds.length === PAGE_SIZE ? String(builds[builds.length - 1].id) : undefined;

  const apply = (e?: FormEvent, next = { ...filters, namespace: draft || undefined }): void => {
    e?.preventDefault();
    navigate(buildsUrl(next));
  };

  return (
    <>
      <PageHeader title="Builds" loading={loading && !data} />
      <form className="filters" onSubmit={apply} data-testid="build-filters">
        <label>
          Namespace
          <input
            list="build-namespaces"
            name="namespace"
            value={draft}
            placeholder={me.user.siteAdmin ? 'any' : 'yours'}
            onChange={(e) => setDraft(e.target.value)}
          />
          <datalist id="build-namespaces">
            {me.namespaces.map((n) => (
              <option key={n} value={n} />
            ))}
          </datalist>
        </label>
        <label className="check">
          <input
            type="checkbox"
            name="active"
            checked={!!active}
            onChange={(e) => apply(undefined, { namespace, active: e.target.checked ? 'true' : undefined })}
          />
          Not yet final only
        </label>
        <button type="submit">Filter</button>
        {(namespace || active) && (
          <button type="button" className="link" onClick={() => navigate('/builds')}>
            Clear
          </button>
        )}
      </form>
      <ErrorBox error={error} />
      {data && builds.length === 0 && (
        <div className="empty">
          {before ? 'No older builds.' : 'No builds match.'} Submit one with{' '}
          <code>dockhand build submit --context DIR --tag REGISTRY/PATH:TAG</code>.
        </div>
      )}
      {builds.length > 0 && (
        <div className="table-wrap">
          <table className="table builds" data-testid="builds">
            <thead>
              <tr>
                <th>Build</th>
                <th>Phase</th>
                <th>Tag</th>
                <th>Commit</th>
                <th>Plane</th>
                <th className="num">Tries</th>
                <th>Created</th>
                <th>Namespace</th>
              </tr>
            </thead>
            <tbody>
              {builds.map((b) => (
                <BuildRow key={b.id} build={b} now={now} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      <div className="pager">
        <button
          type="button"
          disabled={!before}
          onClick={() => {
            const stack = [...newer];
            const target = stack.pop();
            setNewer(stack);
            navigate(buildsUrl({ ...filters, before: target }));
          }}
        >
          ← Newer
        </button>
        {before && (
          <button
            type="button"
            className="link"
            onClick={() => {
              setNewer([]);
              navigate(buildsUrl(filters));
            }}
          >
            Newest
          </button>
        )}
        <button
          type="button"
          disabled={!nextBefore}
          onClick={() => {
            setNewer((s) => [...s, before]);
            navigate(buildsUrl({ ...filters, before: nextBefore }));
          }}
        >
          Older →
        </button>
      </div>
    </>
  );
}

function BuildRow({ build: b, now }: { build: Build; now: number }) {
  const commit = shortCommit(b.commit);
  return (
    <tr
      data-build={b.id}
      className="clickable"
      onClick={(e) => {
        if (!(e.target as HTMLElement).closest('a')) navigate(`/builds/${b.id}`);
      }}
    >
      <td className="strong">
        <Link to={`/builds/${b.id}`}>#{b.id}</Link>
      </td>
      <td>
        <PhaseBadge phase={b.phase} final={b.final} />
      </td>
      <td className="mono ellipsis" title={b.spec.tags.join('\n')} data-testid="build-tag">
        {tagsSummary(b.spec.tags)}
      </td>
      <td className="mono" title={b.commit ?? undefined}>
        {commit ?? <span className="muted">–</span>}
      </td>
      <td className="muted">{b.plane ?? '–'}</td>
      <td className="num">{b.tries}</td>
      <td>
        <Ago ms={b.createdAt} now={now} />
        <span className="muted small"> by {b.submittedBy}</span>
      </td>
      <td className="muted">{b.namespace}</td>
    </tr>
  );
}
