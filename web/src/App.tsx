import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { ApiError, api, saveToken, savedToken, setUnauthorizedHandler, type Me } from './api';
import { Link, navigate, useLocation } from './router';
import { BuildPage } from './pages/Build';
import { BuildsPage } from './pages/Builds';
import { ExecutorsPage } from './pages/Executors';
import { JobPage } from './pages/Job';
import { JobsPage } from './pages/Jobs';
import { QueuesPage } from './pages/Queues';

export function App() {
  const [token, setToken] = useState(savedToken());
  const [me, setMe] = useState<Me>();
  const [error, setError] = useState<string>();

  const signOut = useCallback(() => {
    saveToken(null);
    setToken(null);
    setMe(undefined);
  }, []);

  useEffect(() => {
    setUnauthorizedHandler(() => {
      signOut();
      setError('Your token was refused (it may have been revoked). Sign in again.');
    });
  }, [signOut]);

  useEffect(() => {
    if (!token || me) return;
    api<Me>('/me', { token })
      .then(setMe)
      .catch((e: Error) => {
        saveToken(null);
        setToken(null);
        setError(
          e instanceof ApiError && e.status === 401
            ? 'That token was not accepted.'
            : `Could not sign in: ${e.message}`,
        );
      });
  }, [token, me]);

  if (!token) {
    return (
      <SignIn
        error={error}
        onToken={(t) => {
          saveToken(t);
          setError(undefined);
          setToken(t);
        }}
      />
    );
  }
  if (!me) return <div className="center muted">Signing in…</div>;
  return <Shell me={me} onSignOut={signOut} />;
}

function SignIn({ error, onToken }: { error?: string; onToken: (token: string) => void }) {
  const [value, setValue] = useState('');
  const submit = (e: FormEvent): void => {
    e.preventDefault();
    if (value.trim()) onToken(value.trim());
  };
  return (
    <div className="center">
      <form className="signin card" onSubmit={submit}>
        <h1>
          <span className="logo" aria-hidden="true" /> Dockhand
        </h1>
        <p className="muted">
          Sign in with an API token (it starts with <code>dha_</code>). Create one with{' '}
          <code>dockhand token create NAME</code>; it is kept in this tab only.
        </p>
        <label htmlFor="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          autoFocus
          value={value}
          onChange={(e) => setValue(e.target.value)}
          placeholder="dha_…"
        />
        {error && (
          <p className="error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={!value.trim()}>
          Sign in
        </button>
      </form>
    </div>
  );
}

const NAV = [
  { to: '/jobs', label: 'Jobs' },
  { to: '/queues', label: 'Queues' },
  { to: '/builds', label: 'Builds' },
  { to: '/executors', label: 'Executors' },
];

function Shell({ me, onSignOut }: { me: Me; onSignOut: () => void }) {
  const { path } = useLocation();
  useEffect(() => {
    if (path === '/' || path === '') navigate('/jobs', true);
  }, [path]);
  const job = /^\/jobs\/(\d+)$/.exec(path);
  const build = /^\/builds\/(\d+)$/.exec(path);
  let page;
  if (job) page = <JobPage key={job[1]} id={Number(job[1])} />;
  else if (path === '/jobs' || path === '/') page = <JobsPage me={me} />;
  else if (path === '/queues') page = <QueuesPage />;
  else if (build) page = <BuildPage key={build[1]} id={Number(build[1])} />;
  else if (path === '/builds') page = <BuildsPage me={me} />;
  else if (path === '/executors') page = <ExecutorsPage me={me} />;
  else
    page = (
      <div className="card">
        <h2>Not found</h2>
        <p>
          There is no page at <code>{path}</code>. <Link to="/jobs">Go to the jobs</Link>.
        </p>
      </div>
    );

  useEffect(() => {
    const section = job ? `Job ${job[1]}` : build ? `Build ${build[1]}` : NAV.find((n) => n.to === path)?.label;
    document.title = section ? `${section} · Dockhand` : 'Dockhand';
  }, [path, job, build]);

  return (
    <div className="app">
      <header className="topbar">
        <Link to="/jobs" className="brand">
          <span className="logo" aria-hidden="true" /> Dockhand
        </Link>
        <nav>
          {NAV.map((n) => (
            <Link key={n.to} to={n.to} className={path === n.to || path.startsWith(`${n.to}/`) ? 'active' : ''}>
              {n.label}
            </Link>
          ))}
        </nav>
        <div className="user">
          <span className="username" data-testid="user">
            {me.user.name}
          </span>
          {me.user.siteAdmin && <span className="badge">site admin</span>}
          <button type="button" className="link" onClick={onSignOut}>
            Sign out
          </button>
        </div>
      </header>
      <main>{page}</main>
    </div>
  );
}
