//! The Merkle audit log in SQL: appending entries with their tree nodes inside
//! the caller's transaction, and reading entries, nodes and checkpoints.
//!
//! The append reads the tree's right edge (at most 64 nodes) in the same
//! transaction that writes, so two processes appending in turn (the CLI next
//! to a running server) extend one tree, never fork it.

use std::collections::HashMap;

use custos_audit::EntryFields;
use custos_audit::merkle::{Frontier, Hash, NodeId, frontier_ids};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AssertSqlSafe, Transaction};

use crate::dialect::{Engine, params, values_clause};
use crate::rows::col;
use crate::{AuditEntry, AuditFilter, AuditRecord, Result, StoreError};

/// Statements in a SQLite script that is kept prepared: the hot paths write
/// entries, nodes and one or two statements of their own rows.
const SCRIPT_STATEMENTS_CACHED: usize = 4;

/// Entries per multi-row INSERT; 9 columns stay far below SQLite's bound on parameters.
const ROWS_PER_INSERT: usize = 100;

/// Appends `records` to the log inside `tx`: assigns the next indexes, hashes
/// each canonical entry and writes the entries and every node they complete.
/// Returns the index of the first. Bad details (not JSON, too large) fail
/// before anything is written.
pub(crate) async fn append(w: Writer<'_>, tx: &mut Transaction<'static, Any>, records: &[AuditRecord]) -> Result<u64> {
    let prepared = prepare(w, tx, records).await?;
    prepared.write(w.engine, tx, Vec::new()).await.map_err(StoreError::db("write audit entries"))?;
    Ok(prepared.first)
}

/// The tree's right edge as this store's last append left it: the size, the
/// last leaf and the edge. An append that finds the log still ending in that
/// leaf at that size reuses the edge instead of reading up to 64 nodes.
/// Leaves are salted, so a log that another writer extended (the CLI next to
/// a running server, another node) or whose transaction rolled back ends in
/// a different leaf, and the edge is read again.
#[derive(Debug, Default)]
pub(crate) struct EdgeCache(std::sync::Mutex<Option<(u64, Hash, Frontier)>>);

/// What an append needs of its store: the engine, and the edge its last append left.
#[derive(Clone, Copy)]
pub(crate) struct Writer<'s> {
    /// The store's engine.
    pub(crate) engine: Engine,
    edge: &'s EdgeCache,
}

impl<'s> Writer<'s> {
    /// The writer of a store with this engine and edge cache.
    pub(crate) fn new(engine: Engine, edge: &'s EdgeCache) -> Writer<'s> {
        Writer { engine, edge }
    }
}

/// An append whose indexes, hashes and nodes are computed and whose rows are
/// not yet written: [`Prepared::write`] writes them.
pub(crate) struct Prepared<'r> {
    /// The index of the first record.
    pub(crate) first: u64,
    records: &'r [AuditRecord],
    leaves: Vec<Hash>,
    salts: Vec<[u8; custos_audit::SALT_BYTES]>,
    interior: Vec<(NodeId, Hash)>,
}

/// A statement the caller writes in the same round trip as an append's rows
/// (SQLite runs them as one script): its SQL, with `?` placeholders on SQLite,
/// and what binds its values.
pub(crate) type Extra<'q> = (String, Box<dyn FnOnce(Query<'q>) -> Query<'q> + Send + 'q>);

/// An [`Extra`] from its SQL and what binds its values.
pub(crate) fn extra<'q>(sql: String, bind: impl FnOnce(Query<'q>) -> Query<'q> + Send + 'q) -> Extra<'q> {
    (sql, Box::new(bind))
}

/// A query on the `Any` driver.
pub(crate) type Query<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>;

/// Computes the append of `records` at the log's end inside `tx`: reads the
/// last entry (and the edge, unless `w` holds it), assigns indexes and
/// salts, and hashes leaves and nodes. Writes nothing.
pub(crate) async fn prepare<'r>(
    w: Writer<'_>,
    tx: &mut Transaction<'static, Any>,
    records: &'r [AuditRecord],
) -> Result<Prepared<'r>> {
    let last = sqlx::query("SELECT idx, leaf_hash FROM audit_log ORDER BY idx DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await
        .map_err(StoreError::db("read the audit log's last entry"))?;
    let (size, last_leaf) = match &last {
        Some(row) => {
            let index: i64 = col(row, "idx")?;
            ((index + 1) as u64, Some(hash_of(col(row, "leaf_hash")?, index)?))
        }
        None => (0, None),
    };
    if records.is_empty() {
        return Ok(Prepared { first: size, records, leaves: Vec::new(), salts: Vec::new(), interior: Vec::new() });
    }
    let edge = w.edge;
    let cached = match (&last_leaf, edge.0.lock()) {
        (Some(leaf), Ok(held)) => {
            held.as_ref().filter(|(n, l, _)| *n == size && l == leaf).map(|(_, _, frontier)| frontier.clone())
        }
        _ => None,
    };
    let mut frontier = match cached {
        Some(frontier) => frontier,
        None => {
            let ids = frontier_ids(size);
            let found = nodes(tx, w.engine, &ids).await?;
            let hashes: Vec<Hash> = ids.iter().map(|id| found[id]).collect();
            Frontier::new(size, &hashes).map_err(|e| StoreError::Corrupt(format!("audit tree edge: {e}")))?
        }
    };
    let mut leaves = Vec::with_capacity(records.len());
    let mut salts = Vec::with_capacity(records.len());
    let mut interior = Vec::with_capacity(records.len());
    // One random draw per append (1.2 µs each, as much as the commitment's
    // hash): each entry's salt is it with the entry's index folded into the
    // last eight bytes, so salts stay unique per entry and unguessable.
    let base = custos_audit::new_salt().map_err(|e| StoreError::Invalid(e.to_string()))?;
    for (i, r) in records.iter().enumerate() {
        let index = size + i as u64;
        let mut salt = base;
        for (s, b) in salt[custos_audit::SALT_BYTES - 8..].iter_mut().zip(index.to_be_bytes()) {
            *s ^= b;
        }
        let bytes = fields(index, r, Some(&salt)).encode().map_err(|e| StoreError::Invalid(e.to_string()))?;
        salts.push(salt);
        let leaf = custos_audit::merkle::leaf_hash(&bytes);
        frontier.push_into(leaf, &mut interior);
        leaves.push(leaf);
    }
    if let (Some(leaf), Ok(mut held)) = (leaves.last(), edge.0.lock()) {
        *held = Some((frontier.size(), *leaf, frontier));
    }
    Ok(Prepared { first: size, records, leaves, salts, interior })
}

impl Prepared<'_> {
    /// Writes the entries and nodes, and the `extra` statements after them. SQLite runs all
    /// of it as one script (one round trip to its worker thread instead of
    /// one per statement); PostgreSQL runs each statement in turn. The
    /// caller names the operation in the error.
    pub(crate) async fn write<'q>(
        &'q self,
        engine: Engine,
        tx: &mut Transaction<'static, Any>,
        extra: Vec<Extra<'q>>,
    ) -> std::result::Result<(), sqlx::Error> {
        let mut statements: Vec<Extra<'q>> = Vec::new();
        for (chunk_no, rows) in self.records.chunks(ROWS_PER_INSERT).enumerate() {
            let first = chunk_no * ROWS_PER_INSERT;
            let sql = format!(
                "INSERT INTO audit_log (idx, time, actor, action, object, key_id, details, leaf_hash, salt) VALUES {}",
                values_clause(engine, rows.len(), 9)
            );
            statements.push((
                sql,
                Box::new(move |mut query: Query<'q>| {
                    for (j, r) in rows.iter().enumerate() {
                        let n = first + j;
                        query = query
                            .bind((self.first + n as u64) as i64)
                            .bind(r.time)
                            .bind(&r.actor)
                            .bind(&r.action)
                            .bind(&r.object)
                            .bind(&r.key)
                            .bind(&r.details)
                            .bind(&self.leaves[n][..])
                            .bind(&self.salts[n][..]);
                    }
                    query
                }),
            ));
        }
        for rows in self.interior.chunks(ROWS_PER_INSERT * 2) {
            let sql =
                format!("INSERT INTO audit_tree (level, idx, hash) VALUES {}", values_clause(engine, rows.len(), 3));
            statements.push((
                sql,
                Box::new(move |mut query: Query<'q>| {
                    for (id, hash) in rows {
                        query = query.bind(i64::from(id.level)).bind(id.index as i64).bind(&hash[..]);
                    }
                    query
                }),
            ));
        }
        statements.extend(extra);
        if statements.is_empty() {
            return Ok(());
        }
        match engine {
            Engine::Sqlite => {
                let script = statements.iter().map(|(sql, _)| sql.as_str()).collect::<Vec<_>>().join(";\n");
                // A bulk write's script (hundreds of statements) is prepared
                // for this run only: kept in the connection's statement cache,
                // each would hold its prepared statements' memory until evicted.
                let cache = statements.len() <= SCRIPT_STATEMENTS_CACHED;
                let mut query = sqlx::query(AssertSqlSafe(script)).persistent(cache);
                for (_, bind) in statements {
                    query = bind(query);
                }
                query.execute(&mut **tx).await?;
            }
            Engine::Postgres => {
                for (sql, bind) in statements {
                    bind(sqlx::query(AssertSqlSafe(sql))).execute(&mut **tx).await?;
                }
            }
        }
        Ok(())
    }
}

/// An entry's canonical fields, as hashed and served.
pub fn entry_fields(entry: &AuditEntry) -> EntryFields<'_> {
    fields(entry.index, &entry.record, entry.salt.as_deref())
}

/// The canonical fields of a record at `index`: public with a salt, clear without.
fn fields<'a>(index: u64, r: &'a AuditRecord, salt: Option<&'a [u8]>) -> EntryFields<'a> {
    EntryFields {
        index,
        time: r.time,
        actor: &r.actor,
        action: &r.action,
        object: &r.object,
        key: r.key.as_deref(),
        details: &r.details,
        salt,
    }
}

/// Number of entries, as seen by `conn`.
pub(crate) async fn size_in(conn: &mut AnyConnection) -> Result<u64> {
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log")
        .fetch_one(conn)
        .await
        .map_err(StoreError::db("read the audit log size"))?;
    Ok(next as u64)
}

/// Reads the given nodes; every one must exist.
pub(crate) async fn nodes(conn: &mut AnyConnection, engine: Engine, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>> {
    let mut out = HashMap::with_capacity(ids.len());
    // A bounded query each: SQLite refuses an expression tree deeper than 1000.
    for chunk in ids.chunks(NODES_PER_QUERY) {
        out.extend(nodes_chunk(conn, engine, chunk).await?);
    }
    Ok(out)
}

/// Node ids read per query.
const NODES_PER_QUERY: usize = 400;

async fn nodes_chunk(conn: &mut AnyConnection, engine: Engine, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>> {
    let mut out = HashMap::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    let leaves: Vec<&NodeId> = ids.iter().filter(|id| id.level == 0).collect();
    let inner: Vec<&NodeId> = ids.iter().filter(|id| id.level > 0).collect();
    let mut parts = Vec::new();
    if !leaves.is_empty() {
        parts.push(format!(
            "SELECT CAST(0 AS BIGINT) AS level, idx, leaf_hash AS hash FROM audit_log WHERE idx IN ({})",
            params(engine, 1, leaves.len())
        ));
    }
    if !inner.is_empty() {
        let pairs: Vec<String> = (0..inner.len())
            .map(|k| {
                let n = leaves.len() + 2 * k + 1;
                format!("(level = {} AND idx = {})", params(engine, n, 1), params(engine, n + 1, 1))
            })
            .collect();
        parts.push(format!("SELECT level, idx, hash FROM audit_tree WHERE {}", pairs.join(" OR ")));
    }
    let mut query = sqlx::query(AssertSqlSafe(parts.join(" UNION ALL ")));
    for id in &leaves {
        query = query.bind(id.index as i64);
    }
    for id in &inner {
        query = query.bind(i64::from(id.level)).bind(id.index as i64);
    }
    let rows = query.fetch_all(conn).await.map_err(StoreError::db("read audit tree nodes"))?;
    for row in &rows {
        let level: i64 = col(row, "level")?;
        let index: i64 = col(row, "idx")?;
        let hash = hash_of(col(row, "hash")?, index)?;
        out.insert(NodeId { level: level as u8, index: index as u64 }, hash);
    }
    if let Some(missing) = ids.iter().find(|id| !out.contains_key(id)) {
        return Err(StoreError::Corrupt(format!(
            "audit tree node (level {}, index {}) is missing",
            missing.level, missing.index
        )));
    }
    Ok(out)
}

/// A stored hash, which must be 32 bytes.
pub(crate) fn hash_of(bytes: Vec<u8>, index: i64) -> Result<Hash> {
    bytes.try_into().map_err(|_| StoreError::Corrupt(format!("audit hash at index {index} is not 32 bytes")))
}

/// Decodes an `audit_log` row.
pub(crate) fn entry(row: &AnyRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        index: col::<i64>(row, "idx")? as u64,
        record: AuditRecord {
            time: col(row, "time")?,
            actor: col(row, "actor")?,
            action: col(row, "action")?,
            object: col(row, "object")?,
            key: col(row, "key_id")?,
            details: col(row, "details")?,
        },
        leaf_hash: col(row, "leaf_hash")?,
        salt: col(row, "salt")?,
    })
}

/// Entries packed into one text row by [`read_entries`].
const ENTRIES_PER_ROW: u64 = 1000;

/// Reads entries `[from, from + limit)` in index order. SQLite packs a
/// thousand entries into one text row (each field length-prefixed, so any
/// content unpacks exactly): decoding a row per entry through `sqlx::Any`
/// cost 7 µs each, which alone made verifying a million entries take 7 s.
pub(crate) async fn read_entries(
    pool: &sqlx::AnyPool,
    engine: Engine,
    from: u64,
    limit: u64,
) -> Result<Vec<AuditEntry>> {
    read_page(pool, engine, from, limit).await?.entries().map(|e| e.map(|e| e.to_entry())).collect()
}

/// [`read_entries`], left packed: each entry is parsed in place when read.
pub(crate) async fn read_page(pool: &sqlx::AnyPool, engine: Engine, from: u64, limit: u64) -> Result<AuditPage> {
    let mut page = AuditPage { rows: Vec::new(), count: 0, next: from };
    let mut next = from;
    while (page.count as u64) < limit {
        let want = (limit - page.count as u64).min(ENTRIES_PER_ROW);
        let sql = match engine {
            Engine::Sqlite => {
                "SELECT group_concat(packed, '') AS packed, count(*) AS n, max(idx) AS last FROM (SELECT idx, \
                   idx || ' ' || time || ' ' \
                   || length(CAST(actor AS BLOB)) || ' ' || actor \
                   || length(CAST(action AS BLOB)) || ' ' || action \
                   || length(CAST(object AS BLOB)) || ' ' || object \
                   || coalesce(length(CAST(key_id AS BLOB)), -1) || ' ' || coalesce(key_id, '') \
                   || length(CAST(details AS BLOB)) || ' ' || details \
                   || length(hex(leaf_hash)) || ' ' || hex(leaf_hash) \
                   || coalesce(length(hex(salt)), -1) || ' ' || coalesce(hex(salt), '') AS packed \
                 FROM audit_log WHERE idx >= $1 ORDER BY idx LIMIT $2)"
            }
            Engine::Postgres => {
                "SELECT string_agg(packed, '' ORDER BY idx) AS packed, count(*) AS n, max(idx) AS last FROM (SELECT idx, \
                   idx || ' ' || time || ' ' \
                   || octet_length(actor) || ' ' || actor \
                   || octet_length(action) || ' ' || action \
                   || octet_length(object) || ' ' || object \
                   || coalesce(octet_length(key_id), -1) || ' ' || coalesce(key_id, '') \
                   || octet_length(details) || ' ' || details \
                   || octet_length(encode(leaf_hash, 'hex')) || ' ' || encode(leaf_hash, 'hex') \
                   || coalesce(octet_length(encode(salt, 'hex')), -1) || ' ' || coalesce(encode(salt, 'hex'), '') AS packed \
                 FROM audit_log WHERE idx >= $1 ORDER BY idx LIMIT $2) AS page"
            }
        };
        let row = sqlx::query(sql)
            .bind(next as i64)
            .bind(want as i64)
            .fetch_one(pool)
            .await
            .map_err(StoreError::db("read the audit log"))?;
        let count: i64 = col(&row, "n")?;
        let Some(packed) = col::<Option<String>>(&row, "packed")? else { break };
        let last: i64 = col(&row, "last")?;
        // Parsed when read (an entry that does not parse is an error then).
        page.rows.push(packed);
        page.count += count as usize;
        next = last as u64 + 1;
        page.next = next;
        if (count as u64) < want {
            break;
        }
    }
    Ok(page)
}

/// Audit entries as the database packed them (a thousand to a text row):
/// each is parsed in place when read, so verifying a million entries costs
/// no allocation per entry.
#[derive(Debug)]
pub struct AuditPage {
    rows: Vec<String>,
    count: usize,
    next: u64,
}

impl AuditPage {
    /// How many entries the page holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The index after the page's last entry (where the next page starts).
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// The entries in index order.
    pub fn entries(&self) -> impl Iterator<Item = Result<AuditEntryView<'_>>> + '_ {
        self.rows.iter().flat_map(|row| {
            let mut text = row.as_str();
            std::iter::from_fn(move || (!text.is_empty()).then(|| unpack(&mut text)))
        })
    }
}

/// One entry read in place from an [`AuditPage`]: its fields borrowed from
/// the page, its salt decoded (the page holds it as hex).
#[derive(Clone, Copy, Debug)]
pub struct AuditEntryView<'a> {
    /// The fields as stored, without the salt (see [`fields`](Self::fields)).
    unsalted: EntryFields<'a>,
    leaf_hex: &'a str,
    salt: Option<([u8; 32], usize)>,
}

impl<'a> AuditEntryView<'a> {
    /// The entry's canonical fields, as hashed and served.
    pub fn fields(&self) -> EntryFields<'_> {
        EntryFields { salt: self.salt.as_ref().map(|(bytes, len)| &bytes[..*len]), ..self.unsalted }
    }

    /// The leaf hash the database holds; empty when it is not 32 bytes of hex
    /// (which the verifier then reports as a mismatch).
    pub fn stored_leaf(&self) -> ([u8; 32], usize) {
        let mut leaf = [0u8; 32];
        match hex::decode_to_slice(self.leaf_hex, &mut leaf) {
            Ok(()) => (leaf, 32),
            Err(_) => (leaf, 0),
        }
    }

    /// The entry, owned.
    pub fn to_entry(&self) -> AuditEntry {
        let f = &self.unsalted;
        AuditEntry {
            index: f.index,
            record: AuditRecord {
                time: f.time,
                actor: f.actor.to_string(),
                action: f.action.to_string(),
                object: f.object.to_string(),
                key: f.key.map(str::to_string),
                details: f.details.to_string(),
            },
            leaf_hash: hex::decode(self.leaf_hex).unwrap_or_default(),
            salt: self.salt.map(|(bytes, len)| bytes[..len].to_vec()),
        }
    }
}

/// Splits the next entry off a row packed by [`read_page`].
fn unpack<'a>(text: &mut &'a str) -> Result<AuditEntryView<'a>> {
    let bad = |what: &str| StoreError::Corrupt(format!("packed audit entry: {what}"));
    fn number<'a>(text: &mut &'a str) -> Option<&'a str> {
        let (n, rest) = text.split_once(' ')?;
        *text = rest;
        Some(n)
    }
    fn field<'a>(text: &mut &'a str) -> Option<Option<&'a str>> {
        let len: i64 = number(text)?.parse().ok()?;
        if len < 0 {
            return Some(None);
        }
        let value = text.get(..len as usize)?;
        *text = &text[len as usize..];
        Some(Some(value))
    }
    let index: u64 = number(text).and_then(|n| n.parse().ok()).ok_or_else(|| bad("index"))?;
    let time: i64 = number(text).and_then(|n| n.parse().ok()).ok_or_else(|| bad("time"))?;
    let mut next = || field(text).ok_or_else(|| bad("field"));
    let actor = next()?.unwrap_or_default();
    let action = next()?.unwrap_or_default();
    let object = next()?.unwrap_or_default();
    let key = next()?;
    let details = next()?.unwrap_or_default();
    let leaf_hex = next()?.unwrap_or_default();
    let salt = match next()? {
        None => None,
        Some(hex) => {
            let mut bytes = [0u8; 32];
            let len = hex.len() / 2;
            let out = bytes.get_mut(..len).ok_or_else(|| bad("salt longer than 32 bytes"))?;
            hex::decode_to_slice(hex, out).map_err(|_| bad("salt"))?;
            Some((bytes, len))
        }
    };
    let unsalted = EntryFields { index, time, actor, action, object, key, details, salt: None };
    Ok(AuditEntryView { unsalted, leaf_hex, salt })
}

/// Fills in leaf hashes and tree nodes for entries written before the log
/// was a Merkle log (marked by an empty `leaf_hash`); runs once, at open.
pub(crate) async fn backfill(w: Writer<'_>, tx: &mut Transaction<'static, Any>) -> Result<()> {
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE length(leaf_hash) = 0")
        .fetch_one(&mut **tx)
        .await
        .map_err(StoreError::db("look for unhashed audit entries"))?;
    if pending == 0 {
        return Ok(());
    }
    let rows = sqlx::query("SELECT * FROM audit_log ORDER BY idx")
        .fetch_all(&mut **tx)
        .await
        .map_err(StoreError::db("read the audit log"))?;
    let entries: Vec<AuditEntry> = rows.iter().map(entry).collect::<Result<_>>()?;
    sqlx::query("DELETE FROM audit_log").execute(&mut **tx).await.map_err(StoreError::db("rewrite the audit log"))?;
    sqlx::query("DELETE FROM audit_tree").execute(&mut **tx).await.map_err(StoreError::db("rewrite the audit log"))?;
    let records: Vec<AuditRecord> = entries.into_iter().map(|e| e.record).collect();
    append(w, tx, &records).await?;
    Ok(())
}

/// The audit filter's rule, applied in the store's scan.
pub(crate) trait Matches {
    /// Whether an entry passes the filter.
    fn matches(&self, record: &AuditRecord) -> bool;
}

impl Matches for AuditFilter {
    /// Whether an entry passes the filter. An action matches when equal, or
    /// as a dotted prefix (`certificate`) or suffix (`revoke`); `any_of`, when
    /// not empty, must contain the action.
    fn matches(&self, record: &AuditRecord) -> bool {
        let action_ok = self.action.as_deref().is_none_or(|action| {
            record.action == action
                || record.action.strip_prefix(action).is_some_and(|r| r.starts_with('.'))
                || record.action.strip_suffix(action).is_some_and(|r| r.ends_with('.'))
        });
        let listed = self.any_of.is_empty() || self.any_of.contains(&record.action);
        action_ok && listed && self.key.as_deref().is_none_or(|k| record.key.as_deref() == Some(k))
    }
}
