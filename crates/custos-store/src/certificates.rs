//! Issued certificates and the queries over them. The SQL implementation of [`crate::CertificateStore`].

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use crate::backend::SqlStore;
use crate::dialect::*;
use crate::log;
use crate::rows::*;
use crate::*;

#[async_trait]
impl CertificateStore for SqlStore {
    async fn insert_certificates(&self, certificates: &[CertificateRecord], audit: &[AuditRecord]) -> Result<()> {
        let mut tx = self.write().await?;
        insert_certificates_logged(self, &mut tx, certificates, audit).await?;
        tx.commit().await.map_err(StoreError::db("commit certificates"))
    }

    async fn insert_requested_certificates(
        &self,
        certificates: &[CertificateRecord],
        request_keys: &[String],
        audit: &[AuditRecord],
    ) -> Result<()> {
        if certificates.len() != request_keys.len() {
            return Err(StoreError::Invalid(format!(
                "{} certificates but {} request keys",
                certificates.len(),
                request_keys.len()
            )));
        }
        let mut tx = self.write().await?;
        insert_certificates_logged(self, &mut tx, certificates, audit).await?;
        for (certs, keys) in certificates.chunks(ROWS_PER_INSERT).zip(request_keys.chunks(ROWS_PER_INSERT)) {
            let sql = format!(
                "INSERT INTO issued_requests (request_key, serial) VALUES {}",
                values_clause(self.engine, keys.len(), 2)
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (c, k) in certs.iter().zip(keys) {
                q = q.bind(k).bind(&c.serial);
            }
            q.execute(&mut *tx).await.map_err(|e| match is_unique_violation(&e) {
                true => StoreError::Duplicate { what: "a request key issued before".into() },
                false => StoreError::Database { operation: "record request keys", source: e },
            })?;
        }
        tx.commit().await.map_err(StoreError::db("commit certificates"))
    }

    async fn certificate_states(&self, cursor: Option<&str>, limit: i64) -> Result<CertificateStatePage> {
        // Packed into one text row per page, as `revoked` does: decoding a
        // million rows one by one through sqlx cost more than the comparison.
        // SQLite pages by rowid, the order rows are stored in (by serial it
        // read a random page per row: 7.5 µs each). Names, ids and hex never
        // hold ' ' or ';'.
        let fields = "serial || ' ' || issuer || ' ' || tenant || ' ' || connection || ' ' || spki_sha256 || ' ' \
                      || not_after || ' ' || status || ' ' || coalesce(revocation_reason, '-')";
        let sql = match self.engine {
            Engine::Sqlite => format!(
                "SELECT group_concat({fields}, ';'), max(rowid), count(*) FROM \
                 (SELECT rowid, * FROM certificates WHERE rowid > CAST($1 AS INTEGER) ORDER BY rowid LIMIT $2)"
            ),
            Engine::Postgres => format!(
                "SELECT string_agg({fields}, ';' ORDER BY serial), max(serial), count(*) FROM \
                 (SELECT * FROM certificates WHERE serial > $1 ORDER BY serial LIMIT $2) AS page"
            ),
        };
        let start = match (cursor, self.engine) {
            (Some(c), _) => c.to_string(),
            (None, Engine::Sqlite) => "0".to_string(),
            (None, Engine::Postgres) => String::new(),
        };
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&start)
            .bind(limit)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::db("read certificate states"))?;
        let packed: Option<String> = row.try_get(0).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let next: Option<String> = match self.engine {
            Engine::Sqlite => {
                row.try_get::<Option<i64>, _>(1).map_err(|e| StoreError::Corrupt(e.to_string()))?.map(|n| n.to_string())
            }
            Engine::Postgres => row.try_get(1).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        };
        let count: i64 = row.try_get(2).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let next = if count < limit { None } else { next };
        Ok(CertificateStatePage { packed: packed.unwrap_or_default(), count: count as usize, next })
    }

    async fn issued_requests(&self, request_keys: &[String]) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for chunk in request_keys.chunks(500) {
            let sql = format!(
                "SELECT request_key, serial FROM issued_requests WHERE request_key IN ({})",
                params(self.engine, 1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(k);
            }
            for row in q.fetch_all(&self.pool).await.map_err(StoreError::db("read request keys"))? {
                out.push((col(&row, "request_key")?, col(&row, "serial")?));
            }
        }
        Ok(out)
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
        rows.iter().map(owner_from).collect()
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
}

impl SqlStore {
    /// Runs a certificate query with `filter` applied, selecting `columns`.
    pub(crate) async fn filtered(&self, filter: &CertificateFilter, columns: &str) -> Result<Vec<AnyRow>> {
        /// One bound value, in the order its placeholder appears.
        enum Arg<'a> {
            Text(&'a str),
            Number(i64),
        }
        // The text is built from fixed fragments only; every value is bound.
        let mut sql = format!("SELECT {columns} FROM certificates WHERE 1 = 1");
        fn push<'a>(sql: &mut String, args: &mut Vec<Arg<'a>>, fragment: &str, arg: Arg<'a>) {
            args.push(arg);
            *sql += &fragment.replace('?', &format!("${}", args.len()));
        }
        let mut args: Vec<Arg> = Vec::new();
        macro_rules! bind {
            ($sql:expr, $fragment:expr, $arg:expr) => {
                push($sql, &mut args, $fragment, $arg)
            };
        }
        if let Some(t) = &filter.tenant {
            bind!(&mut sql, " AND tenant = ?", Arg::Text(t));
        }
        if let Some(c) = &filter.connection {
            bind!(&mut sql, " AND connection = ?", Arg::Text(c));
        }
        if let Some(i) = &filter.issuer {
            bind!(&mut sql, " AND issuer = ?", Arg::Text(i));
        }
        if let Some(n) = &filter.san {
            // Names are indexed apart from the row (one row per name): an exact match, not a scan.
            bind!(&mut sql, " AND serial IN (SELECT serial FROM certificate_names WHERE name = ?)", Arg::Text(n));
        }
        match filter.status {
            Some(StatusFilter::Valid) => {
                bind!(&mut sql, " AND status = 'valid' AND not_after >= ?", Arg::Number(filter.now));
            }
            Some(StatusFilter::Expired) => {
                bind!(&mut sql, " AND status = 'valid' AND not_after < ?", Arg::Number(filter.now));
            }
            Some(StatusFilter::Revoked) => sql += " AND status = 'revoked'",
            None => {}
        }
        if let Some(before) = filter.expiring_before {
            bind!(&mut sql, " AND not_after < ?", Arg::Number(before));
        }
        if let Some((created, serial)) = &filter.after {
            // The first term is a range on the (created_at DESC, serial) index, so a
            // page deep in the list starts where it is instead of walking up to it.
            bind!(&mut sql, " AND created_at <= ?", Arg::Number(*created));
            bind!(&mut sql, " AND (created_at < ?", Arg::Number(*created));
            bind!(&mut sql, " OR serial > ?)", Arg::Text(serial));
        }
        sql += " ORDER BY created_at DESC, serial";
        if let Some(limit) = filter.limit {
            bind!(&mut sql, " LIMIT ?", Arg::Number(limit));
        }
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for arg in args {
            query = match arg {
                Arg::Text(t) => query.bind(t),
                Arg::Number(n) => query.bind(n),
            };
        }
        query.fetch_all(&self.pool).await.map_err(StoreError::db("list certificates"))
    }

    /// Runs `select` (ending in `WHERE` or `AND`) with `serial IN (...)`, five hundred serials at a time.
    pub(crate) async fn rows_for_serials(&self, serials: &[String], select: &str) -> Result<Vec<AnyRow>> {
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
}

/// Appends `audit` and inserts `certificates` inside `tx`, a hundred rows per
/// statement; each certificate row records the log index of its
/// `certificate.issue` entry, so a certificate's trail is found without an
/// index over the whole log (an index keyed by a random serial cost every
/// issuance a random b-tree insert). Returns the first entry's index.
pub(crate) async fn insert_certificates_logged(
    store: &SqlStore,
    tx: &mut Transaction<'static, Any>,
    certificates: &[CertificateRecord],
    audit: &[AuditRecord],
) -> Result<u64> {
    let engine = store.engine;
    let prepared = log::prepare(store.log(), tx, audit).await?;
    let first = prepared.first;
    let issued: std::collections::HashMap<&str, i64> = audit
        .iter()
        .enumerate()
        .filter(|(_, r)| r.action == "certificate.issue")
        .filter_map(|(i, r)| Some((r.object.strip_prefix("cert:")?, (first + i as u64) as i64)))
        .collect();
    let issued = &issued;
    // Each name a certificate covers, indexed for the inventory's search by name.
    let mut names: Vec<(&str, &str)> = Vec::new();
    for c in certificates {
        let mut own: Vec<&str> = c.sans.iter().map(String::as_str).collect();
        own.sort_unstable();
        own.dedup();
        names.extend(own.into_iter().map(|n| (n, c.serial.as_str())));
    }
    let mut rows: Vec<log::Extra<'_>> = Vec::new();
    for chunk in certificates.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO certificates ({CERTIFICATE_COLUMNS}, issued_entry) VALUES {}",
            values_clause(engine, chunk.len(), CERTIFICATE_COLUMN_COUNT + 1)
        );
        rows.push(log::extra(sql, move |mut query| {
            for c in chunk {
                query = query
                    .bind(&c.serial)
                    .bind(&c.issuer)
                    .bind(&c.tenant)
                    .bind(&c.connection)
                    .bind(c.profile.as_str())
                    .bind(&c.subject)
                    .bind(json_list(&c.sans))
                    .bind(&c.key_algorithm)
                    .bind(&c.key_origin)
                    .bind(&c.spki_sha256)
                    .bind(c.not_before)
                    .bind(c.not_after)
                    .bind(&c.der)
                    .bind(c.status.as_str())
                    .bind(c.revoked_at)
                    .bind(c.revocation_reason.map(custos_types::Reason::as_str))
                    .bind(c.invalidity_date)
                    .bind(&c.replaced_by)
                    .bind(c.crl_partition)
                    .bind(c.created_at)
                    .bind(issued.get(c.serial.as_str()).copied());
            }
            query
        }));
    }
    for chunk in names.chunks(ROWS_PER_INSERT * 5) {
        let sql =
            format!("INSERT INTO certificate_names (name, serial) VALUES {}", values_clause(engine, chunk.len(), 2));
        rows.push(log::extra(sql, move |mut query| {
            for (name, serial) in chunk {
                query = query.bind(*name).bind(*serial);
            }
            query
        }));
    }
    // The entries, nodes, certificates and names in one round trip on SQLite.
    prepared.write(engine, tx, rows).await.map_err(|e| {
        if is_unique_violation(&e) && e.to_string().contains("certificates") {
            StoreError::Duplicate { what: "certificate serial".into() }
        } else if is_foreign_key_violation(&e) {
            StoreError::NotFound { what: "connection or issuer of a certificate".into() }
        } else {
            StoreError::Database { operation: "record certificates and their audit entries", source: e }
        }
    })?;
    Ok(first)
}

/// A page of [`CertificateState`]s as the database packed them: each state
/// is parsed in place when it is read, so no row costs an allocation.
#[derive(Debug)]
pub struct CertificateStatePage {
    packed: String,
    count: usize,
    next: Option<String>,
}

impl CertificateStatePage {
    /// How many states the page holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the page holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The cursor of the next page; `None` after the last.
    pub fn next_cursor(&self) -> Option<&str> {
        self.next.as_deref()
    }

    /// Each state on the page, in the order read; a row that does not parse is
    /// [`StoreError::Corrupt`] naming it.
    pub fn states(&self) -> impl Iterator<Item = Result<CertificateState<'_>>> + '_ {
        self.packed.split(';').filter(|_| self.count > 0).map(parse_state)
    }
}

fn parse_state(entry: &str) -> Result<CertificateState<'_>> {
    let bad = || StoreError::Corrupt(format!("certificate state {entry:?}"));
    let mut f = entry.split(' ');
    let mut next = || f.next().ok_or_else(bad);
    let (serial, issuer, tenant, connection, spki_sha256) = (next()?, next()?, next()?, next()?, next()?);
    let (not_after, status, reason) = (next()?, next()?, next()?);
    if f.next().is_some() {
        return Err(bad());
    }
    Ok(CertificateState {
        serial,
        issuer,
        tenant,
        connection,
        spki_sha256,
        not_after: not_after.parse().map_err(|_| bad())?,
        status: status.parse().map_err(|_| bad())?,
        revocation_reason: match reason {
            "-" => None,
            r => Some(r.parse().map_err(|_| bad())?),
        },
    })
}
