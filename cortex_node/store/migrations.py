"""Numbered schema migrations; PRAGMA user_version records how many have run.

Never edit a migration that has shipped: append a new one. Table and column names of the
original Swarm design are kept (DESIGN §6); extra columns are ours.
"""

MIGRATIONS: list[list[str]] = [
    # 1: the three tables of the design, plus usage buckets and node events
    [
        """CREATE TABLE nodes (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            tier TEXT NOT NULL,
            status TEXT NOT NULL,
            capabilities TEXT NOT NULL DEFAULT '[]',
            version TEXT NOT NULL DEFAULT '',
            group_name TEXT NOT NULL DEFAULT 'default',
            last_heartbeat TEXT,
            registered_at TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            a2a_endpoint TEXT,
            labels TEXT NOT NULL DEFAULT '{}',
            metrics_json TEXT NOT NULL DEFAULT '{}',
            cpu_percent REAL NOT NULL DEFAULT 0,
            memory_used_mb REAL NOT NULL DEFAULT 0,
            memory_total_mb REAL NOT NULL DEFAULT 0,
            active_sessions INTEGER NOT NULL DEFAULT 0,
            active_processes INTEGER NOT NULL DEFAULT 0,
            host TEXT,
            port INTEGER,
            boot_id TEXT,
            lifecycle TEXT NOT NULL DEFAULT 'active',
            is_self INTEGER NOT NULL DEFAULT 0,
            drained INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE UNIQUE INDEX nodes_endpoint ON nodes (endpoint)",
        """CREATE TABLE swarm_directives (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            directive_id TEXT NOT NULL,
            source_node_id TEXT NOT NULL,
            target_node_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            payload TEXT NOT NULL DEFAULT '{}',
            priority TEXT NOT NULL DEFAULT 'normal',
            status TEXT NOT NULL,
            output TEXT,
            error TEXT,
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            duration_ms INTEGER NOT NULL DEFAULT 0,
            tool_calls INTEGER NOT NULL DEFAULT 0,
            parent_directive_id TEXT,
            ttl_ms INTEGER NOT NULL,
            dispatched_at TEXT,
            completed_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            role TEXT NOT NULL DEFAULT 'outbound',
            UNIQUE (directive_id, role)
        )""",
        "CREATE INDEX swarm_directives_status ON swarm_directives (status, id)",
        """CREATE TABLE swarm_resource_snapshots (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            node_id TEXT NOT NULL,
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            tool_calls INTEGER NOT NULL DEFAULT 0,
            cpu_ms REAL NOT NULL DEFAULT 0,
            cpu_percent REAL NOT NULL DEFAULT 0,
            memory_used_mb REAL NOT NULL DEFAULT 0,
            memory_total_mb REAL NOT NULL DEFAULT 0,
            disk_used_mb REAL NOT NULL DEFAULT 0,
            disk_total_mb REAL NOT NULL DEFAULT 0,
            active_sessions INTEGER NOT NULL DEFAULT 0,
            active_processes INTEGER NOT NULL DEFAULT 0,
            uptime_seconds REAL NOT NULL DEFAULT 0,
            snapshot_at TEXT NOT NULL
        )""",
        "CREATE INDEX swarm_resource_snapshots_node ON swarm_resource_snapshots (node_id, id)",
        # Running aggregate of counter increases per node and UTC hour: the 24 h report reads
        # at most 25 rows per node instead of scanning every snapshot.
        """CREATE TABLE swarm_usage_hourly (
            node_id TEXT NOT NULL,
            hour_start TEXT NOT NULL,
            tokens_in INTEGER NOT NULL DEFAULT 0,
            tokens_out INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            tool_calls INTEGER NOT NULL DEFAULT 0,
            cpu_ms REAL NOT NULL DEFAULT 0,
            peak_memory_mb REAL NOT NULL DEFAULT 0,
            snapshots INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (node_id, hour_start)
        )""",
        """CREATE TABLE swarm_node_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            node_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            detail TEXT NOT NULL DEFAULT '',
            at TEXT NOT NULL
        )""",
        "CREATE INDEX swarm_node_events_node ON swarm_node_events (node_id, id)",
        # sync_state: a last-writer-wins map per namespace; version = (hlc, origin node id)
        """CREATE TABLE swarm_state (
            namespace TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            hlc INTEGER NOT NULL,
            origin TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (namespace, key)
        )""",
        # forward_message inbox: kept until delivered to an agent of the session (or agent)
        """CREATE TABLE swarm_messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            directive_id TEXT,
            session_id TEXT,
            agent_id TEXT,
            source_node_id TEXT NOT NULL,
            message TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL,
            delivered_at TEXT
        )""",
        "CREATE INDEX swarm_messages_session ON swarm_messages (session_id, id)",
    ],
    # 2: the usage vector is the same everywhere: snapshots keep the processes' peak memory,
    #    directive rows the CPU time and peak memory of what they ran
    [
        "ALTER TABLE swarm_resource_snapshots ADD COLUMN peak_memory_mb REAL NOT NULL DEFAULT 0",
        "ALTER TABLE swarm_directives ADD COLUMN cpu_ms REAL NOT NULL DEFAULT 0",
        "ALTER TABLE swarm_directives ADD COLUMN peak_memory_mb REAL NOT NULL DEFAULT 0",
    ],
]
