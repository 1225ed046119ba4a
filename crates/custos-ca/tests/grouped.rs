//! Group-committed single issuances on a real SQLite custos: many concurrent
//! callers, each answered with its own certificate once it is durable, one
//! bad request refused alone, and the log replaying to exactly the state.

mod common;

use std::sync::Arc;

use custos_ca::{CaError, InitOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_single_issuances_commit_together_and_each_gets_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, store) = common::init(dir.path(), &InitOptions::default(), b"grouped test passphrase").await;
    ca.add_tenant(&common::ME, "acme").await.expect("tenant");
    common::add_client_connection(&ca, "acme", "mail").await;
    let ca = Arc::new(ca);
    let before = custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size");

    let mut tasks = Vec::new();
    for i in 0..64 {
        let ca = ca.clone();
        tasks.push(tokio::spawn(async move {
            let connection = if i == 17 { "nowhere" } else { "mail" };
            ca.issue_grouped(&common::ME, common::generated("acme", connection)).await
        }));
    }
    let mut serials = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match (i, t.await.expect("task")) {
            (17, Err(CaError::UnknownConnection { .. })) => {}
            (17, other) => panic!("the bad request: {other:?}"),
            (_, Ok(issued)) => {
                assert!(issued.key.is_some(), "a generated key comes back once");
                serials.push(issued.record.serial);
            }
            (i, Err(e)) => panic!("request {i}: {e}"),
        }
    }
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 63, "63 distinct certificates");
    // Every answered certificate is in the database, each with its audit entry.
    let listed = ca.certificates(&common::ME, &custos_ca::ListFilter::default()).await.expect("list");
    assert_eq!(listed.len(), 63);
    let after = custos_store::AuditStore::audit_size(store.as_ref()).await.expect("size");
    assert_eq!(after - before, 63, "one audit entry per certificate, none for the refused one");
    let (_, state) = ca.verify_log_and_state(&common::ME, None, None).await.expect("verify");
    assert!(state.differences.is_empty(), "{:?}", state.differences);

    // After a restart the positions reserved ahead are a gap, not a reuse.
    drop(ca);
    let again = Arc::new(common::reopen(dir.path(), b"grouped test passphrase").await);
    let next = again.issue_grouped(&common::ME, common::generated("acme", "mail")).await.expect("after reopen");
    assert!(!serials.contains(&next.record.serial));
    let (_, state) = again.verify_log_and_state(&common::ME, None, None).await.expect("verify");
    assert!(state.differences.is_empty(), "{:?}", state.differences);
}
