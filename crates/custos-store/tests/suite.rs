//! The storage contract, written once and run against every backend (SQLite,
//! and PostgreSQL under scripts/test): every method of every store trait,
//! incidents, locks and the outbox included. `every_store_method_is_exercised`
//! fails when a trait gains a method this suite does not call.

use custos_audit::merkle::{self, Frontier, NodeId};
use custos_store::prelude::*;
use custos_store::{
    AcmeAccountRecord, AcmeAuthzRecord, AcmeEabRecord, AcmeOrderRecord, AcmeWrite, ApprovalRecord, AuditFilter,
    AuditRecord, BlockedKey, CertificateFilter, CertificateRecord, CheckpointRecord, ConnectionRecord, CustodyChange,
    CustodyKeyRecord, CustodySlot, Genesis, IncidentCertificate, IncidentRecord, IncidentReplacements, IssuerRecord,
    KeyRecord, OperatorRecord, OutboxMessage, Replacement, ResponderRecord, Revocation, SignatureProbe,
    SignatureRecord, SigningPolicy, SqlStore, StatusFilter, Store, StoreError, TenantRecord, TokenRecord, Transition,
    WebhookRecord,
};
use custos_types::{CertificateStatus, IssuerRole, IssuerStatus, KeyStatus, Profile, Reason};
use custos_types::{ConnectionState, DeliveryState, IncidentState};

fn audit(action: &str) -> AuditRecord {
    AuditRecord {
        time: 1,
        actor: "test".into(),
        action: action.into(),
        object: "x".into(),
        key: None,
        details: "{}".into(),
    }
}

fn genesis() -> Genesis {
    Genesis {
        meta: vec![("base_url".into(), "http://127.0.0.1:8080".into())],
        keys: vec![KeyRecord {
            id: "k1".into(),
            backend: "soft".into(),
            algorithm: "p256".into(),
            label: "issuing-1".into(),
            public_key: vec![1, 2, 3],
            reference: vec![4, 5, 6],
            status: KeyStatus::Active,
            created_at: 1,
        }],
        issuers: vec![IssuerRecord {
            id: "issuing-1".into(),
            name: "Issuing".into(),
            role: IssuerRole::Issuing,
            parent: None,
            key_id: "k1".into(),
            cert_der: vec![0x30, 0],
            fingerprint: "AA".into(),
            not_after: 2_000_000_000,
            status: IssuerStatus::Active,
            crl_number: 0,
            created_at: 1,
            revoked_at: None,
        }],
        audit: vec![audit("genesis")],
    }
}

fn cert(serial: &str, connection: &str, not_after: i64) -> CertificateRecord {
    CertificateRecord {
        serial: serial.into(),
        issuer: "issuing-1".into(),
        tenant: "acme".into(),
        connection: connection.into(),
        profile: Profile::Client,
        subject: "CN=x".into(),
        sans: vec!["a.example".into()],
        key_algorithm: "p256".into(),
        key_origin: "csr".into(),
        spki_sha256: "00".into(),
        not_before: 0,
        not_after,
        der: vec![0x30, 0x03, 1, 2, 3],
        status: CertificateStatus::Valid,
        revoked_at: None,
        revocation_reason: None,
        invalidity_date: None,
        replaced_by: None,
        crl_partition: 0,
        created_at: 10,
    }
}

fn connection(name: &str) -> ConnectionRecord {
    ConnectionRecord {
        tenant: "acme".into(),
        name: name.into(),
        profile: Profile::Client,
        allowed_sans: vec!["*.example".into()],
        key_algorithm: "p256".into(),
        validity_days: Some(30),
        created_at: 1,
    }
}

async fn audit_count(store: &dyn Store) -> usize {
    store.audit_entries(0, 1_000_000).await.expect("audit").len()
}

/// The whole contract against one store.
async fn contract(store: &dyn Store) {
    // Genesis is atomic and happens once.
    store.initialize(genesis()).await.expect("genesis");
    assert!(matches!(store.initialize(genesis()).await, Err(StoreError::AlreadyInitialized)));
    assert_eq!(store.issuers().await.expect("issuers").len(), 1);
    assert_eq!(audit_count(store).await, 1);
    assert_eq!(store.meta("base_url").await.expect("meta").as_deref(), Some("http://127.0.0.1:8080"));

    // Tenants and connections, each with its audit entry; duplicates and
    // dangling references are refused and leave no audit entry behind.
    store
        .add_tenant(&TenantRecord { name: "acme".into(), created_at: 1, custody_default: false }, &audit("tenant.add"))
        .await
        .expect("tenant");
    assert!(matches!(
        store
            .add_tenant(
                &TenantRecord { name: "acme".into(), created_at: 2, custody_default: false },
                &audit("tenant.add")
            )
            .await,
        Err(StoreError::Duplicate { .. })
    ));
    store.add_connection(&connection("mail"), &audit("connection.add")).await.expect("connection");
    store.add_connection(&connection("web"), &audit("connection.add")).await.expect("connection");
    let mut orphan = connection("x");
    orphan.tenant = "nobody".into();
    assert!(matches!(store.add_connection(&orphan, &audit("connection.add")).await, Err(StoreError::NotFound { .. })));
    assert!(matches!(store.add_connection(&connection("mail"), &audit("c")).await, Err(StoreError::Duplicate { .. })));
    assert_eq!(audit_count(store).await, 4, "only successful changes are audited");
    store.set_custody_default("acme", true, &audit("tenant.custody-default")).await.expect("default");
    assert!(store.tenant("acme").await.expect("read").expect("there").custody_default);
    store.set_custody_default("acme", false, &audit("tenant.custody-default")).await.expect("default");
    assert!(!store.tenants().await.expect("list")[0].custody_default);
    assert!(matches!(
        store.set_custody_default("nobody", true, &audit("tenant.custody-default")).await,
        Err(StoreError::NotFound { .. })
    ));
    let c = store.connection("acme", "mail").await.expect("read").expect("exists");
    assert_eq!(c, connection("mail"));
    assert_eq!(store.connections(Some("acme")).await.expect("list").len(), 2);

    // A batch of certificates commits whole, with its audit entries...
    let batch: Vec<CertificateRecord> = (0..250).map(|i| cert(&format!("{i:04x}"), "mail", 1_000 + i)).collect();
    let audits: Vec<AuditRecord> = (0..250).map(|_| audit("certificate.issue")).collect();
    store.insert_certificates(&batch, &audits).await.expect("batch");
    assert_eq!(audit_count(store).await, 256);
    assert_eq!(store.certificate("0007").await.expect("read").expect("exists"), batch[7]);
    // ...or not at all: a duplicate serial at the end of the next batch rolls back all of it.
    let mut bad: Vec<CertificateRecord> = (0..150).map(|i| cert(&format!("b{i:04x}"), "web", 5_000)).collect();
    bad.push(cert("0001", "web", 5_000));
    assert!(matches!(store.insert_certificates(&bad, &audits[..151]).await, Err(StoreError::Duplicate { .. })));
    assert!(store.certificate("b0000").await.expect("read").is_none(), "no partial batch");
    assert_eq!(audit_count(store).await, 256, "no audit entries from the failed batch");
    let mut dangling = cert("ffff", "nope", 5_000);
    dangling.connection = "nope".into();
    assert!(matches!(store.insert_certificates(&[dangling], &[audit("x")]).await, Err(StoreError::NotFound { .. })));

    // Filters.
    let mut named = cert("aaaa", "web", 9_000);
    named.sans = vec!["b.example".into(), "x.b.example".into()];
    store.insert_certificates(&[named], &[audit("certificate.issue")]).await.expect("one");
    let all = |f: CertificateFilter| async move { store.certificates(&f).await.expect("list") };
    assert_eq!(all(CertificateFilter::default()).await.len(), 251);
    assert_eq!(all(CertificateFilter { connection: Some("web".into()), ..Default::default() }).await.len(), 1);
    assert_eq!(all(CertificateFilter { expiring_before: Some(1_010), ..Default::default() }).await.len(), 10);
    let expired = CertificateFilter { status: Some(StatusFilter::Expired), now: 1_100, ..Default::default() };
    assert_eq!(all(expired).await.len(), 100);
    let valid = CertificateFilter { status: Some(StatusFilter::Valid), now: 1_100, ..Default::default() };
    assert_eq!(all(valid).await.len(), 151);
    assert_eq!(all(CertificateFilter { limit: Some(5), ..Default::default() }).await.len(), 5);
    assert_eq!(all(CertificateFilter { tenant: Some("nobody".into()), ..Default::default() }).await.len(), 0);
    // By SAN: one element exactly, not a substring of another.
    let san = |n: &str| CertificateFilter { san: Some(n.into()), ..Default::default() };
    assert_eq!(all(san("x.b.example")).await.len(), 1);
    assert_eq!(all(san("b.example")).await.len(), 1);
    assert_eq!(all(san("example")).await.len(), 0);
    assert_eq!(all(san("a.example")).await.len(), 250);
    // Pages: every certificate once, in the listing order, whatever the page size.
    let everything: Vec<String> = all(CertificateFilter::default()).await.into_iter().map(|c| c.serial).collect();
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = all(CertificateFilter { after: after.clone(), limit: Some(37), ..Default::default() }).await;
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.serial.clone()));
        paged.extend(page.into_iter().map(|c| c.serial));
    }
    assert_eq!(paged, everything);

    // Revocation: atomic over its serials, fed to every process, audited.
    let audits_before = audit_count(store).await;
    assert_eq!(store.last_revocation().await.expect("feed"), 0);
    let revocation = Revocation { revoked_at: 2_000, reason: Reason::KeyCompromise, invalidity_date: Some(1_500) };
    store.revoke(&["0001".into(), "0002".into()], &revocation, &[], &[audit("r"), audit("r")]).await.expect("revoke");
    // A batch with an unknown serial, or an already revoked one, changes nothing.
    assert!(matches!(
        store.revoke(&["0003".into(), "nope".into()], &revocation, &[], &[audit("r")]).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.revoke(&["0004".into(), "0001".into()], &revocation, &[], &[audit("r")]).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.certificate("0003").await.expect("r").expect("e").status, CertificateStatus::Valid);
    assert_eq!(store.certificate("0004").await.expect("r").expect("e").status, CertificateStatus::Valid);
    assert_eq!(audit_count(store).await, audits_before + 2);
    let revoked = store.revoked("issuing-1", 0).await.expect("revoked");
    assert_eq!(revoked.len(), 2);
    assert_eq!(revoked[0].reason, Some(Reason::KeyCompromise));
    assert_eq!((revoked[0].revoked_at, revoked[0].invalidity_date), (2_000, Some(1_500)));
    let feed = store.revocations_since(0, 100).await.expect("feed");
    assert_eq!(feed.iter().map(|e| e.serial.as_str()).collect::<Vec<_>>(), ["0001", "0002"]);
    assert!(store.revocations_since(feed[1].seq, 100).await.expect("feed").is_empty());
    assert_eq!(store.last_revocation().await.expect("feed"), feed[1].seq);
    let many: Vec<String> = (0..10).map(|i| format!("{i:04x}")).filter(|s| s != "0001" && s != "0002").collect();
    store.revoke(&many, &revocation, &[], &[]).await.expect("revoke many");
    assert_eq!(store.revoked("issuing-1", 0).await.expect("revoked").len(), 10);
    assert_eq!(store.revoked("issuing-1", 1).await.expect("revoked").len(), 0, "partitions are apart");
    assert_eq!(store.reserve_issuance("issuing-1", 5).await.expect("reserve"), 0);
    assert_eq!(store.reserve_issuance("issuing-1", 3).await.expect("reserve"), 5);
    assert_eq!(store.issued("issuing-1").await.expect("issued"), 8);
    // CRL numbers only go up.
    let a = store.next_crl_number("issuing-1", &audit("crl.sign")).await.expect("n");
    let b = store.next_crl_number("issuing-1", &audit("crl.sign")).await.expect("n");
    assert!(b > a);
    assert!(matches!(store.next_crl_number("nope", &audit("x")).await, Err(StoreError::NotFound { .. })));
    audit_contract(store).await;
}

/// Recomputes the tree from the entries' content and checks every stored leaf hash.
async fn recompute(store: &dyn Store) -> Frontier {
    let mut frontier = Frontier::default();
    for (i, e) in store.audit_entries(0, u64::MAX).await.expect("entries").iter().enumerate() {
        assert_eq!(e.index, i as u64, "indexes are gap-free");
        let leaf = merkle::leaf_hash(&custos_store::entry_fields(e).encode().expect("encode"));
        assert_eq!(e.leaf_hash, leaf.to_vec(), "leaf hash of entry {i}");
        frontier.push(leaf);
    }
    frontier
}

/// The stored tree's root, from stored nodes only.
async fn stored_root(store: &dyn Store, size: u64) -> merkle::Hash {
    let ids = merkle::needed_nodes(|read| merkle::tree_hash(size, read));
    let nodes = store.audit_nodes(&ids).await.expect("nodes");
    merkle::tree_hash(size, &mut |id| nodes[&id])
}

/// The Merkle audit log: append, nodes, proofs, tiles, checkpoints, search, usage.
async fn audit_contract(store: &dyn Store) {
    let before = store.audit_size().await.expect("size");
    assert_eq!(recompute(store).await.size(), before);
    let keyed = |i: usize| AuditRecord {
        key: Some(if i.is_multiple_of(3) { "k1" } else { "k2" }.into()),
        time: 86_400 * (1 + i as i64 % 2),
        details: format!(r#"{{"n":{i}}}"#),
        ..audit(if i.is_multiple_of(2) { "crl.sign" } else { "certificate.issue" })
    };
    let batch: Vec<AuditRecord> = (0..600).map(keyed).collect();
    assert_eq!(store.append_audit(&batch).await.expect("append"), before);
    let size = before + 600;
    assert_eq!(store.audit_size().await.expect("size"), size);
    let frontier = recompute(store).await;
    assert_eq!(stored_root(store, size).await, frontier.root(), "stored nodes give the recomputed root");

    // Proofs from stored nodes check out against the root.
    let entries = store.audit_entries(0, u64::MAX).await.expect("entries");
    for index in [0, 1, before, size / 2, size - 1] {
        let ids = merkle::needed_nodes(|read| merkle::inclusion_proof(index, size, read));
        let nodes = store.audit_nodes(&ids).await.expect("nodes");
        let proof = merkle::inclusion_proof(index, size, &mut |id| nodes[&id]).expect("proof");
        let leaf: merkle::Hash = entries[index as usize].leaf_hash.clone().try_into().expect("32");
        merkle::verify_inclusion(&leaf, index, size, &proof, &frontier.root()).expect("proof verifies");
    }
    // Tiles: level 0 is the leaf hashes, level 8 the roots of 256-leaf subtrees.
    let tile = store.audit_level(0, 256, 256).await.expect("tile");
    assert_eq!(tile[0].to_vec(), entries[256].leaf_hash);
    let level8 = store.audit_level(8, 0, 2).await.expect("level 8");
    let n = store.audit_nodes(&[NodeId { level: 8, index: 1 }]).await.expect("node");
    assert_eq!(level8[1], n[&NodeId { level: 8, index: 1 }]);
    assert!(matches!(store.audit_level(0, size - 1, 2).await, Err(StoreError::NotFound { .. })));
    assert!(store.audit_nodes(&[NodeId { level: 0, index: size }]).await.is_err(), "no node beyond the tree");

    // Any text reads back exactly: spaces, digits, newlines, multi-byte characters, no key.
    let odd = AuditRecord {
        actor: "cli:a b 12 3\nnext ✓".into(),
        object: "".into(),
        key: None,
        details: r#"{"x":"é \" 1 2 ","y":[1,2]}"#.into(),
        ..audit("odd 1 2")
    };
    let at = store.append_audit(std::slice::from_ref(&odd)).await.expect("append odd");
    assert_eq!(store.audit_entries(at, 1).await.expect("read")[0].record, odd);
    let size = size + 1;
    assert_eq!(recompute(store).await.size(), size);

    // Bad details change nothing.
    let bad = AuditRecord { details: "{oops".into(), ..audit("x") };
    assert!(matches!(store.append_audit(&[audit("ok"), bad]).await, Err(StoreError::Invalid(_))));
    assert_eq!(store.audit_size().await.expect("size"), size, "a refused batch writes nothing");

    // Checkpoints: stored once per size, newest first.
    assert_eq!(store.latest_checkpoint().await.expect("none"), None);
    for (s, note) in [(size - 1, "a"), (size, "b"), (size, "c")] {
        let cp = CheckpointRecord { size: s, time: 5, root: vec![1; 32], note: note.into() };
        store.add_checkpoint(&cp).await.expect("checkpoint");
    }
    let cps = store.checkpoints().await.expect("checkpoints");
    assert_eq!(cps.iter().map(|c| (c.size, c.note.as_str())).collect::<Vec<_>>(), [(size - 1, "a"), (size, "b")]);
    assert_eq!(store.latest_checkpoint().await.expect("latest").map(|c| c.size), Some(size));
    store.add_cosignatures(size, "\u{2014} w1 AAAA\n").await.expect("cosign");
    assert_eq!(store.latest_checkpoint().await.expect("latest").map(|c| c.note), Some("b\u{2014} w1 AAAA\n".into()));
    assert!(matches!(store.add_cosignatures(size + 9, "x").await, Err(StoreError::NotFound { .. })));

    // Search and usage.
    let filter = |action: Option<&str>, key: Option<&str>, from: Option<u64>, limit| AuditFilter {
        action: action.map(Into::into),
        any_of: vec![],
        key: key.map(Into::into),
        from,
        limit,
    };
    let newest = store.audit_search(&filter(None, None, None, 3)).await.expect("tail");
    assert_eq!(newest.iter().map(|e| e.index).collect::<Vec<_>>(), [size - 3, size - 2, size - 1]);
    let listed = AuditFilter {
        any_of: vec!["certificate.issue".into(), "crl.sign".into(), "ocsp.sign".into()],
        ..filter(None, Some("k1"), Some(before), 10_000)
    };
    let signs = store.audit_search(&listed).await.expect("search");
    assert_eq!(signs.len(), 200, "every third of 600 used k1, and all are one of those actions");
    let none = AuditFilter { any_of: vec!["tenant.add".into()], ..filter(None, Some("k1"), Some(before), 10_000) };
    assert!(store.audit_search(&none).await.expect("search").is_empty());
    let crl = store.audit_search(&filter(Some("crl"), None, Some(before), 10_000)).await.expect("search");
    assert_eq!(crl.len(), 300);
    let issue = store.audit_search(&filter(Some("issue"), Some("k2"), Some(before), 5)).await.expect("search");
    assert!(issue.iter().all(|e| e.record.action == "certificate.issue" && e.record.key.as_deref() == Some("k2")));
    assert_eq!(issue.len(), 5);
    let all = store.audit_entries(0, size + 10).await.expect("all");
    let object = all[before as usize + 5].record.object.clone();
    // Issuance entries are found through their certificate's row (certificate_trail_contract), not this index.
    let expected: Vec<u64> = all
        .iter()
        .filter(|e| e.record.object == object && e.record.action != "certificate.issue")
        .map(|e| e.index)
        .collect();
    let trail = store.audit_for_object(&object, 1_000_000).await.expect("trail");
    assert_eq!(trail.iter().map(|e| e.index).collect::<Vec<_>>(), expected);
    let newest = store.audit_for_object(&object, 2).await.expect("trail");
    assert_eq!(newest.iter().map(|e| e.index).collect::<Vec<_>>(), expected[expected.len().saturating_sub(2)..]);
    assert!(store.audit_for_object("cert:nothing", 10).await.expect("none").is_empty());
    let usage = store.key_usage("k1").await.expect("usage");
    assert_eq!(usage.iter().map(|u| u.count).sum::<i64>(), 200);
    assert!(usage.iter().all(|u| u.day == 1 || u.day == 2), "{usage:?}");
    // A packed page gives the same entries, parsed in place, across its text rows.
    let filler: Vec<AuditRecord> = (0..1100).map(|i| audit(&format!("filler {i}"))).collect();
    store.append_audit(&filler).await.expect("filler");
    let size = store.audit_size().await.expect("size");
    let page = store.audit_page(0, size + 10).await.expect("page");
    assert_eq!((page.len() as u64, page.next_index()), (size, size));
    let viewed: Vec<custos_store::AuditEntry> = page.entries().map(|e| e.expect("parses").to_entry()).collect();
    assert_eq!(viewed, store.audit_entries(0, size + 10).await.expect("entries"));
    let odd_view = page.entries().nth(at as usize).expect("the odd entry").expect("parses");
    let odd_entry = &viewed[at as usize];
    assert_eq!(
        odd_view.fields().encode().expect("encode"),
        custos_store::entry_fields(odd_entry).encode().expect("encode")
    );
    assert_eq!(&odd_view.stored_leaf().0[..], &odd_entry.leaf_hash[..]);
}

/// A fresh, empty PostgreSQL database on the throwaway cluster scripts/test
/// starts (`CUSTOS_TEST_POSTGRES`), or `None` to skip where it is not required.
async fn fresh_postgres() -> Option<String> {
    let Ok(base) = std::env::var("CUSTOS_TEST_POSTGRES") else {
        let required = std::env::var("CUSTOS_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
            || std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!required, "CUSTOS_TEST_POSTGRES is not set: run through scripts/test");
        eprintln!("skipping PostgreSQL: CUSTOS_TEST_POSTGRES not set");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("suite_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await.expect("connect to the cluster");
    sqlx::Executor::execute(&mut admin, sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create db");
    let (prefix, _) = base.rsplit_once('/').expect("database in URL");
    Some(format!("{prefix}/{name}"))
}

static NEXT_DB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Where each backend keeps a store for one test.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    async fn sqlite() -> Option<Backend> {
        Some(Backend::Sqlite(tempfile::tempdir().expect("tempdir")))
    }

    async fn postgres() -> Option<Backend> {
        fresh_postgres().await.map(Backend::Postgres)
    }

    async fn open(&self) -> SqlStore {
        match self {
            Backend::Sqlite(dir) => SqlStore::open_sqlite(&dir.path().join("custos.db")).await.expect("open sqlite"),
            Backend::Postgres(url) => SqlStore::open_postgres(url).await.expect("open postgres"),
        }
    }
}

fn key(id: &str) -> KeyRecord {
    KeyRecord { id: id.into(), label: format!("label-{id}"), ..genesis().keys[0].clone() }
}

/// Settings, keys, issuers, responders and the certificate queries `contract` leaves out;
/// runs after it (tenant `acme`, connections `mail` and `web`, serials 0000.. and w).
async fn inventory_contract(store: &dyn Store) {
    let before = audit_count(store).await;
    store.set_meta("crl_partition_size", "10", &[audit("meta.set")]).await.expect("set");
    store.set_meta("crl_partition_size", "20", &[audit("meta.set")]).await.expect("replace");
    assert_eq!(store.meta("crl_partition_size").await.expect("meta").as_deref(), Some("20"));
    assert_eq!(store.meta("nothing").await.expect("meta"), None);
    let first = store.set_meta_once("once", "a", &[audit("meta.set")]).await.expect("once");
    let second = store.set_meta_once("once", "b", &[audit("meta.set")]).await.expect("again");
    assert_eq!((first.as_str(), second.as_str()), ("a", "a"), "the first value stays; the second writes nothing");
    assert_eq!(store.tenant("acme").await.expect("tenant").map(|t| t.name), Some("acme".into()));
    assert_eq!(store.tenant("nobody").await.expect("tenant"), None);
    assert_eq!(store.tenants().await.expect("tenants").len(), 1);

    // Keys: added with the settings that name them, read back, destroyed (reference wiped).
    store.add_key(&key("k2"), &[("audit_key".into(), "k2".into())], &[audit("key.generate")]).await.expect("key");
    assert!(matches!(
        store.add_key(&key("k2"), &[], &[audit("key.generate")]).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(store.meta("audit_key").await.expect("meta").as_deref(), Some("k2"));
    assert_eq!(store.key("k2").await.expect("key"), Some(key("k2")));
    assert_eq!(store.keys().await.expect("keys").iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k1", "k2"]);
    assert_eq!(store.issuer("issuing-1").await.expect("issuer").map(|i| i.key_id), Some("k1".into()));
    assert_eq!(store.issuer("nope").await.expect("issuer"), None);

    // A responder: its key and certificate together.
    let responder = ResponderRecord {
        issuer: "issuing-1".into(),
        key_id: "k3".into(),
        cert_der: vec![0x30, 1],
        not_after: 99,
        created_at: 3,
    };
    store.add_responder(&key("k3"), &responder, &[audit("responder.issue")]).await.expect("responder");
    assert_eq!(store.responder("issuing-1").await.expect("responder"), Some(responder));
    assert_eq!(store.responder("nope").await.expect("responder"), None);
    // New references for live keys, with the setting that opens them, together.
    store
        .replace_key_references(&[("k2".into(), vec![7, 7])], &[("audit_key".into(), "k2".into())], &[audit("reseal")])
        .await
        .expect("replace");
    assert_eq!(store.key("k2").await.expect("key").map(|k| k.reference), Some(vec![7, 7]));
    store.destroy_key("k3", &[audit("key.destroy")]).await.expect("destroy");
    assert!(matches!(
        store.replace_key_references(&[("k2".into(), vec![8]), ("k3".into(), vec![8])], &[], &[audit("reseal")]).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.key("k2").await.expect("key").map(|k| k.reference), Some(vec![7, 7]), "all or nothing");
    let gone = store.key("k3").await.expect("key").expect("still recorded");
    assert_eq!((gone.status, gone.reference.is_empty()), (KeyStatus::Destroyed, true));
    assert!(store.destroy_key("nope", &[audit("key.destroy")]).await.is_err(), "no such key");
    assert_eq!(audit_count(store).await, before + 7, "each change with its entries, the refused ones without");

    // The blocklist: with a revocation (atomically), by hand, and the first reason stays.
    let blocked = |spki: &str, source: &str| BlockedKey {
        spki_sha256: spki.into(),
        reason: "key-compromise".into(),
        source: source.into(),
        created_at: 7,
    };
    let revocation = Revocation { revoked_at: 3_000, reason: Reason::KeyCompromise, invalidity_date: None };
    store
        .revoke(&["0010".into()], &revocation, &[blocked("aa", "cert:0010")], &[audit("r"), audit("key.block")])
        .await
        .expect("revoke and block");
    // A refused revocation blocks nothing either.
    assert!(store.revoke(&["0010".into()], &revocation, &[blocked("bb", "cert:0010")], &[]).await.is_err());
    store
        .block_keys(&[blocked("aa", "by hand"), blocked("cc", "by hand")], &[audit("key.block")])
        .await
        .expect("block");
    let found = store.blocked_keys(&["aa".into(), "bb".into(), "cc".into(), "dd".into()]).await.expect("blocked");
    let mut found: Vec<(String, String)> = found.into_iter().map(|b| (b.spki_sha256, b.source)).collect();
    found.sort();
    assert_eq!(found, [("aa".into(), "cert:0010".into()), ("cc".into(), "by hand".into())]);
    assert_eq!(store.blocklist().await.expect("list").len(), 2);

    // Certificate queries for the blast radius of an incident.
    let found = store.certificates_by_serials(&["0001".into(), "0010".into(), "zzzz".into()]).await.expect("by serial");
    assert_eq!(found.len(), 2);
    assert_eq!(store.valid_serials(&["0001".into(), "0011".into(), "zzzz".into()]).await.expect("valid"), ["0011"]);
    assert_eq!(store.certificates_by_spki("00").await.expect("spki").len(), 251);
    assert!(store.certificates_by_spki("ff").await.expect("spki").is_empty());
    let owners = store
        .certificate_owners(&CertificateFilter { connection: Some("web".into()), ..Default::default() })
        .await
        .expect("owners");
    assert_eq!(owners.len(), 1);
    assert_eq!((owners[0].tenant.as_str(), owners[0].connection.as_str()), ("acme", "web"));
}

fn incident_record() -> IncidentRecord {
    IncidentRecord {
        id: "INC-0001".into(),
        scope_kind: "issuer".into(),
        scope_value: "issuing-1".into(),
        reason: Reason::KeyCompromise,
        since: Some(5),
        note: "test".into(),
        state: IncidentState::Declared,
        new_issuers: vec![],
        declared_at: 6,
        declared_by: "local:uid=0(root)".into(),
        executed_at: None,
        revoked_at: None,
        replaced_at: None,
        closed_at: None,
    }
}

fn owner(serial: &str, connection: &str) -> IncidentCertificate {
    IncidentCertificate { serial: serial.into(), tenant: "acme".into(), connection: connection.into() }
}

/// Incidents, their lock, re-keying, replacements, connection states, webhooks
/// and the outbox; runs after `inventory_contract`.
async fn incident_contract(store: &dyn Store) {
    let id = "INC-0001";
    let record = incident_record();
    store
        .add_incident(&record, &[owner("0005", "mail"), owner("0006", "mail")], &[audit("incident.declare")])
        .await
        .expect("declare");
    assert!(matches!(
        store.add_incident(&record, &[], &[audit("incident.declare")]).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert_eq!(store.incident(id).await.expect("incident"), Some(record.clone()));
    assert_eq!(store.incident("INC-9999").await.expect("incident"), None);
    assert_eq!(store.incidents().await.expect("incidents").len(), 1);
    // Found later: one already known (skipped), one on a new connection.
    store
        .add_incident_certificates(id, &[owner("0006", "mail"), owner("aaaa", "web")], &[audit("incident.extend")])
        .await
        .expect("extend");
    assert_eq!(store.incident_certificates(id).await.expect("radius").len(), 3);
    let connections = store.incident_connections(id).await.expect("connections");
    assert_eq!(
        connections.iter().map(|c| (c.connection.as_str(), c.state)).collect::<Vec<_>>(),
        [("mail", ConnectionState::Pending), ("web", ConnectionState::Pending)]
    );
    let web = store.incident_connection(id, "acme", "web").await.expect("one connection");
    assert_eq!(web.map(|c| c.state), Some(ConnectionState::Pending));
    assert_eq!(store.incident_connection(id, "acme", "nowhere").await.expect("none"), None);
    assert_eq!(store.certificate_incidents("aaaa").await.expect("incidents of a certificate"), vec![id.to_string()]);
    assert!(store.certificate_incidents("ffff").await.expect("none").is_empty());

    // The execution lock: held, refused, lapsed, taken from a dead holder, released only by its holder.
    assert_eq!(store.lock_incident(id, "a", 10, 20, None).await.expect("lock"), None);
    assert_eq!(store.lock_incident(id, "b", 15, 25, None).await.expect("lock").as_deref(), Some("a"));
    assert_eq!(store.lock_incident(id, "b", 21, 31, None).await.expect("lock"), None, "a's lock lapsed");
    assert_eq!(store.lock_incident(id, "c", 22, 32, Some("b")).await.expect("lock"), None, "b is known dead");
    store.unlock_incident(id, "b").await.expect("unlock by a non-holder changes nothing");
    assert_eq!(store.lock_incident(id, "d", 23, 33, None).await.expect("lock").as_deref(), Some("c"));
    store.unlock_incident(id, "c").await.expect("unlock");
    assert_eq!(store.lock_incident(id, "d", 24, 34, None).await.expect("lock"), None);
    assert!(matches!(store.lock_incident("INC-9999", "d", 1, 2, None).await, Err(StoreError::NotFound { .. })));

    // State and timestamps.
    let mut executing = IncidentRecord { state: IncidentState::Executing, executed_at: Some(30), ..record.clone() };
    store.update_incident(&executing, &[audit("incident.execute")]).await.expect("update");
    assert_eq!(store.incident(id).await.expect("incident"), Some(executing.clone()));

    // Re-keying: a new CA in, the compromised one and its key marked, the incident's record with them.
    executing.new_issuers = vec!["issuing-2".into()];
    let new_ca = IssuerRecord { id: "issuing-2".into(), key_id: "k4".into(), ..genesis().issuers[0].clone() };
    store
        .rekey(
            &executing,
            &[key("k4")],
            std::slice::from_ref(&new_ca),
            &[("issuing-1".into(), "0a".into())],
            &[audit("issuer.create")],
        )
        .await
        .expect("rekey");
    let old = store.issuer("issuing-1").await.expect("issuer").expect("kept");
    assert_eq!((old.status, old.revoked_at.is_some()), (IssuerStatus::Compromised, true));
    assert_eq!(store.key("k1").await.expect("key").map(|k| k.status), Some(KeyStatus::Compromised));
    assert_eq!(store.issuer("issuing-2").await.expect("issuer"), Some(new_ca));
    assert_eq!(store.incident(id).await.expect("incident").map(|i| i.new_issuers), Some(vec!["issuing-2".into()]));

    // Idempotency keys commit with their certificates; a key used before fails the whole batch.
    let keyed = [cert("c0de01", "mail", 9_000), cert("c0de02", "mail", 9_000)];
    let keys = ["job:1".to_string(), "job:2".to_string()];
    store.insert_requested_certificates(&keyed, &keys, &[audit("certificate.issue")]).await.expect("keyed");
    let again = [cert("c0de03", "mail", 9_000), cert("c0de04", "mail", 9_000)];
    let reused = ["job:3".to_string(), "job:2".to_string()];
    assert!(matches!(
        store.insert_requested_certificates(&again, &reused, &[]).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert!(store.certificate("c0de03").await.expect("read").is_none(), "no partial keyed batch");
    let mut found = store.issued_requests(&["job:2".into(), "job:1".into(), "job:3".into()]).await.expect("keys");
    found.sort();
    assert_eq!(found, [("job:1".to_string(), "c0de01".to_string()), ("job:2".into(), "c0de02".into())]);
    assert!(store.insert_requested_certificates(&again, &reused[..1], &[]).await.is_err(), "one key per certificate");

    // Webhooks: set, replaced.
    let hook = |url: &str| WebhookRecord { tenant: "acme".into(), url: url.into(), secret: "s".into(), created_at: 1 };
    store.set_webhook(&hook("http://127.0.0.1:1/a"), &[audit("tenant.webhook")]).await.expect("webhook");
    store.set_webhook(&hook("http://127.0.0.1:1/b"), &[audit("tenant.webhook")]).await.expect("replace");
    assert_eq!(store.webhooks().await.expect("webhooks"), [hook("http://127.0.0.1:1/b")]);
    // A signature is good once until it is forgotten.
    assert!(store.use_signature("aa", 100, 0).await.expect("first use"));
    assert!(!store.use_signature("aa", 101, 0).await.expect("replay"), "a second use is refused");
    assert!(store.use_signature("bb", 102, 0).await.expect("another"));
    assert!(store.use_signature("aa", 800, 500).await.expect("forgotten after the window"));

    // Replacements: certificates, pending -> replacement-issued, and the notification, together.
    let replace = Transition { from: &[ConnectionState::Pending], to: ConnectionState::ReplacementIssued };
    let message = OutboxMessage {
        id: 0,
        incident: id.into(),
        tenant: "acme".into(),
        connections: vec!["mail".into()],
        url: "http://127.0.0.1:1/b".into(),
        body: "{}".into(),
        state: DeliveryState::Pending,
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        created_at: 0,
        delivered_at: None,
    };
    let new_cert = CertificateRecord { issuer: "issuing-2".into(), ..cert("r0", "mail", 3_000_000_000) };
    let replacement = Replacement { tenant: "acme".into(), connection: "mail".into(), serial: "r0".into() };
    store
        .record_replacements(
            id,
            std::slice::from_ref(&new_cert),
            std::slice::from_ref(&replacement),
            &replace,
            &[message],
            &[audit("i")],
        )
        .await
        .expect("replacements");
    assert_eq!(store.certificate("r0").await.expect("read"), Some(new_cert));
    // Again: the connection is no longer pending, and nothing of the batch is written.
    let again = CertificateRecord { issuer: "issuing-2".into(), ..cert("r1", "mail", 3_000_000_000) };
    let repeated = Replacement { serial: "r1".into(), ..replacement };
    assert!(matches!(
        store.record_replacements(id, &[again], &[repeated], &replace, &[], &[audit("i")]).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.certificate("r1").await.expect("read"), None, "no partial batch");

    // The outbox: due, a failed attempt (retry later), then delivered (connections move on).
    let due = store.outbox_due(1_000_000_000_000, 10).await.expect("due");
    assert_eq!(due.len(), 1);
    let notified = Transition { from: &[ConnectionState::ReplacementIssued], to: ConnectionState::Notified };
    store
        .outbox_attempt(
            due[0].id,
            DeliveryState::Pending,
            100,
            200,
            Some("HTTP 500"),
            &notified,
            &[audit("notification.fail")],
        )
        .await
        .expect("fail");
    assert!(store.outbox_due(150, 10).await.expect("due").is_empty(), "not before its next attempt");
    let listed = store.outbox(id).await.expect("outbox");
    assert_eq!((listed[0].attempts, listed[0].last_error.as_deref()), (1, Some("HTTP 500")));
    store
        .outbox_attempt(
            due[0].id,
            DeliveryState::Delivered,
            300,
            300,
            None,
            &notified,
            &[audit("notification.deliver")],
        )
        .await
        .expect("deliver");
    let listed = store.outbox(id).await.expect("outbox");
    assert_eq!((listed[0].state, listed[0].delivered_at), (DeliveryState::Delivered, Some(300)));
    let state = |c: &str| {
        let c = c.to_string();
        async move {
            store
                .incident_connections(id)
                .await
                .expect("connections")
                .into_iter()
                .find(|x| x.connection == c)
                .expect("row")
        }
    };
    let mail = state("mail").await;
    assert_eq!((mail.state, mail.replacement.as_deref()), (ConnectionState::Notified, Some("r0")));

    // Acknowledge and retire, only from the states the transition names.
    let ack = Transition {
        from: &[ConnectionState::ReplacementIssued, ConnectionState::Notified],
        to: ConnectionState::Acknowledged,
    };
    let pair = |c: &str| vec![("acme".to_string(), c.to_string())];
    assert_eq!(
        store.move_connections(id, &pair("web"), &ack, &[audit("ack")]).await.expect("move"),
        0,
        "web is still pending"
    );
    assert_eq!(store.move_connections(id, &pair("mail"), &ack, &[audit("ack")]).await.expect("move"), 1);
    let retire = Transition { from: &[ConnectionState::Acknowledged], to: ConnectionState::OldCertificateRetired };
    assert_eq!(store.move_connections(id, &pair("mail"), &retire, &[audit("retire")]).await.expect("move"), 1);
    let mail = state("mail").await;
    assert_eq!(mail.state, ConnectionState::OldCertificateRetired);
    assert!(
        mail.issued_at.is_some()
            && mail.notified_at.is_some()
            && mail.acknowledged_at.is_some()
            && mail.retired_at.is_some()
    );
    let back = Transition { from: &[ConnectionState::OldCertificateRetired], to: ConnectionState::Pending };
    assert!(matches!(store.move_connections(id, &pair("mail"), &back, &[]).await, Err(StoreError::Invalid(_))));
}

/// The contract, then a reopen that finds everything and migrates idempotently.
async fn honours_the_contract(backend: Backend) {
    let store = backend.open().await;
    contract(&store).await;
    inventory_contract(&store).await;
    incident_contract(&store).await;
    access_contract(&store).await;
    custody_contract(&store).await;
    acme_contract(&store).await;
    maintenance_contract(&backend, &store).await;
    connection_update_contract(&store).await;
    certificate_trail_contract(&store).await;
    store.close().await;
    let again = backend.open().await;
    assert_eq!(again.certificates(&CertificateFilter::default()).await.expect("list").len(), 261);
    assert_eq!(again.incidents().await.expect("incidents").len(), 2);
}

/// A certificate's trail: its issuance entry through the index its row
/// records (issuance entries are kept out of the object index), the rest
/// through the object index, oldest first, newest `limit`.
async fn certificate_trail_contract(store: &dyn Store) {
    let record = |action: &str, object: &str| AuditRecord { object: object.into(), ..audit(action) };
    let first = cert("7a11e01", "mail", 9_999);
    let second = cert("7a11e02", "mail", 9_999);
    let issued = vec![
        record("tenant.note", "tenant:acme"),
        record("certificate.issue", "cert:7a11e01"),
        record("certificate.issue", "cert:7a11e02"),
    ];
    store.insert_certificates(&[first, second], &issued).await.expect("issue");
    let size = store.audit_size().await.expect("size");
    let (one, two) = (size - 2, size - 1);
    let revocation = Revocation { revoked_at: 3_000, reason: Reason::Superseded, invalidity_date: None };
    store
        .revoke(&["7a11e01".into()], &revocation, &[], &[record("certificate.revoke", "cert:7a11e01")])
        .await
        .expect("revoke");
    let trail = store.audit_for_object("cert:7a11e01", 10).await.expect("trail");
    assert_eq!(
        trail.iter().map(|e| (e.index, e.record.action.as_str())).collect::<Vec<_>>(),
        [(one, "certificate.issue"), (size, "certificate.revoke")]
    );
    let newest = store.audit_for_object("cert:7a11e01", 1).await.expect("trail");
    assert_eq!(newest.iter().map(|e| e.index).collect::<Vec<_>>(), [size]);
    let other = store.audit_for_object("cert:7a11e02", 10).await.expect("trail");
    assert_eq!(other.iter().map(|e| e.index).collect::<Vec<_>>(), [two]);
}

/// A connection's policy changes only from what the caller read (compare
/// and swap): a stale read changes nothing, and no update renames.
async fn connection_update_contract(store: &dyn Store) {
    let before = audit_count(store).await;
    let old = store.connection("acme", "web").await.expect("read").expect("exists");
    let new = ConnectionRecord { allowed_sans: vec!["*.web.example".into()], validity_days: None, ..old.clone() };
    store.update_connection(&old, &new, &audit("connection.update")).await.expect("update");
    assert_eq!(store.connection("acme", "web").await.expect("read"), Some(new.clone()));
    let stale = ConnectionRecord { allowed_sans: vec!["x.example".into()], ..old.clone() };
    assert!(matches!(
        store.update_connection(&old, &stale, &audit("connection.update")).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store.connection("acme", "web").await.expect("read"),
        Some(new.clone()),
        "the stale write changed nothing"
    );
    // From no validity (NULL) to one: the comparison treats NULL as a value.
    let newer = ConnectionRecord { validity_days: Some(10), ..new.clone() };
    store.update_connection(&new, &newer, &audit("connection.update")).await.expect("update");
    let renamed = ConnectionRecord { name: "other".into(), ..newer.clone() };
    assert!(matches!(
        store.update_connection(&newer, &renamed, &audit("connection.update")).await,
        Err(StoreError::Invalid(_))
    ));
    let gone = ConnectionRecord { name: "nowhere".into(), ..newer.clone() };
    assert!(matches!(
        store.update_connection(&gone, &gone, &audit("connection.update")).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(audit_count(store).await, before + 2, "only the two updates are audited");
}

/// ACME: a nonce used once, an EAB key that binds one account, one account
/// per key, an order with its authorizations, and a finalize that commits
/// once (a second, racing finalize is refused and writes nothing).
async fn acme_contract(store: &dyn Store) {
    let before = audit_count(store).await;
    let nonce = |n: &str| AcmeWrite::UseNonce { nonce: n.into(), expires_at: 2_000_000_000 };
    let used = store.apply_acme(&[nonce("n1"), nonce("n2"), nonce("n1")]).await.expect("batch");
    assert!(used[0].is_ok() && used[1].is_ok(), "{used:?}");
    assert!(matches!(used[2], Err(StoreError::Conflict { .. })), "a nonce is single-use, within a batch too");
    let again = store.apply_acme(&[nonce("n2")]).await.expect("batch");
    assert!(matches!(again[0], Err(StoreError::Conflict { .. })), "and across batches");

    let eab = AcmeEabRecord {
        kid: "kid1".into(),
        hmac_key: "secret".into(),
        tenant: "acme".into(),
        connection: Some("web".into()),
        created_at: 10,
        expires_at: 2_000_000_000,
        account: None,
    };
    store.add_eab(&eab, &audit("acme.eab")).await.expect("eab");
    let unknown = AcmeEabRecord { kid: "kid2".into(), tenant: "nobody".into(), ..eab.clone() };
    assert!(store.add_eab(&unknown, &audit("acme.eab")).await.is_err(), "an EAB for an unknown tenant");
    assert_eq!(store.eab("kid1").await.expect("read"), Some(eab.clone()));
    let account = AcmeAccountRecord {
        id: "acct1".into(),
        thumbprint: "tp1".into(),
        jwk: "{}".into(),
        tenant: "acme".into(),
        connection: Some("web".into()),
        status: "valid".into(),
        contact: vec!["mailto:ops@acme.example".into()],
        eab_kid: "kid1".into(),
        created_at: 20,
    };
    store.add_acme_account(&account, &audit("acme.account")).await.expect("account");
    let used = store.eab("kid1").await.expect("read").expect("there");
    assert_eq!((used.account.as_deref(), used.hmac_key.as_str()), (Some("acct1"), ""), "the key is spent");
    let again = AcmeAccountRecord { id: "acct2".into(), thumbprint: "tp2".into(), ..account.clone() };
    let refused = store.add_acme_account(&again, &audit("acme.account")).await;
    assert!(matches!(refused, Err(StoreError::Conflict { .. })), "an EAB key binds one account: {refused:?}");
    assert_eq!(store.acme_account("acct1").await.expect("read"), Some(account.clone()));
    assert_eq!(store.acme_account_by_key("tp1").await.expect("read").map(|a| a.id), Some("acct1".into()));
    assert_eq!(store.acme_account_count("acme").await.expect("count"), 1);
    let moved = AcmeAccountRecord { thumbprint: "tp9".into(), status: "deactivated".into(), ..account.clone() };
    store.update_acme_account(&moved, &audit("acme.account.update")).await.expect("update");
    assert!(store.acme_account_by_key("tp1").await.expect("read").is_none(), "the old key is gone");

    let order = AcmeOrderRecord {
        id: "o1".into(),
        account: "acct1".into(),
        tenant: "acme".into(),
        connection: "web".into(),
        status: "pending".into(),
        identifiers: vec!["www.acme.example".into()],
        not_before: None,
        not_after: None,
        expires_at: 2_000_000_000,
        error: None,
        certificate: None,
        replaces: Some("w".into()),
        created_at: 30,
    };
    let authz = AcmeAuthzRecord {
        id: "z1".into(),
        order_id: "o1".into(),
        account: "acct1".into(),
        identifier: "www.acme.example".into(),
        wildcard: false,
        status: "pending".into(),
        expires_at: 2_000_000_000,
        token: "tok".into(),
        challenge: None,
        challenge_status: "pending".into(),
        validated_at: None,
        error: None,
    };
    let add = AcmeWrite::AddOrder { order: order.clone(), authzs: vec![authz.clone()], audit: audit("acme.order") };
    assert!(store.apply_acme(&[add]).await.expect("batch")[0].is_ok());
    assert_eq!(store.acme_order("o1").await.expect("read"), Some(order.clone()));
    assert_eq!(store.acme_orders("acct1", 10).await.expect("list").len(), 1);
    assert_eq!(store.acme_authzs("o1").await.expect("authzs"), vec![authz.clone()]);
    let valid = AcmeAuthzRecord {
        status: "valid".into(),
        challenge: Some("http-01".into()),
        challenge_status: "valid".into(),
        validated_at: Some(40),
        ..authz.clone()
    };
    let finished = AcmeOrderRecord { status: "valid".into(), certificate: Some("acme1".into()), ..order.clone() };
    let finalize = |serial: &str| AcmeWrite::Finalize {
        order: AcmeOrderRecord { certificate: Some(serial.into()), ..finished.clone() },
        certificates: vec![cert(serial, "web", 4_000_000_000)],
        incident: None,
        audit: vec![audit("certificate.issue")],
    };
    let update = |z: &AcmeAuthzRecord| AcmeWrite::UpdateAuthz {
        authz: z.clone(),
        order_status: Some("ready".into()),
        audit: audit("acme.challenge"),
    };
    // In one batch: finalizing a pending order fails alone; the answer makes it ready.
    let batch = store.apply_acme(&[finalize("acme0"), update(&valid), update(&valid)]).await.expect("batch");
    assert!(matches!(batch[0], Err(StoreError::Conflict { .. })), "only a ready order finalizes: {batch:?}");
    assert!(batch[1].is_ok());
    assert!(matches!(batch[2], Err(StoreError::Conflict { .. })), "an authorization is answered once");
    assert!(store.certificate("acme0").await.expect("read").is_none(), "the failed write left nothing");
    assert_eq!(store.acme_authz("z1").await.expect("read"), Some(valid));
    assert_eq!(store.acme_order("o1").await.expect("read").map(|o| o.status), Some("ready".into()));
    let batch = store.apply_acme(&[finalize("acme1"), finalize("acme2")]).await.expect("batch");
    assert!(batch[0].is_ok() && matches!(batch[1], Err(StoreError::Conflict { .. })), "{batch:?}");
    assert!(store.certificate("acme2").await.expect("read").is_none(), "the refused finalize wrote nothing");
    assert_eq!(store.acme_order("o1").await.expect("read"), Some(finished));
    // eab, account, update, order, challenge, certificate.issue.
    assert_eq!(audit_count(store).await, before + 6);
}

/// Custody keys: a connection created with its active and standby keys in
/// one transaction, a promotion, at most one active key, and signing policies.
async fn custody_contract(store: &dyn Store) {
    let before = audit_count(store).await;
    let custody = |id: &str, slot: CustodySlot, serial: &str| CustodyKeyRecord {
        key: KeyRecord { label: format!("connection acme/signer {id}"), ..key(id) },
        tenant: "acme".into(),
        connection: "signer".into(),
        slot,
        serial: serial.into(),
        created_at: 5,
    };
    let conn = connection("signer");
    let keys = [custody("ck1", CustodySlot::Active, "c1"), custody("ck2", CustodySlot::Standby, "c2")];
    let certs = [cert("c1", "signer", 4_000_000_000), cert("c2", "signer", 4_000_000_000)];
    // Two active keys for one connection: refused, and nothing of it stays.
    let two = [custody("ck1", CustodySlot::Active, "c1"), custody("ck2", CustodySlot::Active, "c2")];
    let change = |connection: Option<&ConnectionRecord>,
                  slots: &[(String, CustodySlot)],
                  add: &[CustodyKeyRecord],
                  certificates: &[CertificateRecord]| CustodyChange {
        connection: connection.cloned(),
        slots: slots.to_vec(),
        add: add.to_vec(),
        certificates: certificates.to_vec(),
        incident: None,
        messages: vec![],
    };
    let refused = store.record_custody(&change(Some(&conn), &[], &two, &certs), &[audit("custody.add")]).await;
    assert!(matches!(refused, Err(StoreError::Conflict { .. })), "{refused:?}");
    assert!(store.connection("acme", "signer").await.expect("read").is_none(), "the refused connection is not there");
    assert!(store.certificate("c1").await.expect("read").is_none());
    assert_eq!(audit_count(store).await, before);

    store.record_custody(&change(Some(&conn), &[], &keys, &certs), &[audit("custody.add")]).await.expect("custody");
    assert!(store.connection("acme", "signer").await.expect("read").is_some());
    let held = store.custody_keys("acme", "signer").await.expect("keys");
    assert_eq!(held.len(), 2);
    assert!(held.iter().any(|k| k.key.id == "ck1" && k.slot == CustodySlot::Active && k.serial == "c1"));
    assert!(held.iter().any(|k| k.key.id == "ck2" && k.slot == CustodySlot::Standby));
    assert_eq!(store.all_custody_keys().await.expect("all").len(), 2);
    assert_eq!(store.key("ck1").await.expect("read").map(|k| k.label), Some("connection acme/signer ck1".into()));

    // Promote the standby, retire the active, add a new standby: one transaction.
    let slots = [("ck1".to_string(), CustodySlot::Retired), ("ck2".to_string(), CustodySlot::Active)];
    let new = [custody("ck3", CustodySlot::Standby, "c3")];
    store
        .record_custody(&change(None, &slots, &new, &[cert("c3", "signer", 4_000_000_000)]), &[audit("custody.rotate")])
        .await
        .expect("rotate");
    let slot_of = |held: &[CustodyKeyRecord], id: &str| held.iter().find(|k| k.key.id == id).map(|k| k.slot);
    let held = store.custody_keys("acme", "signer").await.expect("keys");
    assert_eq!(slot_of(&held, "ck1"), Some(CustodySlot::Retired));
    assert_eq!(slot_of(&held, "ck2"), Some(CustodySlot::Active));
    assert_eq!(slot_of(&held, "ck3"), Some(CustodySlot::Standby));
    // During an incident: the switch and the connection's move commit together, once.
    let incident = IncidentRecord { id: "INC-0002".into(), ..incident_record() };
    store.add_incident(&incident, &[owner("c2", "signer")], &[audit("incident.declare")]).await.expect("declare");
    let switch = CustodyChange {
        incident: Some(IncidentReplacements {
            incident: "INC-0002".into(),
            replacements: vec![Replacement { tenant: "acme".into(), connection: "signer".into(), serial: "c3".into() }],
            transition: Transition { from: &[ConnectionState::Pending], to: ConnectionState::ReplacementIssued },
        }),
        ..change(
            None,
            &[("ck2".into(), CustodySlot::Retired), ("ck3".into(), CustodySlot::Active)],
            &[custody("ck4", CustodySlot::Standby, "c4")],
            &[cert("c4", "signer", 4_000_000_000)],
        )
    };
    store.record_custody(&switch, &[audit("custody.switch")]).await.expect("switch");
    let moved = store.incident_connections("INC-0002").await.expect("connections");
    assert_eq!((moved[0].state, moved[0].replacement.as_deref()), (ConnectionState::ReplacementIssued, Some("c3")));
    let again = CustodyChange { add: vec![], certificates: vec![], ..switch };
    let conflict = store.record_custody(&again, &[audit("custody.switch")]).await;
    assert!(matches!(conflict, Err(StoreError::Conflict { .. })), "{conflict:?}");
    let held = store.custody_keys("acme", "signer").await.expect("keys");
    assert_eq!(slot_of(&held, "ck3"), Some(CustodySlot::Active));
    assert_eq!(slot_of(&held, "ck4"), Some(CustodySlot::Standby));

    let missing =
        store.record_custody(&change(None, &[("zz".into(), CustodySlot::Active)], &[], &[]), &[audit("x")]).await;
    assert!(matches!(missing, Err(StoreError::NotFound { .. })), "{missing:?}");

    assert!(store.signing_policy("acme", "signer").await.expect("read").is_none());
    let mut policy = SigningPolicy {
        tenant: "acme".into(),
        connection: "signer".into(),
        audiences: vec!["https://login.example/t/oauth2/v2.0/token".into()],
        client_ids: vec!["app-1".into()],
        updated_at: 7,
    };
    store.set_signing_policy(&policy, &audit("policy.set")).await.expect("policy");
    policy.client_ids.push("app-2".into());
    store.set_signing_policy(&policy, &audit("policy.set")).await.expect("policy replaced");
    assert_eq!(store.signing_policy("acme", "signer").await.expect("read"), Some(policy.clone()));
    let orphan = SigningPolicy { connection: "nope".into(), ..policy };
    assert!(store.set_signing_policy(&orphan, &audit("policy.set")).await.is_err());

    // Signatures are indexed with the entry that records them.
    let signature = |jti: &str, iat: i64| SignatureRecord {
        jti: jti.into(),
        serial: "c3".into(),
        key_id: "ck3".into(),
        tenant: "acme".into(),
        connection: "signer".into(),
        aud: "https://login.example/t/oauth2/v2.0/token".into(),
        iat,
        exp: iat + 600,
        audit_index: 0,
    };
    let entries = [audit("connection.sign.refused"), audit("connection.sign"), audit("connection.sign")];
    let first = store
        .record_signatures(&entries, &[(1, signature("j1", 1000)), (2, signature("j2", 2000))])
        .await
        .expect("signatures");
    let probe = |jti: Option<&str>, from: i64, to: i64| SignatureProbe {
        jti: jti.map(str::to_string),
        serial: "c3".into(),
        aud: "https://login.example/t/oauth2/v2.0/token".into(),
        from,
        to,
    };
    let found = store
        .find_signatures(&[
            probe(Some("j1"), 0, 0),
            probe(Some("nope"), 0, 5000),
            probe(None, 900, 1500),
            probe(None, 0, 5000),
            probe(None, 3000, 4000),
        ])
        .await
        .expect("find");
    let j1 = SignatureRecord { audit_index: first + 1, ..signature("j1", 1000) };
    let j2 = SignatureRecord { audit_index: first + 2, ..signature("j2", 2000) };
    assert_eq!(
        found,
        vec![Some(j1.clone()), None, Some(j1), Some(j2), None],
        "by jti whatever its time; else the newest in the window"
    );
    let other_aud = SignatureProbe { aud: "https://other/token".into(), ..probe(None, 0, 5000) };
    assert_eq!(store.find_signatures(&[other_aud]).await.expect("find"), vec![None]);
    let size = audit_count(store).await;
    let reused = store.record_signatures(&[audit("connection.sign")], &[(0, signature("j1", 3000))]).await;
    assert!(matches!(reused, Err(StoreError::Duplicate { .. })), "a jti is never recorded twice: {reused:?}");
    assert!(store.record_signatures(&[audit("x")], &[(1, signature("j9", 1))]).await.is_err());
    assert_eq!(audit_count(store).await, size, "a refused batch appends nothing");
    assert_eq!(audit_count(store).await, before + 9);
}

/// Tokens and operators: each change with its audit entry, revocation once.
async fn access_contract(store: &dyn Store) {
    let before = audit_count(store).await;
    let token = TokenRecord {
        id: "tok_0001".into(),
        secret_sha256: "ab".repeat(32),
        role: "tenant".into(),
        tenant: Some("acme".into()),
        connection: Some("mail".into()),
        created_at: 10,
        expires_at: Some(1_000),
        revoked_at: None,
        created_by: "test".into(),
    };
    store.add_token(&token, &audit("token.create")).await.expect("token");
    assert!(matches!(store.add_token(&token, &audit("token.create")).await, Err(StoreError::Duplicate { .. })));
    assert_eq!(store.token("tok_0001").await.expect("read"), Some(token.clone()));
    assert_eq!(store.token("tok_none").await.expect("read"), None);
    store.revoke_token("tok_0001", 20, &audit("token.revoke")).await.expect("revoke");
    assert!(matches!(
        store.revoke_token("tok_0001", 21, &audit("token.revoke")).await,
        Err(StoreError::NotFound { .. })
    ));
    let listed = store.tokens().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].revoked_at, Some(20));

    let operator = OperatorRecord {
        name: "alice".into(),
        role: "admin".into(),
        serial: "0a0b".into(),
        der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
        created_at: 10,
        not_after: 10_000,
        revoked_at: None,
        created_by: "test".into(),
    };
    store.add_operator(&operator, &audit("operator.add")).await.expect("operator");
    let mut again = operator.clone();
    again.serial = "0c0d".into();
    assert!(matches!(store.add_operator(&again, &audit("operator.add")).await, Err(StoreError::Duplicate { .. })));
    assert_eq!(store.operator_by_serial("0a0b").await.expect("read"), Some(operator.clone()));
    store.revoke_operator("alice", 30, &audit("operator.revoke")).await.expect("revoke");
    assert!(matches!(
        store.revoke_operator("alice", 31, &audit("operator.revoke")).await,
        Err(StoreError::NotFound { .. })
    ));
    // A revoked operator's name can be given a new certificate.
    store.add_operator(&again, &audit("operator.add")).await.expect("re-added");
    assert_eq!(store.operator_by_serial("0a0b").await.expect("read"), None);
    assert_eq!(store.operators().await.expect("list"), vec![again]);
    // Approvals: the requester cannot approve, nor can anyone after expiry or twice.
    let request = |id: &str, expires_at: i64| ApprovalRecord {
        id: id.into(),
        action: "incident.execute".into(),
        object: "INC-0001".into(),
        requested_by: "operator:alice(admin)".into(),
        requested_at: 10,
        expires_at,
        approved_by: None,
        approved_at: None,
        refused_by: None,
        refused_at: None,
    };
    store.add_approval(&request("REQ-1", 100), &audit("approval.request")).await.expect("request");
    store.add_approval(&request("REQ-2", 50), &audit("approval.request")).await.expect("request");
    let conflict = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Conflict { .. }));
    assert!(conflict(store.approve("REQ-1", "operator:alice(admin)", 20, &audit("approval.approve")).await));
    assert!(conflict(store.approve("REQ-2", "operator:bob(admin)", 60, &audit("approval.approve")).await));
    assert!(conflict(store.approve("REQ-9", "operator:bob(admin)", 20, &audit("approval.approve")).await));
    store.approve("REQ-1", "operator:bob(admin)", 20, &audit("approval.approve")).await.expect("approve");
    assert!(conflict(store.approve("REQ-1", "operator:carol(admin)", 21, &audit("approval.approve")).await));
    let found = store.approvals_for("incident.execute", "INC-0001").await.expect("for");
    assert_eq!(found.len(), 2);
    let approved = found.iter().find(|a| a.id == "REQ-1").expect("REQ-1");
    assert_eq!((approved.approved_by.as_deref(), approved.approved_at), (Some("operator:bob(admin)"), Some(20)));
    assert!(store.approvals_for("incident.execute", "INC-0002").await.expect("for").is_empty());
    // Refusal: not once approved, expired or refused; then it can never be approved.
    assert!(conflict(store.refuse("REQ-1", "operator:carol(admin)", 22, &audit("approval.refuse")).await));
    assert!(conflict(store.refuse("REQ-2", "operator:carol(admin)", 60, &audit("approval.refuse")).await));
    store.add_approval(&request("REQ-3", 100), &audit("approval.request")).await.expect("request");
    store.refuse("REQ-3", "operator:alice(admin)", 30, &audit("approval.refuse")).await.expect("withdrawn");
    assert!(conflict(store.refuse("REQ-3", "operator:bob(admin)", 31, &audit("approval.refuse")).await));
    assert!(conflict(store.approve("REQ-3", "operator:bob(admin)", 31, &audit("approval.approve")).await));
    let refused = store.approvals_for("incident.execute", "INC-0001").await.expect("for");
    let refused = refused.iter().find(|a| a.id == "REQ-3").expect("REQ-3");
    assert_eq!(
        (refused.refused_by.as_deref(), refused.refused_at, refused.approved_by.as_deref()),
        (Some("operator:alice(admin)"), Some(30), None)
    );
    assert_eq!(store.approvals().await.expect("all").len(), 3);
    assert_eq!(audit_count(store).await, before + 10, "only successful changes are audited");
}

/// Health, integrity and backups; on SQLite also a deleted database file.
async fn maintenance_contract(backend: &Backend, store: &SqlStore) {
    store.check_storage().await.expect("healthy");
    // Certificate states, page by page, are every certificate once with its status.
    let all = store.certificates(&CertificateFilter::default()).await.expect("list");
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.certificate_states(cursor.as_deref(), 7).await.expect("states");
        assert!(page.len() <= 7);
        cursor = page.next_cursor().map(str::to_string);
        pages.push(page);
        if cursor.is_none() {
            break;
        }
    }
    let states: Vec<_> = pages.iter().flat_map(|p| p.states()).collect::<Result<_, _>>().expect("every state parses");
    assert_eq!(states.len(), all.len());
    for c in &all {
        let s = states.iter().find(|s| s.serial == c.serial).expect("every certificate once");
        assert_eq!(
            (s.issuer, s.tenant, s.connection, s.spki_sha256, s.not_after, s.status, s.revocation_reason),
            (&*c.issuer, &*c.tenant, &*c.connection, &*c.spki_sha256, c.not_after, c.status, c.revocation_reason)
        );
    }
    // The figures agree with the records they count, at a time that splits them.
    let now = all.iter().filter_map(|c| c.revoked_at).max().unwrap_or(1_000);
    let figures = store.figures(now).await.expect("figures");
    let revoked = |c: &&CertificateRecord| c.status == CertificateStatus::Revoked;
    let live = |c: &&CertificateRecord| !revoked(c) && c.not_after >= now;
    let within = |days: i64| all.iter().filter(live).filter(|c| c.not_after < now + days * 86_400).count() as i64;
    let day = now - now.rem_euclid(86_400);
    assert_eq!(
        (figures.valid, figures.revoked, figures.expired, figures.expiring_7d, figures.expiring_30d),
        (
            all.iter().filter(live).count() as i64,
            all.iter().filter(revoked).count() as i64,
            all.iter().filter(|c| !revoked(c) && c.not_after < now).count() as i64,
            within(7),
            within(30),
        )
    );
    assert!(figures.revoked > 0 && figures.valid > 0, "{figures:?}");
    assert_eq!(
        figures.revoked_today,
        all.iter().filter(revoked).filter(|c| c.revoked_at.is_some_and(|t| t >= day)).count() as i64
    );
    let incidents = store.incidents().await.expect("incidents");
    let mut by_state = std::collections::BTreeMap::<String, i64>::new();
    let mut outbox = std::collections::BTreeMap::<String, i64>::new();
    for i in &incidents {
        *by_state.entry(i.state.to_string()).or_default() += 1;
        for m in store.outbox(&i.id).await.expect("outbox") {
            *outbox.entry(m.state.to_string()).or_default() += 1;
        }
    }
    assert_eq!(figures.incidents, by_state.into_iter().collect::<Vec<_>>());
    assert_eq!(figures.outbox, outbox.into_iter().collect::<Vec<_>>());
    let open_connections: i64 = figures.incident_connections.iter().map(|(_, n)| n).sum();
    let mut expected_open = 0;
    for i in incidents.iter().filter(|i| i.state != IncidentState::Closed) {
        expected_open += store.incident_connections(&i.id).await.expect("connections").len() as i64;
    }
    assert_eq!(open_connections, expected_open);
    assert_eq!(figures.audit_size as u64, store.audit_size().await.expect("size"));
    let latest = store.latest_checkpoint().await.expect("checkpoint");
    assert_eq!(figures.checkpoint_time, latest.as_ref().map(|c| c.time));
    let (open, idle) = store.pool_state();
    assert!(open >= 1 && idle <= open, "pool {open} open, {idle} idle");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("backup.db");
    match backend {
        Backend::Sqlite(data) => {
            assert_eq!(store.integrity_check().await.expect("check"), Some(vec!["ok".to_string()]));
            store.backup_to(&copy).await.expect("backup");
            let restored = SqlStore::open_sqlite(&copy).await.expect("open the copy");
            assert_eq!(
                restored.certificates(&CertificateFilter::default()).await.expect("list").len(),
                store.certificates(&CertificateFilter::default()).await.expect("list").len()
            );
            assert_eq!(restored.audit_size().await.expect("size"), store.audit_size().await.expect("size"));
            restored.close().await;
            // The file deleted under the open store: reads still work (the
            // inode lives on), but the store says it is gone.
            let db = data.path().join("custos.db");
            let moved = data.path().join("moved.db");
            std::fs::rename(&db, &moved).expect("move away");
            let said = store.check_storage().await.expect_err("deleted").to_string();
            assert!(said.contains("was deleted") && said.contains("custos.db"), "{said}");
            std::fs::rename(&moved, &db).expect("put back");
            store.check_storage().await.expect("healthy again");
        }
        Backend::Postgres(_) => {
            assert_eq!(store.integrity_check().await.expect("check"), None);
            assert!(matches!(store.backup_to(&copy).await, Err(StoreError::Invalid(_))));
        }
    }
}

/// Two handles on one database (two processes, or two nodes) writing at once lose nothing and grow one tree.
async fn serialises_concurrent_writers(backend: Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    a.initialize(genesis()).await.expect("genesis");
    a.add_tenant(&TenantRecord { name: "acme".into(), created_at: 1, custody_default: false }, &audit("t"))
        .await
        .expect("tenant");
    a.add_connection(&connection("mail"), &audit("c")).await.expect("conn");
    let write = |s: SqlStore, prefix: &'static str| {
        tokio::spawn(async move {
            for i in 0..20 {
                let batch: Vec<CertificateRecord> =
                    (0..50).map(|j| cert(&format!("{prefix}{i:02}{j:02}"), "mail", 1)).collect();
                let audits: Vec<AuditRecord> = (0..50).map(|_| audit("i")).collect();
                s.insert_certificates(&batch, &audits).await.expect("insert");
            }
        })
    };
    let (x, y) = (write(a.clone(), "a"), write(b.clone(), "b"));
    x.await.expect("a");
    y.await.expect("b");
    assert_eq!(a.certificates(&CertificateFilter::default()).await.expect("list").len(), 2_000);
    assert_eq!(audit_count(&a).await, 1 + 2 + 2_000);
    let size = a.audit_size().await.expect("size");
    assert_eq!(stored_root(&b, size).await, recompute(&b).await.root());
}

/// An append whose transaction rolled back leaves no trace in the tree: the
/// next appends, by this store and by another on the same database, extend
/// the tree that the stored entries imply (the writer reuses the tree's edge
/// between appends only while the log still ends where it left it).
async fn appends_after_a_rolled_back_one(backend: Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    a.initialize(genesis()).await.expect("genesis");
    let signature = |jti: &str| SignatureRecord {
        jti: jti.into(),
        serial: "c1".into(),
        key_id: "ck1".into(),
        tenant: "acme".into(),
        connection: "signer".into(),
        aud: "https://login.example/t/oauth2/v2.0/token".into(),
        iat: 1,
        exp: 601,
        audit_index: 0,
    };
    let sign = [audit("connection.sign"), audit("connection.sign")];
    a.record_signatures(&sign, &[(0, signature("j1")), (1, signature("j2"))]).await.expect("signatures");
    let size = a.audit_size().await.expect("size");
    // Hashed and written, then rolled back by the duplicate jti.
    let refused = a.record_signatures(&sign, &[(0, signature("j3")), (1, signature("j1"))]).await;
    assert!(matches!(refused, Err(StoreError::Duplicate { .. })), "{refused:?}");
    assert_eq!(a.audit_size().await.expect("size"), size, "the refused batch appended nothing");
    // Another writer appends as many entries as were rolled back, then this one appends.
    b.append_audit(&[audit("x"), audit("x")]).await.expect("b appends");
    a.append_audit(&[audit("y")]).await.expect("a appends");
    a.record_signatures(&sign, &[(0, signature("j3")), (1, signature("j4"))]).await.expect("signatures");
    let size = a.audit_size().await.expect("size");
    assert_eq!(size, audit_count(&a).await as u64);
    assert_eq!(stored_root(&b, size).await, recompute(&b).await.root(), "stored nodes match the entries");
    assert_eq!(stored_root(&a, size).await, recompute(&a).await.root());
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_appends_after_a_rolled_back_one() {
    appends_after_a_rolled_back_one(Backend::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_appends_after_a_rolled_back_one() {
    let Some(backend) = Backend::postgres().await else { return };
    appends_after_a_rolled_back_one(backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_honours_the_store_contract() {
    honours_the_contract(Backend::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_honours_the_store_contract() {
    let Some(backend) = Backend::postgres().await else { return };
    honours_the_contract(backend).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_serialises_concurrent_writers_without_losing_any() {
    serialises_concurrent_writers(Backend::sqlite().await.expect("sqlite")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_serialises_concurrent_writers_without_losing_any() {
    let Some(backend) = Backend::postgres().await else { return };
    serialises_concurrent_writers(backend).await;
}

/// Every method of every store trait is called somewhere in this suite.
#[test]
fn every_store_method_is_exercised() {
    let traits = include_str!("../src/lib.rs");
    let suite = include_str!("suite.rs");
    let methods: Vec<&str> = traits
        .lines()
        .filter_map(|l| l.trim().strip_prefix("async fn "))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    assert!(methods.len() >= 58, "found {} methods", methods.len());
    let missing: Vec<&&str> = methods.iter().filter(|m| !suite.contains(&format!(".{m}("))).collect();
    assert!(missing.is_empty(), "store methods the contract suite never calls: {missing:?}");
}
