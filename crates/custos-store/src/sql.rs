//! The SQL backend over `sqlx::Any`: SQLite now, PostgreSQL through the same queries.

use std::collections::HashMap;
use std::sync::Once;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Executor, Row, Transaction};

use crate::audit;
use crate::incident::{
    self, IncidentCertificate, IncidentConnection, IncidentRecord, OutboxMessage, Replacement, WebhookRecord,
};
use crate::{
    AuditEntry, AuditFilter, AuditRecord, CertificateFilter, CertificateRecord, CheckpointRecord, ConnectionRecord,
    Genesis, Hash, IssuerRecord, KeyRecord, KeyUsage, NodeId, ResponderRecord, Result, Revocation, RevocationEvent,
    RevokedRow, StatusFilter, Store, StoreError, TenantRecord,
};

/// Versioned migrations per backend, applied in order, each in its own transaction.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_revocation.sql")),
    (3, include_str!("../migrations/sqlite/0003_merkle_audit.sql")),
    (4, include_str!("../migrations/sqlite/0004_incidents.sql")),
    (5, include_str!("../migrations/sqlite/0005_drop_spki_index.sql")),
];

/// The PostgreSQL migrations: the same schema in its types.
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_merkle_audit.sql")),
    (3, include_str!("../migrations/postgres/0003_incidents.sql")),
    (4, include_str!("../migrations/postgres/0004_drop_spki_index.sql")),
];

/// Which database engine is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// A [`Store`] on a SQL database.
#[derive(Clone, Debug)]
pub struct SqlStore {
    /// Readers.
    pool: AnyPool,
    /// The one connection that writes. SQLite drops a connection's page cache
    /// whenever another connection has written, so writes rotating over a
    /// pool started every commit cold; one writer keeps its cache warm.
    writer: AnyPool,
    engine: Engine,
}

static DRIVERS: Once = Once::new();

impl SqlStore {
    /// Opens (creating if needed) the SQLite database at `path` in WAL mode and migrates it.
    ///
    /// Commits are `synchronous=FULL`: a transaction that returned is on disk.
    pub async fn open_sqlite(path: &std::path::Path) -> Result<SqlStore> {
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let location = path.display().to_string();
        let url = format!("sqlite://{location}?mode=rwc");
        let open = |source| StoreError::Open { location: location.clone(), source };
        let options = |max| {
            AnyPoolOptions::new().max_connections(max).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
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
        let store = SqlStore { pool, writer, engine: Engine::Sqlite };
        store.migrate(SQLITE_MIGRATIONS).await?;
        let mut tx = store.write().await?;
        audit::backfill(store.engine, &mut tx).await?;
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
        let store = SqlStore { pool, writer, engine: Engine::Postgres };
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

    /// Runs a certificate query with `filter` applied, selecting `columns`.
    async fn filtered(&self, filter: &CertificateFilter, columns: &str) -> Result<Vec<AnyRow>> {
        // The text is built from fixed fragments only; every value is bound.
        let mut sql = format!("SELECT {columns} FROM certificates WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let mut texts: Vec<&str> = Vec::new();
        let mut numbers: Vec<i64> = Vec::new();
        if let Some(t) = &filter.tenant {
            sql += &format!(" AND tenant = {}", next());
            texts.push(t);
        }
        if let Some(c) = &filter.connection {
            sql += &format!(" AND connection = {}", next());
            texts.push(c);
        }
        if let Some(i) = &filter.issuer {
            sql += &format!(" AND issuer = {}", next());
            texts.push(i);
        }
        let text_count = texts.len();
        match filter.status {
            Some(StatusFilter::Valid) => {
                sql += &format!(" AND status = 'valid' AND not_after >= {}", next());
                numbers.push(filter.now);
            }
            Some(StatusFilter::Expired) => {
                sql += &format!(" AND status = 'valid' AND not_after < {}", next());
                numbers.push(filter.now);
            }
            Some(StatusFilter::Revoked) => sql += " AND status = 'revoked'",
            None => {}
        }
        if let Some(before) = filter.expiring_before {
            sql += &format!(" AND not_after < {}", next());
            numbers.push(before);
        }
        sql += " ORDER BY created_at DESC, serial";
        if let Some(limit) = filter.limit {
            sql += &format!(" LIMIT {}", next());
            numbers.push(limit);
        }
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for t in &texts[..text_count] {
            query = query.bind(*t);
        }
        for v in numbers {
            query = query.bind(v);
        }
        query.fetch_all(&self.pool).await.map_err(StoreError::db("list certificates"))
    }

    /// Runs `select` (ending in `WHERE` or `AND`) with `serial IN (...)`, five hundred serials at a time.
    async fn rows_for_serials(&self, serials: &[String], select: &str) -> Result<Vec<AnyRow>> {
        let mut out = Vec::with_capacity(serials.len());
        for chunk in serials.chunks(500) {
            let sql = format!("{select} serial IN ({})", params(self.engine, 1, chunk.len()));
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for s in chunk {
                q = q.bind(s);
            }
            out.extend(q.fetch_all(&self.pool).await.map_err(StoreError::db("read certificates"))?);
        }
        Ok(out)
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of
    /// failing when a read lock cannot be upgraded.
    async fn write(&self) -> Result<Transaction<'static, Any>> {
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

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Splits a migration script into statements; our scripts keep `;` out of literals.
fn statements(script: &str) -> Vec<String> {
    let without_comments: String =
        script.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    without_comments.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The time now, Unix seconds.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

async fn insert_key(tx: &mut Transaction<'static, Any>, key: &KeyRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO keys (id, backend, algorithm, label, public_key, reference, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.id)
    .bind(&key.backend)
    .bind(&key.algorithm)
    .bind(&key.label)
    .bind(&key.public_key)
    .bind(&key.reference)
    .bind(&key.status)
    .bind(key.created_at)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::db("store a key"))?;
    Ok(())
}

/// Inserts one issuer inside `tx`.
async fn insert_issuer(tx: &mut Transaction<'static, Any>, issuer: &IssuerRecord) -> Result<()> {
    sqlx::query(
        "INSERT INTO issuers (id, name, role, parent, key_id, cert_der, fingerprint, not_after, status, crl_number, created_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&issuer.id)
    .bind(&issuer.name)
    .bind(&issuer.role)
    .bind(&issuer.parent)
    .bind(&issuer.key_id)
    .bind(&issuer.cert_der)
    .bind(&issuer.fingerprint)
    .bind(issuer.not_after)
    .bind(&issuer.status)
    .bind(issuer.crl_number)
    .bind(issuer.created_at)
    .bind(issuer.revoked_at)
    .execute(&mut **tx)
    .await
    .map_err(StoreError::db("store an issuer"))?;
    Ok(())
}

/// Runs a query keyed by one text value and decodes at most one row.
async fn fetch_one_by<T>(
    pool: &AnyPool,
    sql: &'static str,
    key: &str,
    operation: &'static str,
    decode: fn(&AnyRow) -> Result<T>,
) -> Result<Option<T>> {
    let row = sqlx::query(sql).bind(key).fetch_optional(pool).await.map_err(StoreError::db(operation))?;
    row.as_ref().map(decode).transpose()
}

/// Runs a query without parameters and decodes every row.
async fn fetch_all(pool: &AnyPool, sql: &'static str, operation: &'static str) -> Result<Vec<AnyRow>> {
    sqlx::query(sql).fetch_all(pool).await.map_err(StoreError::db(operation))
}

/// A list column's text: a JSON array.
pub(crate) fn json_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

/// A list column read back.
pub(crate) fn parse_list(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("list column: {e}")))
}

/// One column of a row, or a `Corrupt` error naming it.
pub(crate) fn col<'r, T: sqlx::Decode<'r, Any> + sqlx::Type<Any>>(row: &'r AnyRow, name: &str) -> Result<T> {
    row.try_get(name).map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

fn connection_from(row: &AnyRow) -> Result<ConnectionRecord> {
    Ok(ConnectionRecord {
        tenant: col(row, "tenant")?,
        name: col(row, "name")?,
        profile: col(row, "profile")?,
        allowed_sans: parse_list(&col::<String>(row, "allowed_sans")?)?,
        key_algorithm: col(row, "key_algorithm")?,
        validity_days: col(row, "validity_days")?,
        created_at: col(row, "created_at")?,
    })
}

fn key_from(row: &AnyRow) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: col(row, "id")?,
        backend: col(row, "backend")?,
        algorithm: col(row, "algorithm")?,
        label: col(row, "label")?,
        public_key: col(row, "public_key")?,
        reference: col(row, "reference")?,
        status: col(row, "status")?,
        created_at: col(row, "created_at")?,
    })
}

fn issuer_from(row: &AnyRow) -> Result<IssuerRecord> {
    Ok(IssuerRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        role: col(row, "role")?,
        parent: col(row, "parent")?,
        key_id: col(row, "key_id")?,
        cert_der: col(row, "cert_der")?,
        fingerprint: col(row, "fingerprint")?,
        not_after: col(row, "not_after")?,
        status: col(row, "status")?,
        crl_number: col(row, "crl_number")?,
        created_at: col(row, "created_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

fn certificate_from(row: &AnyRow) -> Result<CertificateRecord> {
    Ok(CertificateRecord {
        serial: col(row, "serial")?,
        issuer: col(row, "issuer")?,
        tenant: col(row, "tenant")?,
        connection: col(row, "connection")?,
        profile: col(row, "profile")?,
        subject: col(row, "subject")?,
        sans: parse_list(&col::<String>(row, "sans")?)?,
        key_algorithm: col(row, "key_algorithm")?,
        key_origin: col(row, "key_origin")?,
        spki_sha256: col(row, "spki_sha256")?,
        not_before: col(row, "not_before")?,
        not_after: col(row, "not_after")?,
        der: col(row, "der")?,
        status: col(row, "status")?,
        revoked_at: col(row, "revoked_at")?,
        revocation_reason: col(row, "revocation_reason")?,
        invalidity_date: col(row, "invalidity_date")?,
        replaced_by: col(row, "replaced_by")?,
        crl_partition: col(row, "crl_partition")?,
        created_at: col(row, "created_at")?,
    })
}

/// Revoked entries packed into one row when reading a CRL's contents.
const REVOKED_PER_ROW: i64 = 10_000;

/// Parses `serial revoked_at reason invalidity` as packed by `revoked`.
fn unpack_revoked(entry: &str) -> Result<RevokedRow> {
    let bad = || StoreError::Corrupt(format!("revoked entry {entry:?}"));
    let mut parts = entry.split(' ');
    let (Some(serial), Some(at), Some(reason), Some(invalidity), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok(RevokedRow {
        serial: serial.to_string(),
        revoked_at: at.parse().map_err(|_| bad())?,
        reason: (reason != "-").then(|| reason.to_string()),
        invalidity_date: if invalidity == "-" { None } else { Some(invalidity.parse().map_err(|_| bad())?) },
    })
}

/// Rows per multi-row INSERT: one statement instead of a hundred round trips
/// to the driver, well under SQLite's 32766 bound parameters.
const ROWS_PER_INSERT: usize = 100;
const CERTIFICATE_COLUMN_COUNT: usize = 20;

/// `(?, ?, ...), (?, ...)` for `rows` rows of `columns` values.
///
/// SQLite gets anonymous `?` parameters: sqlx resolves each named `$n` through
/// `sqlite3_bind_parameter_name`, a linear search, which made a 1900-parameter
/// insert quadratic (29% of bulk issuance time in perf).
pub(crate) fn values_clause(engine: Engine, rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        out.push_str(&params(engine, r * columns + 1, columns));
        out.push(')');
    }
    out
}

/// `count` comma-separated placeholders, numbered from `first` where the
/// engine needs numbers (PostgreSQL); SQLite gets `?` (numbered ones made
/// large multi-row statements quadratic there).
pub(crate) fn params(engine: Engine, first: usize, count: usize) -> String {
    match engine {
        Engine::Sqlite => vec!["?"; count].join(", "),
        Engine::Postgres => (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", "),
    }
}

/// Inserts certificate rows inside `tx`, a hundred per statement.
pub(crate) async fn insert_certificate_rows(
    engine: Engine,
    tx: &mut Transaction<'static, Any>,
    certificates: &[CertificateRecord],
) -> Result<()> {
    for rows in certificates.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO certificates ({CERTIFICATE_COLUMNS}) VALUES {}",
            values_clause(engine, rows.len(), CERTIFICATE_COLUMN_COUNT)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for c in rows {
            query = query
                .bind(&c.serial)
                .bind(&c.issuer)
                .bind(&c.tenant)
                .bind(&c.connection)
                .bind(&c.profile)
                .bind(&c.subject)
                .bind(json_list(&c.sans))
                .bind(&c.key_algorithm)
                .bind(&c.key_origin)
                .bind(&c.spki_sha256)
                .bind(c.not_before)
                .bind(c.not_after)
                .bind(&c.der)
                .bind(&c.status)
                .bind(c.revoked_at)
                .bind(&c.revocation_reason)
                .bind(c.invalidity_date)
                .bind(&c.replaced_by)
                .bind(c.crl_partition)
                .bind(c.created_at);
        }
        query.execute(&mut **tx).await.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate { what: "certificate serial".into() }
            } else if is_foreign_key_violation(&e) {
                StoreError::NotFound { what: "connection or issuer of a certificate".into() }
            } else {
                StoreError::Database { operation: "record certificates", source: e }
            }
        })?;
    }
    Ok(())
}

const CERTIFICATE_COLUMNS: &str = "serial, issuer, tenant, connection, profile, subject, sans, key_algorithm, key_origin, \
     spki_sha256, not_before, not_after, der, status, revoked_at, revocation_reason, invalidity_date, replaced_by, crl_partition, created_at";

#[async_trait]
impl Store for SqlStore {
    async fn initialize(&self, genesis: Genesis) -> Result<()> {
        let mut tx = self.write().await?;
        // The marker goes first: a second genesis fails on its primary key
        // before it writes anything else.
        sqlx::query("INSERT INTO meta (key, value) VALUES ('initialized', $1)")
            .bind(unix_now().to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyInitialized
                } else {
                    StoreError::Database { operation: "mark the store initialized", source: e }
                }
            })?;
        for (key, value) in &genesis.meta {
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("write a setting"))?;
        }
        for key in &genesis.keys {
            insert_key(&mut tx, key).await?;
        }
        for issuer in &genesis.issuers {
            insert_issuer(&mut tx, issuer).await?;
        }
        audit::append(self.engine, &mut tx, &genesis.audit).await?;
        tx.commit().await.map_err(StoreError::db("commit the genesis"))
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read a setting"))
    }

    async fn set_meta(&self, key: &str, value: &str, audit_records: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("write a setting"))?;
        audit::append(self.engine, &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a setting"))
    }

    async fn add_tenant(&self, tenant: &TenantRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO tenants (name, created_at) VALUES ($1, $2)")
            .bind(&tenant.name)
            .bind(tenant.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Duplicate { what: format!("tenant {:?}", tenant.name) }
                } else {
                    StoreError::Database { operation: "add a tenant", source: e }
                }
            })?;
        audit::append(self.engine, &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a tenant"))
    }

    async fn tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        let row = sqlx::query("SELECT name, created_at FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read a tenant"))?;
        row.map(|r| Ok(TenantRecord { name: col(&r, "name")?, created_at: col(&r, "created_at")? })).transpose()
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query("SELECT name, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("list tenants"))?;
        rows.iter().map(|r| Ok(TenantRecord { name: col(r, "name")?, created_at: col(r, "created_at")? })).collect()
    }

    async fn add_connection(&self, c: &ConnectionRecord, audit: &AuditRecord) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO connections (tenant, name, profile, allowed_sans, key_algorithm, validity_days, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&c.tenant)
        .bind(&c.name)
        .bind(&c.profile)
        .bind(json_list(&c.allowed_sans))
        .bind(&c.key_algorithm)
        .bind(c.validity_days)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate { what: format!("connection {}/{}", c.tenant, c.name) }
            } else if is_foreign_key_violation(&e) {
                StoreError::NotFound { what: format!("tenant {:?}", c.tenant) }
            } else {
                StoreError::Database { operation: "add a connection", source: e }
            }
        })?;
        audit::append(self.engine, &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit a connection"))
    }

    async fn connection(&self, tenant: &str, name: &str) -> Result<Option<ConnectionRecord>> {
        let row = sqlx::query("SELECT * FROM connections WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read a connection"))?;
        row.as_ref().map(connection_from).transpose()
    }

    async fn connections(&self, tenant: Option<&str>) -> Result<Vec<ConnectionRecord>> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query("SELECT * FROM connections WHERE tenant = $1 ORDER BY tenant, name")
                    .bind(t)
                    .fetch_all(&self.pool)
                    .await
            }
            None => sqlx::query("SELECT * FROM connections ORDER BY tenant, name").fetch_all(&self.pool).await,
        }
        .map_err(StoreError::db("list connections"))?;
        rows.iter().map(connection_from).collect()
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>> {
        fetch_one_by(&self.pool, "SELECT * FROM keys WHERE id = $1", id, "read a key", key_from).await
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM keys ORDER BY created_at, id", "list keys").await?;
        rows.iter().map(key_from).collect()
    }

    async fn issuer(&self, id: &str) -> Result<Option<IssuerRecord>> {
        fetch_one_by(&self.pool, "SELECT * FROM issuers WHERE id = $1", id, "read an issuer", issuer_from).await
    }

    async fn issuers(&self) -> Result<Vec<IssuerRecord>> {
        let sql = "SELECT * FROM issuers ORDER BY created_at, role DESC, id";
        let rows = fetch_all(&self.pool, sql, "list issuers").await?;
        rows.iter().map(issuer_from).collect()
    }

    async fn insert_certificates(&self, certificates: &[CertificateRecord], audit: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        insert_certificate_rows(self.engine, &mut tx, certificates).await?;
        audit::append(self.engine, &mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::db("commit certificates"))
    }

    async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>> {
        let sql = "SELECT * FROM certificates WHERE serial = $1";
        fetch_one_by(&self.pool, sql, serial, "read a certificate", certificate_from).await
    }

    async fn certificates(&self, filter: &CertificateFilter) -> Result<Vec<CertificateRecord>> {
        let rows = self.filtered(filter, CERTIFICATE_COLUMNS).await?;
        rows.iter().map(certificate_from).collect()
    }

    async fn certificate_owners(&self, filter: &CertificateFilter) -> Result<Vec<IncidentCertificate>> {
        let rows = self.filtered(filter, "serial, tenant, connection").await?;
        rows.iter().map(incident::owner).collect()
    }

    async fn revoke(&self, serials: &[String], revocation: &Revocation, audit: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        // Five hundred per statement: an incident revokes a hundred thousand at once.
        for chunk in serials.chunks(500) {
            let [a, b, c] = [1, 2, 3].map(|n| params(self.engine, n, 1));
            let list = params(self.engine, 4, chunk.len());
            let sql = format!(
                "UPDATE certificates SET status = 'revoked', revoked_at = {a}, revocation_reason = {b}, invalidity_date = {c} \
                 WHERE status = 'valid' AND serial IN ({list})"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql))
                .bind(revocation.revoked_at)
                .bind(&revocation.reason)
                .bind(revocation.invalidity_date);
            for serial in chunk {
                q = q.bind(serial);
            }
            let updated = q.execute(&mut *tx).await.map_err(StoreError::db("revoke certificates"))?;
            if updated.rows_affected() != chunk.len() as u64 {
                // Name the first serial that was missing or not valid; the transaction rolls back.
                for serial in chunk {
                    let status: Option<String> =
                        sqlx::query_scalar("SELECT status FROM certificates WHERE serial = $1")
                            .bind(serial)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(StoreError::db("read a certificate"))?;
                    match status {
                        None => return Err(StoreError::NotFound { what: format!("certificate {serial}") }),
                        Some(s) if s != "revoked" || chunk.iter().filter(|x| *x == serial).count() > 1 => {
                            return Err(StoreError::Conflict {
                                what: format!("certificate {serial} is listed twice or {s}"),
                            });
                        }
                        _ => {}
                    }
                }
                return Err(StoreError::Conflict {
                    what: format!(
                        "{} of {} certificates were already revoked",
                        chunk.len() as u64 - updated.rows_affected(),
                        chunk.len()
                    ),
                });
            }
            let time = params(self.engine, 1, 1);
            let list = params(self.engine, 2, chunk.len());
            let sql = format!(
                "INSERT INTO revocations (serial, issuer, crl_partition, time) \
                 SELECT serial, issuer, crl_partition, {time} FROM certificates WHERE serial IN ({list}) ORDER BY serial"
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(revocation.revoked_at);
            for serial in chunk {
                q = q.bind(serial);
            }
            q.execute(&mut *tx).await.map_err(StoreError::db("record revocations"))?;
        }
        audit::append(self.engine, &mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::db("commit a revocation"))
    }

    async fn revoked(&self, issuer: &str, partition: i64) -> Result<Vec<RevokedRow>> {
        // sqlx hands each row from SQLite's thread to ours with a wake-up;
        // at a million rows that was most of the CRL's time. SQLite packs
        // REVOKED_PER_ROW entries into one text row instead, and pages by serial.
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let sql = match self.engine {
                Engine::Sqlite => {
                    "SELECT group_concat(serial || ' ' || revoked_at || ' ' || coalesce(revocation_reason, '-') \
                     || ' ' || coalesce(invalidity_date, '-'), ';'), max(serial), count(*) FROM \
                     (SELECT serial, revoked_at, revocation_reason, invalidity_date FROM certificates \
                      WHERE issuer = $1 AND crl_partition = $2 AND status = 'revoked' AND serial > $3 \
                      ORDER BY serial LIMIT $4)"
                }
                Engine::Postgres => {
                    "SELECT string_agg(serial || ' ' || revoked_at || ' ' || coalesce(revocation_reason, '-') \
                     || ' ' || coalesce(invalidity_date::TEXT, '-'), ';' ORDER BY serial), max(serial), count(*) FROM \
                     (SELECT serial, revoked_at, revocation_reason, invalidity_date FROM certificates \
                      WHERE issuer = $1 AND crl_partition = $2 AND status = 'revoked' AND serial > $3 \
                      ORDER BY serial LIMIT $4) AS page"
                }
            };
            let row = sqlx::query(sql)
                .bind(issuer)
                .bind(partition)
                .bind(&after)
                .bind(REVOKED_PER_ROW)
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::db("list revoked certificates"))?;
            let packed: Option<String> = row.try_get(0).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let last: Option<String> = row.try_get(1).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let count: i64 = row.try_get(2).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let (Some(packed), Some(last)) = (packed, last) else {
                break;
            };
            for entry in packed.split(';') {
                out.push(unpack_revoked(entry)?);
            }
            after = last;
            if count < REVOKED_PER_ROW {
                break;
            }
        }
        Ok(out)
    }

    async fn reserve_issuance(&self, issuer: &str, count: i64) -> Result<i64> {
        let mut tx = self.write().await?;
        let updated = sqlx::query("UPDATE issuers SET issued = issued + $1 WHERE id = $2")
            .bind(count)
            .bind(issuer)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("reserve issuance positions"))?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("issuer {issuer}") });
        }
        let end: i64 = sqlx::query_scalar("SELECT issued FROM issuers WHERE id = $1")
            .bind(issuer)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db("read issuance positions"))?;
        tx.commit().await.map_err(StoreError::db("commit issuance positions"))?;
        Ok(end - count)
    }

    async fn issued(&self, issuer: &str) -> Result<i64> {
        let issued: Option<i64> = sqlx::query_scalar("SELECT issued FROM issuers WHERE id = $1")
            .bind(issuer)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read issuance positions"))?;
        issued.ok_or_else(|| StoreError::NotFound { what: format!("issuer {issuer}") })
    }

    async fn revocations_since(&self, seq: i64, limit: i64) -> Result<Vec<RevocationEvent>> {
        let rows = sqlx::query(
            "SELECT seq, serial, issuer, crl_partition FROM revocations WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("read the revocation feed"))?;
        rows.iter()
            .map(|r| {
                Ok(RevocationEvent {
                    seq: col(r, "seq")?,
                    serial: col(r, "serial")?,
                    issuer: col(r, "issuer")?,
                    crl_partition: col(r, "crl_partition")?,
                })
            })
            .collect()
    }

    async fn last_revocation(&self) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM revocations")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::db("read the revocation feed"))?;
        Ok(seq.unwrap_or(0))
    }

    async fn next_crl_number(&self, issuer: &str, audit: &AuditRecord) -> Result<i64> {
        let mut tx = self.write().await?;
        let updated = sqlx::query("UPDATE issuers SET crl_number = crl_number + 1 WHERE id = $1")
            .bind(issuer)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("advance the CRL number"))?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("issuer {issuer}") });
        }
        let number: i64 = sqlx::query_scalar("SELECT crl_number FROM issuers WHERE id = $1")
            .bind(issuer)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::db("read the CRL number"))?;
        audit::append(self.engine, &mut tx, std::slice::from_ref(audit)).await?;
        tx.commit().await.map_err(StoreError::db("commit the CRL number"))?;
        Ok(number)
    }

    async fn add_responder(&self, key: &KeyRecord, responder: &ResponderRecord, audit: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        insert_key(&mut tx, key).await?;
        sqlx::query(
            "INSERT INTO responders (issuer, key_id, cert_der, not_after, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&responder.issuer)
        .bind(&responder.key_id)
        .bind(&responder.cert_der)
        .bind(responder.not_after)
        .bind(responder.created_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("store a responder"))?;
        audit::append(self.engine, &mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::db("commit a responder"))
    }

    async fn add_key(&self, key: &KeyRecord, settings: &[(String, String)], audit: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        insert_key(&mut tx, key).await?;
        for (name, value) in settings {
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2)")
                .bind(name)
                .bind(value)
                .execute(&mut *tx)
                .await
                .map_err(|e| match is_unique_violation(&e) {
                    true => StoreError::Duplicate { what: format!("setting {name:?}") },
                    false => StoreError::Database { operation: "write a setting", source: e },
                })?;
        }
        audit::append(self.engine, &mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::db("commit a key"))
    }

    async fn responder(&self, issuer: &str) -> Result<Option<ResponderRecord>> {
        let row =
            sqlx::query("SELECT * FROM responders WHERE issuer = $1 ORDER BY not_after DESC, created_at DESC LIMIT 1")
                .bind(issuer)
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::db("read a responder"))?;
        row.map(|r| {
            Ok(ResponderRecord {
                issuer: col(&r, "issuer")?,
                key_id: col(&r, "key_id")?,
                cert_der: col(&r, "cert_der")?,
                not_after: col(&r, "not_after")?,
                created_at: col(&r, "created_at")?,
            })
        })
        .transpose()
    }

    async fn append_audit(&self, records: &[AuditRecord]) -> Result<u64> {
        let mut tx = self.write().await?;
        let first = audit::append(self.engine, &mut tx, records).await?;
        tx.commit().await.map_err(StoreError::db("commit audit entries"))?;
        Ok(first)
    }

    async fn audit_size(&self) -> Result<u64> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::db("read the audit log size"))?;
        audit::size_in(&mut conn).await
    }

    async fn audit_entries(&self, from: u64, limit: u64) -> Result<Vec<AuditEntry>> {
        audit::read_entries(&self.pool, self.engine, from, limit).await
    }

    async fn audit_search(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        // The key is indexed; the action filter has dotted and grouped forms,
        // so it is applied here, a page at a time.
        const PAGE: i64 = 2048;
        let mut out = Vec::new();
        let newest = filter.from.is_none();
        let mut cursor: i64 = match filter.from {
            Some(from) => from as i64,
            None => i64::MAX,
        };
        loop {
            let sql = match newest {
                true => {
                    "SELECT * FROM audit_log WHERE ($1 IS NULL OR key_id = $1) AND idx < $2 ORDER BY idx DESC LIMIT $3"
                }
                false => {
                    "SELECT * FROM audit_log WHERE ($1 IS NULL OR key_id = $1) AND idx >= $2 ORDER BY idx LIMIT $3"
                }
            };
            let rows = sqlx::query(sql)
                .bind(&filter.key)
                .bind(cursor)
                .bind(PAGE)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("search the audit log"))?;
            let Some(last) = rows.last() else { break };
            let last = audit::entry(last)?.index as i64;
            cursor = if newest { last } else { last + 1 };
            for row in &rows {
                let entry = audit::entry(row)?;
                if filter.matches(&entry.record) {
                    out.push(entry);
                    if out.len() >= filter.limit {
                        break;
                    }
                }
            }
            if out.len() >= filter.limit || (rows.len() as i64) < PAGE {
                break;
            }
        }
        if newest {
            out.reverse();
        }
        Ok(out)
    }

    async fn audit_nodes(&self, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::db("read audit tree nodes"))?;
        audit::nodes(&mut conn, self.engine, ids).await
    }

    async fn audit_level(&self, level: u8, start: u64, count: u64) -> Result<Vec<Hash>> {
        let sql = if level == 0 {
            "SELECT idx, leaf_hash AS hash FROM audit_log WHERE $1 = 0 AND idx >= $2 AND idx < $3 ORDER BY idx"
        } else {
            "SELECT idx, hash FROM audit_tree WHERE level = $1 AND idx >= $2 AND idx < $3 ORDER BY idx"
        };
        let rows = sqlx::query(sql)
            .bind(i64::from(level))
            .bind(start as i64)
            .bind(start.saturating_add(count) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read an audit tile"))?;
        if rows.len() as u64 != count {
            return Err(StoreError::NotFound { what: format!("{count} hashes of level {level} from {start}") });
        }
        rows.iter().map(|r| audit::hash_of(col(r, "hash")?, col(r, "idx")?)).collect()
    }

    async fn add_checkpoint(&self, c: &CheckpointRecord) -> Result<()> {
        let mut tx = self.write().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT size FROM audit_checkpoints WHERE size = $1")
            .bind(c.size as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db("read a checkpoint"))?;
        if exists.is_none() {
            sqlx::query("INSERT INTO audit_checkpoints (size, time, root, note) VALUES ($1, $2, $3, $4)")
                .bind(c.size as i64)
                .bind(c.time)
                .bind(&c.root)
                .bind(&c.note)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("store a checkpoint"))?;
        }
        tx.commit().await.map_err(StoreError::db("commit a checkpoint"))
    }

    async fn checkpoints(&self) -> Result<Vec<CheckpointRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM audit_checkpoints ORDER BY size", "read checkpoints").await?;
        rows.iter().map(checkpoint).collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>> {
        sqlx::query("SELECT * FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("read the latest checkpoint"))?
            .as_ref()
            .map(checkpoint)
            .transpose()
    }

    async fn key_usage(&self, key: &str) -> Result<Vec<KeyUsage>> {
        let rows = sqlx::query(
            "SELECT time / 86400 AS day, actor, action, COUNT(*) AS n FROM audit_log WHERE key_id = $1 \
             GROUP BY time / 86400, actor, action ORDER BY day, actor, action",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("count key uses"))?;
        rows.iter()
            .map(|r| {
                Ok(KeyUsage {
                    day: col(r, "day")?,
                    actor: col(r, "actor")?,
                    action: col(r, "action")?,
                    count: col(r, "n")?,
                })
            })
            .collect()
    }

    async fn certificates_by_spki(&self, prefix: &str) -> Result<Vec<CertificateRecord>> {
        let prefix = prefix.to_ascii_lowercase();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Invalid(format!("{prefix:?} is not a hex SPKI hash")));
        }
        // A range on the index: every hex string starting with the prefix sorts below prefix + 'g'.
        // PostgreSQL compares text by collation; hex sorts as here only in "C".
        let sql = match self.engine {
            Engine::Sqlite => {
                format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE spki_sha256 >= $1 AND spki_sha256 < $2")
            }
            Engine::Postgres => format!(
                "SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE spki_sha256 >= $1 COLLATE \"C\" AND spki_sha256 < $2 COLLATE \"C\""
            ),
        };
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(&prefix)
            .bind(format!("{prefix}g"))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("find certificates by key"))?;
        rows.iter().map(certificate_from).collect()
    }

    async fn certificates_by_serials(&self, serials: &[String]) -> Result<Vec<CertificateRecord>> {
        let rows =
            self.rows_for_serials(serials, &format!("SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE")).await?;
        rows.iter().map(certificate_from).collect()
    }

    async fn valid_serials(&self, serials: &[String]) -> Result<Vec<String>> {
        let rows = self.rows_for_serials(serials, "SELECT serial FROM certificates WHERE status = 'valid' AND").await?;
        rows.iter().map(|r| col(r, "serial")).collect()
    }

    async fn add_incident(
        &self,
        r: &IncidentRecord,
        certificates: &[IncidentCertificate],
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO incidents (id, scope_kind, scope_value, reason, since, note, state, new_issuers, declared_at, declared_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, '[]', $8, $9)",
        )
        .bind(&r.id)
        .bind(&r.scope_kind)
        .bind(&r.scope_value)
        .bind(&r.reason)
        .bind(r.since)
        .bind(&r.note)
        .bind(&r.state)
        .bind(r.declared_at)
        .bind(&r.declared_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| match is_unique_violation(&e) {
            true => StoreError::Duplicate { what: format!("incident {}", r.id) },
            false => StoreError::Database { operation: "declare an incident", source: e },
        })?;
        incident::add_certificates(self.engine, &mut tx, &r.id, certificates, r.declared_at).await?;
        audit::append(self.engine, &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit an incident"))
    }

    async fn add_incident_certificates(
        &self,
        id: &str,
        certificates: &[IncidentCertificate],
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        incident::add_certificates(self.engine, &mut tx, id, certificates, unix_now()).await?;
        audit::append(self.engine, &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit the blast radius"))
    }

    async fn incident(&self, id: &str) -> Result<Option<IncidentRecord>> {
        fetch_one_by(&self.pool, "SELECT * FROM incidents WHERE id = $1", id, "read an incident", incident::incident)
            .await
    }

    async fn incidents(&self) -> Result<Vec<IncidentRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM incidents ORDER BY declared_at, id", "read incidents").await?;
        rows.iter().map(incident::incident).collect()
    }

    async fn incident_certificates(&self, id: &str) -> Result<Vec<IncidentCertificate>> {
        let rows = sqlx::query("SELECT serial, tenant, connection FROM incident_certificates WHERE incident = $1 ORDER BY tenant, connection, serial")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read a blast radius"))?;
        rows.iter().map(incident::owner).collect()
    }

    async fn incident_connections(&self, id: &str) -> Result<Vec<IncidentConnection>> {
        let rows = sqlx::query("SELECT * FROM incident_connections WHERE incident = $1 ORDER BY tenant, connection")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read affected connections"))?;
        rows.iter().map(incident::connection).collect()
    }

    async fn lock_incident(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
        stale: Option<&str>,
    ) -> Result<Option<String>> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE incidents SET lock_owner = $1, lock_until = $2 WHERE id = $3 AND \
             (lock_owner IS NULL OR lock_owner = $1 OR lock_until < $4 OR lock_owner = $5)",
        )
        .bind(owner)
        .bind(until)
        .bind(id)
        .bind(now)
        .bind(stale.unwrap_or(""))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("lock an incident"))?;
        let holder = if updated.rows_affected() == 1 {
            None
        } else {
            let holder: Option<Option<String>> = sqlx::query_scalar("SELECT lock_owner FROM incidents WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db("read an incident lock"))?;
            match holder {
                None => return Err(StoreError::NotFound { what: format!("incident {id}") }),
                Some(h) => Some(h.unwrap_or_default()),
            }
        };
        tx.commit().await.map_err(StoreError::db("commit an incident lock"))?;
        Ok(holder)
    }

    async fn unlock_incident(&self, id: &str, owner: &str) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE incidents SET lock_owner = NULL, lock_until = NULL WHERE id = $1 AND lock_owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("unlock an incident"))?;
        tx.commit().await.map_err(StoreError::db("commit an incident unlock"))
    }

    async fn update_incident(&self, r: &IncidentRecord, audit_records: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        incident::update(&mut tx, r).await?;
        audit::append(self.engine, &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit an incident"))
    }

    async fn rekey(
        &self,
        r: &IncidentRecord,
        keys: &[KeyRecord],
        issuers: &[IssuerRecord],
        compromised: &[(String, String)],
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let now = unix_now();
        for key in keys {
            insert_key(&mut tx, key).await?;
        }
        for issuer in issuers {
            insert_issuer(&mut tx, issuer).await?;
        }
        for (id, serial) in compromised {
            // A compromised CA's certificate counts as revoked now: its
            // parent's CRL and OCSP say so, and serving nodes learn it from the feed.
            sqlx::query("UPDATE issuers SET status = 'compromised', revoked_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("mark a CA compromised"))?;
            sqlx::query("UPDATE keys SET status = 'compromised' WHERE id = (SELECT key_id FROM issuers WHERE id = $1)")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::db("mark a CA key compromised"))?;
            sqlx::query(
                "INSERT INTO revocations (serial, issuer, crl_partition, time) \
                 SELECT $1, parent, 0, $2 FROM issuers WHERE id = $3 AND parent IS NOT NULL",
            )
            .bind(serial)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("record a CA revocation"))?;
        }
        incident::update(&mut tx, r).await?;
        audit::append(self.engine, &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit the new CAs"))
    }

    async fn destroy_key(&self, id: &str, audit_records: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        let updated = sqlx::query("UPDATE keys SET status = 'destroyed', reference = $1 WHERE id = $2")
            .bind(Vec::<u8>::new())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("destroy a key"))?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::NotFound { what: format!("key {id}") });
        }
        audit::append(self.engine, &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a key destruction"))
    }

    async fn record_replacements(
        &self,
        id: &str,
        certificates: &[CertificateRecord],
        replacements: &[Replacement],
        messages: &[OutboxMessage],
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let tx = self.write().await?;
        incident::record_replacements(self.engine, tx, id, certificates, replacements, messages, audit_records).await
    }

    async fn move_connections(
        &self,
        id: &str,
        connections: &[(String, String)],
        from: &[&str],
        to: &str,
        audit_records: &[AuditRecord],
    ) -> Result<u64> {
        let mut tx = self.write().await?;
        let moved = incident::move_connections(&mut tx, id, connections, from, to, unix_now()).await?;
        audit::append(self.engine, &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a connection state"))?;
        Ok(moved)
    }

    async fn set_webhook(&self, w: &WebhookRecord, audit_records: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO webhooks (tenant, url, secret, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant) DO UPDATE SET url = excluded.url, secret = excluded.secret, created_at = excluded.created_at",
        )
        .bind(&w.tenant)
        .bind(&w.url)
        .bind(&w.secret)
        .bind(w.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match is_foreign_key_violation(&e) {
            true => StoreError::NotFound { what: format!("tenant {}", w.tenant) },
            false => StoreError::Database { operation: "set a webhook", source: e },
        })?;
        audit::append(self.engine, &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a webhook"))
    }

    async fn webhooks(&self) -> Result<Vec<WebhookRecord>> {
        let rows = fetch_all(&self.pool, "SELECT * FROM webhooks ORDER BY tenant", "read webhooks").await?;
        rows.iter()
            .map(|r| {
                Ok(WebhookRecord {
                    tenant: col(r, "tenant")?,
                    url: col(r, "url")?,
                    secret: col(r, "secret")?,
                    created_at: col(r, "created_at")?,
                })
            })
            .collect()
    }

    async fn outbox_due(&self, now: i64, limit: i64) -> Result<Vec<OutboxMessage>> {
        let rows =
            sqlx::query("SELECT * FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY id LIMIT $2")
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("read the outbox"))?;
        rows.iter().map(incident::outbox).collect()
    }

    async fn outbox(&self, id: &str) -> Result<Vec<OutboxMessage>> {
        let rows = sqlx::query("SELECT * FROM outbox WHERE incident = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("read the outbox"))?;
        rows.iter().map(incident::outbox).collect()
    }

    async fn outbox_attempt(
        &self,
        id: i64,
        delivered: bool,
        now: i64,
        next_attempt_at: i64,
        error: Option<&str>,
        audit_records: &[AuditRecord],
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let row = sqlx::query("SELECT * FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db("read a notification"))?
            .ok_or_else(|| StoreError::NotFound { what: format!("notification {id}") })?;
        let message = incident::outbox(&row)?;
        if message.state != "pending" {
            return Ok(());
        }
        sqlx::query(
            "UPDATE outbox SET state = $1, attempts = attempts + 1, next_attempt_at = $2, last_error = $3, delivered_at = $4 WHERE id = $5",
        )
        .bind(if delivered { "delivered" } else { "pending" })
        .bind(next_attempt_at)
        .bind(error)
        .bind(delivered.then_some(now))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("record a delivery attempt"))?;
        if delivered {
            let connections: Vec<(String, String)> =
                message.connections.iter().map(|c| (message.tenant.clone(), c.clone())).collect();
            incident::move_connections(
                &mut tx,
                &message.incident,
                &connections,
                &["replacement-issued"],
                "notified",
                now,
            )
            .await?;
        }
        audit::append(self.engine, &mut tx, audit_records).await?;
        tx.commit().await.map_err(StoreError::db("commit a delivery attempt"))
    }
}

fn checkpoint(r: &AnyRow) -> Result<CheckpointRecord> {
    Ok(CheckpointRecord {
        size: col::<i64>(r, "size")? as u64,
        time: col(r, "time")?,
        root: col(r, "root")?,
        note: col(r, "note")?,
    })
}
