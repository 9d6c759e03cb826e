"""The SQLite schema, as the migrations that build it: applied in order at start by
SQLiteStore, each once (PRAGMA user_version counts them)."""

from __future__ import annotations

# Migrations are append-only: never edit one that has shipped, add the next.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, secret_hash TEXT NOT NULL,
        cluster TEXT NOT NULL, services TEXT NOT NULL, environments TEXT NOT NULL,
        created_at REAL NOT NULL, expires_at REAL NOT NULL, revoked_at REAL NOT NULL
    );
    CREATE TABLE clusters (id TEXT PRIMARY KEY, created_at REAL NOT NULL);
    CREATE TABLE cluster_environments (
        environment TEXT PRIMARY KEY, cluster TEXT NOT NULL REFERENCES clusters(id)
    );
    CREATE TABLE artifacts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        artifact_name TEXT NOT NULL, kind INTEGER NOT NULL, ref TEXT NOT NULL,
        digest TEXT NOT NULL, tags TEXT NOT NULL, git_repo TEXT NOT NULL,
        git_commit TEXT NOT NULL, ci_run_url TEXT NOT NULL, labels TEXT NOT NULL,
        created_at REAL NOT NULL, created_by TEXT NOT NULL,
        UNIQUE (artifact_name, digest)
    );
    CREATE INDEX artifacts_digest ON artifacts(digest);
    CREATE TABLE deployments (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        service TEXT NOT NULL, environment TEXT NOT NULL, pull_request INTEGER NOT NULL,
        artifact_id TEXT REFERENCES artifacts(id), cluster TEXT NOT NULL, action INTEGER NOT NULL,
        deployment_type TEXT NOT NULL, stack_name TEXT NOT NULL, state INTEGER NOT NULL,
        reason TEXT NOT NULL, request_id TEXT, request_hash TEXT NOT NULL,
        status_message TEXT NOT NULL, agent_id TEXT NOT NULL, attempt INTEGER NOT NULL,
        epoch INTEGER NOT NULL, lease_id TEXT NOT NULL, lease_expires REAL NOT NULL,
        agent_sequence INTEGER NOT NULL, last_sequence INTEGER NOT NULL,
        cancel_requested INTEGER NOT NULL, created_by TEXT NOT NULL,
        created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL NOT NULL,
        manifest_revision TEXT NOT NULL, converge_timeout REAL NOT NULL,
        stack_files TEXT NOT NULL, image_services TEXT NOT NULL,
        manifest_folder TEXT NOT NULL, manifest_settings TEXT NOT NULL
    );
    CREATE UNIQUE INDEX deployments_request_id ON deployments(request_id)
        WHERE request_id IS NOT NULL;
    CREATE INDEX deployments_state ON deployments(state, cluster);
    CREATE INDEX deployments_service ON deployments(service, environment);
    CREATE TABLE events (
        deployment_id TEXT NOT NULL, sequence INTEGER NOT NULL, type INTEGER NOT NULL,
        state INTEGER NOT NULL, phase TEXT NOT NULL, message TEXT NOT NULL,
        agent_id TEXT NOT NULL, attempt INTEGER NOT NULL, time REAL NOT NULL,
        PRIMARY KEY (deployment_id, sequence)
    ) WITHOUT ROWID;
    CREATE TABLE agents (
        agent_id TEXT PRIMARY KEY, cluster TEXT NOT NULL, version TEXT NOT NULL,
        capabilities TEXT NOT NULL, connected_at REAL NOT NULL, last_seen_at REAL NOT NULL
    );
    CREATE TABLE manifest_revisions (
        id TEXT PRIMARY KEY, "commit" TEXT NOT NULL, created_at REAL NOT NULL,
        created_by TEXT NOT NULL, file_count INTEGER NOT NULL, entries TEXT NOT NULL,
        warnings TEXT NOT NULL, synced_seq INTEGER NOT NULL UNIQUE
    );
    CREATE TABLE manifest_files (
        revision_id TEXT NOT NULL REFERENCES manifest_revisions(id), path TEXT NOT NULL,
        content BLOB NOT NULL, PRIMARY KEY (revision_id, path)
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, token_id TEXT NOT NULL,
        token_name TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
        outcome TEXT NOT NULL, detail TEXT NOT NULL, peer TEXT NOT NULL
    );
    """,
    # 2: the audit log names the request and the service; tokens record who created them.
    """
    ALTER TABLE audit ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE audit ADD COLUMN service TEXT NOT NULL DEFAULT '';
    CREATE INDEX audit_time ON audit(time);
    CREATE INDEX audit_service ON audit(service, seq);
    ALTER TABLE tokens ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
    """,
    # 3: the runs of cron jobs, as agents report them (docs/cron.md).
    """
    CREATE TABLE cron_runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL UNIQUE,
        deployment_id TEXT NOT NULL REFERENCES deployments(id), service TEXT NOT NULL,
        environment TEXT NOT NULL, pull_request INTEGER NOT NULL, cluster TEXT NOT NULL,
        stack TEXT NOT NULL, job TEXT NOT NULL, scheduled_for REAL NOT NULL,
        started_at REAL NOT NULL, finished_at REAL NOT NULL, outcome INTEGER NOT NULL,
        exit_code INTEGER, message TEXT NOT NULL, schedule TEXT NOT NULL,
        agent_id TEXT NOT NULL, reported_at REAL NOT NULL
    );
    CREATE INDEX cron_runs_service ON cron_runs(service, environment, seq);
    """,
    # 4: finding the queued deployments of one service+environment+PR (to supersede them)
    # without reading every queued deployment.
    """
    CREATE INDEX deployments_key ON deployments(service, environment, pull_request, state);
    """,
    # 5: a rollback names the deployment it goes back to (it was only in the reason text,
    # `rollback to <id>[: reason]`, as `sami rollback` wrote it: carried over from there).
    """
    ALTER TABLE deployments ADD COLUMN rollback_of TEXT NOT NULL DEFAULT '';
    UPDATE deployments SET rollback_of = substr(reason, 13, 20)
        WHERE reason GLOB 'rollback to dep_[0-9a-f]*'
        AND (length(reason) = 32 OR substr(reason, 33, 1) = ':')
        AND substr(reason, 13, 20) IN (SELECT id FROM deployments);
    """,
    # 6: an agent id names an agent within its cluster: agents are keyed by (cluster, id),
    # so a token of one cluster cannot overwrite another cluster's record of the same id.
    """
    CREATE TABLE agents_by_cluster (
        cluster TEXT NOT NULL, agent_id TEXT NOT NULL, version TEXT NOT NULL,
        capabilities TEXT NOT NULL, connected_at REAL NOT NULL, last_seen_at REAL NOT NULL,
        PRIMARY KEY (cluster, agent_id)
    );
    INSERT INTO agents_by_cluster (cluster, agent_id, version, capabilities, connected_at,
        last_seen_at)
        SELECT cluster, agent_id, version, capabilities, connected_at, last_seen_at FROM agents;
    DROP TABLE agents;
    ALTER TABLE agents_by_cluster RENAME TO agents;
    """,
    # 7: an idempotency key (request_id) is unique per token, not across all tokens: one
    # caller's keys cannot block another's requests. Earlier deployments get the id of the
    # token whose name they record, when exactly one token has that name.
    """
    ALTER TABLE deployments ADD COLUMN created_by_token TEXT NOT NULL DEFAULT '';
    UPDATE deployments SET created_by_token =
        (SELECT id FROM tokens WHERE tokens.name = deployments.created_by)
        WHERE (SELECT count(*) FROM tokens WHERE tokens.name = deployments.created_by) = 1;
    DROP INDEX deployments_request_id;
    CREATE UNIQUE INDEX deployments_token_request_id
        ON deployments(created_by_token, request_id) WHERE request_id IS NOT NULL;
    """,
    # 8: target locks (`sami lock`): no deployment to a locked service/environment is created
    # while the lock holds; service '' locks the whole environment.
    """
    CREATE TABLE target_locks (
        environment TEXT NOT NULL, service TEXT NOT NULL, reason TEXT NOT NULL,
        holder TEXT NOT NULL, holder_token TEXT NOT NULL, created_at REAL NOT NULL,
        expires_at REAL NOT NULL, PRIMARY KEY (environment, service)
    );
    """,
    # 9: notifications (core/notifications.py): targets, the outbox of deliveries written
    # in the transaction of the state change that causes them, and what a receiver called
    # a deployment (GitHub's deployment id).
    """
    CREATE TABLE notify_targets (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, url TEXT NOT NULL,
        secret TEXT NOT NULL, service TEXT NOT NULL, environment TEXT NOT NULL,
        events TEXT NOT NULL, created_by TEXT NOT NULL, created_at REAL NOT NULL
    );
    CREATE TABLE notify_outbox (
        id TEXT PRIMARY KEY, target_id TEXT NOT NULL, target_name TEXT NOT NULL,
        deployment_id TEXT NOT NULL, sequence INTEGER NOT NULL, event TEXT NOT NULL,
        payload TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
        next_attempt_at REAL NOT NULL, claimed_until REAL NOT NULL,
        claimed_by TEXT NOT NULL, status_code INTEGER NOT NULL, last_error TEXT NOT NULL,
        created_at REAL NOT NULL, finished_at REAL NOT NULL
    );
    CREATE INDEX notify_outbox_pending ON notify_outbox(status, next_attempt_at);
    CREATE INDEX notify_outbox_order ON notify_outbox(target_id, deployment_id, sequence);
    CREATE INDEX notify_outbox_recent ON notify_outbox(target_name, created_at);
    CREATE TABLE notify_refs (
        target_id TEXT NOT NULL, deployment_id TEXT NOT NULL, ref TEXT NOT NULL,
        PRIMARY KEY (target_id, deployment_id)
    );
    """,
    # 10: live status (core/live_status.py): what each Sami service runs as its agent last
    # reported it, with its drift; and when each cluster's agent last sent a full report.
    """
    CREATE TABLE live_services (
        cluster TEXT NOT NULL, stack_name TEXT NOT NULL, swarm_service TEXT NOT NULL,
        service TEXT NOT NULL, environment TEXT NOT NULL, pull_request INTEGER NOT NULL,
        deployment_id TEXT NOT NULL, label_digest TEXT NOT NULL, image TEXT NOT NULL,
        desired_replicas INTEGER NOT NULL, running_replicas INTEGER NOT NULL,
        unhealthy_tasks INTEGER NOT NULL, update_state TEXT NOT NULL, update_message TEXT NOT NULL,
        change_time REAL NOT NULL, outside_change TEXT NOT NULL, removed INTEGER NOT NULL,
        reported_at REAL NOT NULL, degraded_since REAL NOT NULL,
        deployed_replicas INTEGER NOT NULL, drift_reason TEXT NOT NULL,
        drift_since REAL NOT NULL, PRIMARY KEY (cluster, stack_name, swarm_service)
    );
    CREATE TABLE live_reports (cluster TEXT PRIMARY KEY, reported_at REAL NOT NULL);
    """,
    # 11: secrets and variables (core/secrets.py, docs/secrets.md): each cluster's age
    # recipients, the versions of each secret (ciphertext only), the variables, and what a
    # deployment recorded of them (JSON: name → version, name → value).
    """
    CREATE TABLE recipients (
        cluster TEXT NOT NULL, recipient TEXT NOT NULL, agent_id TEXT NOT NULL,
        added_by TEXT NOT NULL, added_at REAL NOT NULL, last_seen_at REAL NOT NULL,
        label TEXT NOT NULL, PRIMARY KEY (cluster, recipient)
    );
    CREATE TABLE secret_versions (
        service TEXT NOT NULL, environment TEXT NOT NULL, name TEXT NOT NULL,
        version INTEGER NOT NULL, ciphertext BLOB NOT NULL, recipients TEXT NOT NULL,
        set_by TEXT NOT NULL, set_at REAL NOT NULL, removed_at REAL NOT NULL,
        PRIMARY KEY (service, environment, name, version)
    );
    CREATE TABLE variables (
        service TEXT NOT NULL, environment TEXT NOT NULL, name TEXT NOT NULL,
        value TEXT NOT NULL, set_by TEXT NOT NULL, set_at REAL NOT NULL,
        PRIMARY KEY (service, environment, name)
    );
    ALTER TABLE deployments ADD COLUMN secrets TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE deployments ADD COLUMN variables TEXT NOT NULL DEFAULT '{}';
    """,
]
