// Schema versions for PostgreSQL, numbered like SQLite's (same meaning per version), applied in order at start
// under an advisory lock so that replicas starting together migrate once. Never edit a released migration.
// Times are epoch milliseconds (BIGINT), as in the Store interface.
export const MIGRATIONS: { version: number; sql: string }[] = [
  {
    version: 1,
    sql: `
CREATE TABLE jobs (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  queue TEXT NOT NULL,
  namespace TEXT NOT NULL,
  spec JSON NOT NULL,
  state TEXT NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  num_failures INTEGER NOT NULL DEFAULT 0,
  num_resets INTEGER NOT NULL DEFAULT 0,
  cancel_requested BOOLEAN NOT NULL DEFAULT false,
  failure_message TEXT,
  executor_name TEXT,
  created_at BIGINT NOT NULL,
  queued_at BIGINT NOT NULL,
  available_at BIGINT NOT NULL,
  started_at BIGINT,
  finished_at BIGINT,
  last_heartbeat_at BIGINT
);
-- Dequeue reads only queued rows in queue order: a partial index keeps its cost flat however many jobs finished.
CREATE INDEX jobs_dequeue ON jobs (queue, available_at, id) WHERE state = 'queued';
CREATE INDEX jobs_processing ON jobs (last_heartbeat_at) WHERE state = 'processing';
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_queue ON jobs (queue, id);

CREATE TABLE job_attempts (
  job_id BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  attempt INTEGER NOT NULL,
  executor_name TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  started_at BIGINT NOT NULL,
  finished_at BIGINT,
  outcome TEXT,
  message TEXT,
  PRIMARY KEY (job_id, attempt)
);

CREATE TABLE log_entries (
  job_id BIGINT NOT NULL,
  attempt INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  key TEXT NOT NULL,
  command JSON NOT NULL,
  start_time BIGINT NOT NULL,
  exit_code INTEGER,
  duration_ms BIGINT,
  length BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, attempt, idx)
);

CREATE TABLE log_chunks (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id BIGINT NOT NULL,
  attempt INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  "offset" BIGINT NOT NULL,
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
  queues TEXT[] NOT NULL,
  max_jobs INTEGER,
  running_jobs INTEGER NOT NULL DEFAULT 0,
  first_seen_at BIGINT NOT NULL,
  last_seen_at BIGINT NOT NULL
);

CREATE TABLE api_tokens (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created_at BIGINT NOT NULL
);
`,
  },
  {
    version: 2,
    sql: `
ALTER TABLE jobs ADD COLUMN docker_auth_config TEXT;
ALTER TABLE executors ADD COLUMN job_cpus DOUBLE PRECISION;
ALTER TABLE executors ADD COLUMN job_memory_bytes BIGINT;
`,
  },
  {
    version: 3,
    sql: `
CREATE TABLE namespace_turns (
  queue TEXT NOT NULL,
  namespace TEXT NOT NULL,
  served_seq BIGINT NOT NULL,
  PRIMARY KEY (queue, namespace)
);
CREATE SEQUENCE namespace_turn_seq;
CREATE INDEX jobs_dequeue_namespace ON jobs (queue, namespace, available_at, id) WHERE state = 'queued';
`,
  },
  {
    version: 4,
    sql: `
CREATE TABLE users (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  site_admin INTEGER NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL
);
CREATE TABLE orgs (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  created_at BIGINT NOT NULL
);
CREATE TABLE org_members (
  org_id BIGINT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
  user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_user ON org_members (user_id);
ALTER TABLE api_tokens ADD COLUMN user_id BIGINT REFERENCES users (id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX api_tokens_user ON api_tokens (user_id);
-- Values are AES-256-GCM ciphertexts ("dh1:<key id>:<base64>"), never plaintext.
CREATE TABLE secrets (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  value TEXT NOT NULL,
  updated_by TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE (namespace, name)
);
CREATE TABLE secret_access_log (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  namespace TEXT NOT NULL,
  name TEXT NOT NULL,
  job_id BIGINT NOT NULL,
  attempt INTEGER NOT NULL,
  executor_name TEXT NOT NULL,
  accessed_at BIGINT NOT NULL
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
-- Queue stats count the jobs that completed or failed in the last hour: only finished jobs, by finish time (queue
-- and state included for index-only scans). Canceled jobs are not counted, so they are left out.
CREATE INDEX jobs_finished ON jobs (finished_at, queue, state) WHERE state IN ('completed', 'failed');
`,
  },
  {
    version: 6,
    sql: `
-- One row the server rewrites to learn whether the database takes writes again after a disk-full or read-only fault.
CREATE TABLE storage_probe (id INTEGER PRIMARY KEY, written_at BIGINT NOT NULL);
`,
  },
  {
    version: 7,
    sql: `
-- The executor process that holds each name (its random instance id), when the server last accepted a call from it,
-- and how long after that it keeps the name; another process under the name is refused until then. NULL: none
-- holds it (only executors from before instance ids have called, or the holder let go when it stopped).
ALTER TABLE executors ADD COLUMN instance_id TEXT;
ALTER TABLE executors ADD COLUMN instance_seen_at BIGINT;
ALTER TABLE executors ADD COLUMN instance_window_ms BIGINT;
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
ALTER TABLE executors ADD COLUMN job_disk_bytes BIGINT;
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
-- Flags are INTEGER 0/1 and JSON is TEXT, as in SQLite: the queries are shared, and bind booleans as 1/0.
CREATE TABLE builds (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
  available_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  started_at BIGINT,
  finished_at BIGINT,
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
  build_id BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
  number INTEGER NOT NULL,
  plane TEXT NOT NULL DEFAULT '',
  execution_id TEXT,
  registration_jti TEXT,
  setup_deadline BIGINT,
  started_at BIGINT NOT NULL,
  registered_at BIGINT,
  last_heartbeat_at BIGINT,
  ended_at BIGINT,
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
  build_id BIGINT NOT NULL REFERENCES builds (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  try_number INTEGER NOT NULL,
  at BIGINT NOT NULL,
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
  build_id BIGINT UNIQUE REFERENCES builds (id) ON DELETE CASCADE,
  bytes BIGINT NOT NULL,
  sha256 TEXT NOT NULL,
  data BYTEA NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX build_contexts_unbound ON build_contexts (created_at) WHERE build_id IS NULL;

-- Image-pushed events, a history clients page through by id; an event stays whatever becomes of its build, so
-- build_id has no foreign key.
CREATE TABLE image_pushes (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  image TEXT NOT NULL,
  tag TEXT NOT NULL,
  digest TEXT NOT NULL,
  repository TEXT NOT NULL,
  commit_sha TEXT,
  build_id BIGINT,
  at BIGINT NOT NULL
);
CREATE INDEX image_pushes_image ON image_pushes (image, id);

-- Named leases with an expiry, so that one server replica at a time runs the build scheduler. The row
-- 'build-queue' is no lease: builds.ts updates it first in each claim and create, serialising them across replicas.
CREATE TABLE leases (
  name TEXT PRIMARY KEY,
  holder TEXT NOT NULL,
  expires_at BIGINT NOT NULL
);
`,
  },
];
