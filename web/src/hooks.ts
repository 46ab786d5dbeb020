import { useCallback, useEffect, useState } from 'react';
import { ApiError, api } from './api';

export interface Loaded<T> {
  data: T | undefined;
  error: ApiError | Error | undefined;
  loading: boolean;
  reload: () => void;
}

/** Loads `route` and again every `refreshMs` while the page is visible; keeps the last answer during reloads. */
export function usePolled<T>(route: string | null, refreshMs = 5000): Loaded<T> {
  const [data, setData] = useState<T>();
  const [error, setError] = useState<ApiError | Error>();
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const reload = useCallback(() => setTick((t) => t + 1), []);

  useEffect(() => {
    if (route === null) return;
    const ctl = new AbortController();
    setLoading(true);
    api<T>(route, { signal: ctl.signal })
      .then((d) => {
        setData(d);
        setError(undefined);
      })
      .catch((e: Error) => {
        if (e.name !== 'AbortError') setError(e);
      })
      .finally(() => setLoading(false));
    // A hidden tab skips its refreshes; the visibilitychange handler below catches up when it is shown again.
    const timer =
      refreshMs > 0
        ? setTimeout(() => {
            if (!document.hidden) reload();
          }, refreshMs)
        : undefined;
    return () => {
      ctl.abort();
      if (timer) clearTimeout(timer);
    };
  }, [route, tick, refreshMs, reload]);

  useEffect(() => {
    const onVisible = (): void => {
      if (!document.hidden) reload();
    };
    document.addEventListener('visibilitychange', onVisible);
    return () => document.removeEventListener('visibilitychange', onVisible);
  }, [reload]);

  return { data, error, loading, reload };
}

/** Re-renders every `ms`, so relative times stay true. */
export function useNow(ms = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}
