//! The SQL backend over `sqlx::Any`: opening SQLite and PostgreSQL,
//! migrations, and the one writer. The aggregates (tenants.rs, audit.rs, ...)
//! implement the store traits for [`SqlStore`] with the queries of each.

use std::sync::Once;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Transaction};

use crate::dialect::*;
use crate::{Result, StoreError, log};

/// Versioned migrations per backend, applied in order, each in its own transaction.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_revocation.sql")),
    (3, include_str!("../migrations/sqlite/0003_merkle_audit.sql")),
    (4, include_str!("../migrations/sqlite/0004_incidents.sql")),
    (5, include_str!("../migrations/sqlite/0005_drop_spki_index.sql")),
    (6, include_str!("../migrations/sqlite/0006_blocked_keys.sql")),
    (7, include_str!("../migrations/sqlite/0007_seen_signatures.sql")),
    (8, include_str!("../migrations/sqlite/0008_audit_salt.sql")),
    (9, include_str!("../migrations/sqlite/0009_issued_requests.sql")),
    (10, include_str!("../migrations/sqlite/0010_access.sql")),
    (11, include_str!("../migrations/sqlite/0011_approvals.sql")),
    (12, include_str!("../migrations/sqlite/0012_custody.sql")),
    (13, include_str!("../migrations/sqlite/0013_signatures.sql")),
    (14, include_str!("../migrations/sqlite/0014_acme.sql")),
    (15, include_str!("../migrations/sqlite/0015_tenant_custody.sql")),
    (16, include_str!("../migrations/sqlite/0016_audit_by_object.sql")),
    (17, include_str!("../migrations/sqlite/0017_inventory_search.sql")),
    (18, include_str!("../migrations/sqlite/0018_approval_refusal.sql")),
];

/// The PostgreSQL migrations: the same schema in its types.
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_merkle_audit.sql")),
    (3, include_str!("../migrations/postgres/0003_incidents.sql")),
    (4, include_str!("../migrations/postgres/0004_drop_spki_index.sql")),
    (5, include_str!("../migrations/postgres/0005_blocked_keys.sql")),
    (6, include_str!("../migrations/postgres/0006_seen_signatures.sql")),
    (7, include_str!("../migrations/postgres/0007_audit_salt.sql")),
    (8, include_str!("../migrations/postgres/0008_issued_requests.sql")),
    (9, include_str!("../migrations/postgres/0009_access.sql")),
    (10, include_str!("../migrations/postgres/0010_approvals.sql")),
    (11, include_str!("../migrations/postgres/0011_custody.sql")),
    (12, include_str!("../migrations/postgres/0012_signatures.sql")),
    (13, include_str!("../migrations/postgres/0013_acme.sql")),
    (14, include_str!("../migrations/postgres/0014_tenant_custody.sql")),
    (15, include_str!("../migrations/postgres/0015_audit_by_object.sql")),
    (16, include_str!("../migrations/postgres/0016_inventory_search.sql")),
    (17, include_str!("../migrations/postgres/0017_approval_refusal.sql")),
];

/// A [`Store`] on a SQL database.
#[derive(Clone, Debug)]
pub struct SqlStore {
    /// Readers.
    pub(crate) pool: AnyPool,
    /// The one connection that writes. SQLite drops a connection's page cache
    /// whenever another connection has written, so writes rotating over a
    /// pool started every commit cold; one writer keeps its cache warm.
    pub(crate) writer: AnyPool,
    pub(crate) engine: Engine,
    /// The audit tree's edge after this store's last append (shared by its clones).
    pub(crate) edge: std::sync::Arc<crate::log::EdgeCache>,
    /// The SQLite file and the identity (device, inode) it had when opened,
    /// to notice it deleted or replaced under a running process.
    pub(crate) file: Option<(std::path::PathBuf, (u64, u64))>,
}

impl SqlStore {
    /// Opens (creating if needed) the SQLite database at `path` in WAL mode and migrates it.
    ///
    /// Commits are `synchronous=FULL`: a transaction that returned is on disk.
    pub async fn open_sqlite(path: &std::path::Path) -> Result<SqlStore> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let location = path.display().to_string();
        let url = format!("sqlite://{location}?mode=rwc");
        let open = |source| StoreError::Open { location: location.clone(), source };
        // A new database is created owner-only (and never through a planted
        // symlink); SQLite gives its -wal and -shm files the database's mode.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(open(sqlx::Error::Io(e))),
            }
        }
        // One plain connection reads the schema first: a damaged file fails
        // here with SQLite's own code (the pools below would retry a failing
        // connection until their timeout and report only that).
        {
            use sqlx::Connection;
            let mut probe = sqlx::AnyConnection::connect(&url).await.map_err(open)?;
            sqlx::query("SELECT count(*) FROM sqlite_master").fetch_one(&mut probe).await.map_err(open)?;
            let _ = probe.close().await;
        }
        let options = |max| {
            // No ping before each acquire: a SQLite connection is a local
            // file that does not drop, and the ping was one more round trip
            // to the connection's worker thread on every commit.
            AnyPoolOptions::new().max_connections(max).test_before_acquire(false).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    // Deleted and overwritten content (a destroyed key's sealed
                    // blob) is zeroed in the file, not left in free space.
                    conn.execute("PRAGMA secure_delete = ON").await?;
                    // Serials and SPKI hashes are random keys, so their index
                    // pages are touched at random: the default 2 MiB cache made
                    // issuance slow down by half past 70k certificates. 64 MiB
                    // holds the hot indexes of a few million certificates.
                    conn.execute("PRAGMA cache_size = -65536").await?;
                    // Checkpoint every 64 MiB of WAL instead of 4 MiB: each
                    // checkpoint rewrites the random index pages it touched, so
                    // fewer, larger ones cost less per certificate.
                    conn.execute("PRAGMA wal_autocheckpoint = 16384").await?;
                    Ok(())
                })
            })
        };
        let writer = options(1).connect(&url).await.map_err(open)?;
        writer.execute("PRAGMA journal_mode = WAL").await.map_err(open)?;
        let pool = options(4).connect(&url).await.map_err(open)?;
        let identity = {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path).map_err(|e| open(sqlx::Error::Io(e)))?;
            (meta.dev(), meta.ino())
        };
        let store = SqlStore {
            pool,
            writer,
            engine: Engine::Sqlite,
            edge: Default::default(),
            file: Some((path.to_path_buf(), identity)),
        };
        store.migrate(SQLITE_MIGRATIONS).await?;
        let mut tx = store.write().await?;
        log::backfill(store.log(), &mut tx).await?;
        tx.commit().await.map_err(StoreError::db("commit the audit backfill"))?;
        Ok(store)
    }

    /// Opens a PostgreSQL database by URL (`postgres://user@host/db`, or
    /// `postgres:///db?host=/socket/dir`) and migrates it. Several custos
    /// nodes share one; writes from all of them are serialized by an
    /// advisory lock, reads run in parallel.
    pub async fn open_postgres(url: &str) -> Result<SqlStore> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let location = redact(url);
        let open = |source| StoreError::Open { location: location.clone(), source };
        let options =
            |max| AnyPoolOptions::new().max_connections(max).acquire_timeout(std::time::Duration::from_secs(5));
        let writer = options(2).connect(url).await.map_err(open)?;
        let pool = options(8).connect(url).await.map_err(open)?;
        let store = SqlStore { pool, writer, engine: Engine::Postgres, edge: Default::default(), file: None };
        // A database already at the latest version is not touched: a node
        // with a least-privilege role has no right to run DDL, even a no-op.
        let latest = POSTGRES_MIGRATIONS.last().map_or(0, |(v, _)| *v);
        let current: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
            .fetch_one(&store.pool)
            .await
            .ok()
            .flatten();
        if current == Some(latest) {
            return Ok(store);
        }
        // Two nodes starting together must not both migrate.
        let mut tx = store.write().await?;
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(StoreError::db("create the migrations table"))?;
        tx.commit().await.map_err(StoreError::db("commit the migrations table"))?;
        store.migrate(POSTGRES_MIGRATIONS).await?;
        Ok(store)
    }

    /// Opens the database a location names: a `postgres://` or
    /// `postgresql://` URL, or else the path of a SQLite file.
    pub async fn open(location: &str) -> Result<SqlStore> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            SqlStore::open_postgres(location).await
        } else {
            SqlStore::open_sqlite(std::path::Path::new(location)).await
        }
    }

    /// Closes the pools, waiting for connections to finish.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn migrate(&self, migrations: &[(i64, &str)]) -> Result<()> {
        self.writer
            .execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .await
            .map_err(StoreError::db("create the migrations table"))?;
        for (version, script) in migrations {
            let mut tx = self.write().await?;
            let done: Option<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db("read the schema version"))?;
            if done.is_some() {
                continue;
            }
            for statement in statements(script) {
                tx.execute(AssertSqlSafe(statement)).await.map_err(StoreError::db("apply a migration"))?;
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(unix_now())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("record a migration"))?;
            tx.commit().await.map_err(StoreError::db("commit a migration"))?;
        }
        Ok(())
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of
    /// failing when a read lock cannot be upgraded.
    pub(crate) async fn write(&self) -> Result<Transaction<'static, Any>> {
        match self.begin().await {
            // A commit that failed (SQLITE_FULL on a full disk) leaves the
            // pooled writer connection inside its transaction, and every later
            // begin on it fails: the writer would stay stuck after the disk
            // has space again. Drop that connection; the pool opens a new one.
            Err(StoreError::Database { source, .. }) if source.to_string().contains("transaction depth") => {
                tracing::warn!("the writer connection was left inside a failed transaction; replacing it");
                if let Ok(stuck) = self.writer.acquire().await {
                    let _ = sqlx::Connection::close(stuck.detach()).await;
                }
                self.begin().await
            }
            other => other,
        }
    }

    /// What the audit log's appends need of this store.
    pub(crate) fn log(&self) -> log::Writer<'_> {
        log::Writer::new(self.engine, &self.edge)
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>> {
        match self.engine {
            Engine::Sqlite => {
                self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::db("begin a transaction"))
            }
            Engine::Postgres => {
                let mut tx = self.writer.begin().await.map_err(StoreError::db("begin a transaction"))?;
                // One writer at a time across every node, as SQLite has: the
                // revocation feed's sequence then commits in order (a poller
                // never skips a row a slower transaction commits later), and
                // audit indexes and the Merkle tree's right edge stay gap-free.
                tx.execute("SELECT pg_advisory_xact_lock(7242)")
                    .await
                    .map_err(StoreError::db("take the write lock"))?;
                Ok(tx)
            }
        }
    }
}

static DRIVERS: Once = Once::new();
