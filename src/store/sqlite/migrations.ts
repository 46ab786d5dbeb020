// Schema versions, applied in order at start. Never edit a released migration; add a new one.
export const MIGRATIONS: { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  queue TEXT NOT NULL,
  namespace TEXT NOT NULL,
  spec TEXT NOT NULL,
  state TEXT NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  num_failures INTEGER NOT NULL DEFAULT 0,
  num_resets INTEGER NOT NULL DEFAULT 0,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  failure_message TEXT,
  executor_name TEXT,
  created_at INTEGER NOT NULL,
  queued_at INTEGER NOT NULL,
  available_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  last_heartbeat_at INTEGER
);
CREATE INDEX jobs_dequeue ON jobs (queue, available_at, id) WHERE state = 'queued';
CREATE INDEX jobs_processing ON jobs (last_heartbeat_at) WHERE state = 'processing';
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_queue ON jobs (queue, id);

CREATE TABLE job_attempts (
  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL,
  executor_name TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  outcome TEXT,
  message TEXT,
  PRIMARY KEY (job_id, attempt)
);

CREATE TABLE log_entries (
  job_id INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  key TEXT NOT NULL,
  command TEXT NOT NULL,
  start_time INTEGER NOT NULL,
  exit_code INTEGER,
  duration_ms INTEGER,
  length INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, attempt, idx)
);

-- Output is stored as appended chunks, never rewritten, so a long log costs one insert per flush.
CREATE TABLE log_chunks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  offset INTEGER NOT NULL,
  data TEXT NOT NULL
);
CREATE INDEX log_chunks_job ON log_chunks (job_id, attempt, seq);

CREATE TABLE executors (
  name TEXT PRIMARY KEY,
  hostname TEXT NOT NULL,
  os TEXT NOT NULL,
  arch TEXT NOT NULL,
  version TEXT NOT NULL,
  runtime TEXT NOT NULL,
  runtime_version TEXT,
  queues TEXT NOT NULL,
  max_jobs INTEGER,
  running_jobs INTEGER NOT NULL DEFAULT 0,
  first_seen_at INTEGER NOT NULL,
  last_seen_at INTEGER NOT NULL
);

CREATE TABLE api_tokens (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
);
`,
  },
  {
    version: 2,
    sql: `
-- Registry credentials given with a job; kept apart from the spec so no client API ever returns them.
ALTER TABLE jobs ADD COLUMN docker_auth_config TEXT;
-- The per-job limits an executor enforces (0 = unbounded), so a submit can refuse a job no executor can run.
ALTER TABLE executors ADD COLUMN job_cpus REAL;
ALTER TABLE executors ADD COLUMN job_memory_bytes INTEGER;
`,
  },
  {
    version: 3,
    sql: `
-- Round robin across namespaces inside a queue: when each namespace was last served (a counter, not a time).
CREATE TABLE namespace_turns (
  queue TEXT NOT NULL,
  namespace TEXT NOT NULL,
  served_seq INTEGER NOT NULL,
  PRIMARY KEY (queue, namespace)
);
-- Finds the namespaces with queued jobs in a queue (a skip scan), and each one's oldest available job.
CREATE INDEX jobs_dequeue_namespace ON jobs (queue, namespace, available_at, id) WHERE state = 'queued';
`,
  },
  {
    version: 4,
    sql: `
CREATE TABLE users (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  site_admin INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE TABLE orgs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
);
CREATE TABLE org_members (
  org_id INTEGER NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
  user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_user ON org_members (user_id);
ALTER TABLE api_tokens ADD COLUMN user_id INTEGER REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;
CREATE INDEX api_tokens_user ON api_tokens (user_id);
-- Values are AES-256-GCM ciphertexts ("dh1:<key id>:<base64>"), never plaintext.
CREATE TABLE secrets (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  updated_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  UNIQUE (namespace, name)
);
CREATE TABLE secret_access_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  job_id INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  executor_name TEXT NOT NULL,
  accessed_at INTEGER NOT NULL
);
CREATE INDEX secret_access_log_job ON secret_access_log (job_id);
ALTER TABLE jobs ADD COLUMN submitted_by TEXT;

-- API tokens belong to users; tokens made before users existed go to a site admin named "admin".
INSERT INTO users (name, site_admin, created_at)
  SELECT 'admin', 1, (SELECT min(created_at) FROM api_tokens) WHERE EXISTS (SELECT 1 FROM api_tokens);
UPDATE api_tokens SET user_id = (SELECT id FROM users WHERE name = 'admin');
`,
  },
  {
    version: 5,
    sql: `
-- Queue stats count the jobs that completed or failed in the last hour: this index holds only finished jobs by
-- finish time (queue and state included, so the count reads the index alone), so that count costs the last hour's
-- jobs, however many millions finished before. Canceled jobs are not counted, so they are left out.
CREATE INDEX jobs_finished ON jobs (finished_at, queue, state) WHERE state IN ('completed', 'failed');
`,
  },
  {
    version: 6,
    sql: `
-- One row the server rewrites to learn whether the database takes writes again after a disk-full or read-only fault.
CREATE TABLE storage_probe (id INTEGER PRIMARY KEY, written_at INTEGER NOT NULL);
`,
  },
  {
    version: 7,
    sql: `
-- The executor process that holds each name (its random instance id), when the server last accepted a call from it,
-- and how long after that it keeps the name; another process under the name is refused until then. NULL: none
-- holds it (only executors from before instance ids have called, or the holder let go when it stopped).
ALTER TABLE executors ADD COLUMN instance_id TEXT;
ALTER TABLE executors ADD COLUMN instance_seen_at INTEGER;
ALTER TABLE executors ADD COLUMN instance_window_ms INTEGER;
`,
  },
  {
    version: 8,
    sql: `
-- Why an attempt, and a job, did not complete (core/failureReasons.ts); null for rows from before.
ALTER TABLE jobs ADD COLUMN failure_reason TEXT;
ALTER TABLE job_attempts ADD COLUMN failure_reason TEXT;
`,
  },
  {
    version: 9,
    sql: `
-- The per-job disk limit an executor enforces (0 = unbounded); null for executors from before that reported none.
ALTER TABLE executors ADD COLUMN job_disk_bytes INTEGER;
`,
  },
  {
    version: 10,
    sql: `
-- The process id, on its host, of the executor process last heard under each name; null for executors from before.
ALTER TABLE executors ADD COLUMN pid INTEGER;
`,
  },
  {
    version: 11,
    sql: `
-- Image builds (store/builds.ts), the queue the build scheduler claims from. spec is the submitted build as JSON;
-- final is set once the phase can no longer change; tries counts the workers claimed so far and tries_remaining
-- those it may still use; failed_planes (a JSON array) names the planes whose worker never registered for it.
CREATE TABLE builds (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  namespace TEXT NOT NULL,
  repository TEXT NOT NULL,
  phase TEXT NOT NULL,
  final INTEGER NOT NULL DEFAULT 0,
  spec TEXT NOT NULL,
  commit_sha TEXT,
  tries_remaining INTEGER NOT NULL,
  tries INTEGER NOT NULL DEFAULT 0,
  plane TEXT,
  digest TEXT,
  message TEXT,
  submitted_by TEXT NOT NULL,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  available_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  failed_planes TEXT NOT NULL DEFAULT '[]'
);
-- A claim reads the builds that are not final, oldest first: a partial index keeps it flat however many finished.
CREATE INDEX builds_claimable ON builds (id) WHERE final = 0;
-- A repository's builds run in submission order: the claim looks for an older one not yet final.
CREATE INDEX builds_repository_open ON builds (repository, id) WHERE final = 0;
-- Listing a namespace's builds, and counting its queued ones against its cap.
CREATE INDEX builds_namespace ON builds (namespace, id);

-- One row per worker a build was given (Quay's build job): the fence every worker call is checked against. A try
-- is current until ended_at is set; the job token (stored hashed) is valid only while it is.
CREATE TABLE build_tries (
  build_id INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
  number INTEGER NOT NULL,
  plane TEXT NOT NULL DEFAULT '',
  execution_id TEXT,
  registration_jti TEXT,
  setup_deadline INTEGER,
  started_at INTEGER NOT NULL,
  registered_at INTEGER,
  last_heartbeat_at INTEGER,
  ended_at INTEGER,
  outcome TEXT,
  message TEXT,
  worker_stopped INTEGER NOT NULL DEFAULT 0,
  job_token_hash TEXT UNIQUE,
  PRIMARY KEY (build_id, number)
);
-- Unended tries are few (at most the allowed worker count): the claim's repository check, the worker cap and the
-- expiry sweep read only them.
CREATE INDEX build_tries_unended ON build_tries (build_id) WHERE ended_at IS NULL;
-- Ended tries whose worker the scheduler has still to stop.
CREATE INDEX build_tries_unstopped ON build_tries (ended_at) WHERE worker_stopped = 0 AND execution_id IS NOT NULL;

-- A build's log: phase changes, worker output and system notes, numbered per build so a follower resumes by seq.
CREATE TABLE build_logs (
  build_id INTEGER NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  try_number INTEGER NOT NULL,
  at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  text TEXT NOT NULL,
  phase TEXT,
  PRIMARY KEY (build_id, seq)
);
-- Every build view shows its phase history: the phase entries alone, without reading the whole log.
CREATE INDEX build_logs_phases ON build_logs (build_id, seq) WHERE kind = 'phase';

-- Uploaded contexts (tar.gz), kept in the database so every replica can serve them; bound to the build that names
-- one (once), deleted when that build is final or when none named it in time.
CREATE TABLE build_contexts (
  id TEXT PRIMARY KEY,
  namespace TEXT NOT NULL,
  build_id INTEGER UNIQUE REFERENCES builds (id) ON DELETE CASCADE,
  bytes INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  data BLOB NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX build_contexts_unbound ON build_contexts (created_at) WHERE build_id IS NULL;

-- Image-pushed events, a history clients page through by id; an event stays whatever becomes of its build, so
-- build_id has no foreign key.
CREATE TABLE image_pushes (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  image TEXT NOT NULL,
  tag TEXT NOT NULL,
  digest TEXT NOT NULL,
  repository TEXT NOT NULL,
  commit_sha TEXT,
  build_id INTEGER,
  at INTEGER NOT NULL
);
CREATE INDEX image_pushes_image ON image_pushes (image, id);

-- Named leases with an expiry, so that one server replica at a time runs the build scheduler. The row
-- 'build-queue' is no lease: builds.ts updates it first in each claim and create, serialising them across replicas.
CREATE TABLE leases (
  name TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
`,
  },
];
