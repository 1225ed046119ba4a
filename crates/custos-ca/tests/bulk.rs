//! Bulk issuance on a real SQLite file: results are written before their
//! batch commits (a failed write commits nothing), and requests whose
//! idempotency key was issued are skipped, never issued twice.

mod common;

use custos_ca::{CaError, InitOptions, Issued};
use custos_store::CertificateFilter;
use custos_store::prelude::*;

fn keyed(n: usize) -> Vec<custos_ca::IssueRequest> {
    (0..n)
        .map(|i| custos_ca::IssueRequest { request_key: Some(format!("bulk:test:{i}")), ..common::generated("t", "c") })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn results_are_written_before_the_commit_and_keys_are_issued_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, store) = common::init(dir.path(), &InitOptions::default(), b"bench passphrase").await;
    ca.add_tenant(&common::ME, "t").await.expect("tenant");
    common::add_client_connection(&ca, "t", "c").await;
    let count = || async { store.certificates(&CertificateFilter::default()).await.expect("list").len() };

    // The writer fails: nothing of the batch is committed.
    let mut failing = |_: &[Issued]| Err(std::io::Error::other("disk full"));
    let refused = ca.issue_bulk(&common::ME, keyed(3), &mut failing).await;
    assert!(matches!(refused, Err(CaError::ResultsNotWritten(_))), "{refused:?}");
    assert_eq!(count().await, 0, "no certificate without its written result");

    // The writer works: every result reaches it before the call returns.
    let mut written = Vec::new();
    let mut writer = |batch: &[Issued]| {
        written.extend(batch.iter().map(|i| (i.request_key.clone(), i.record.serial.clone(), i.key.is_some())));
        Ok(())
    };
    let done = ca.issue_bulk(&common::ME, keyed(3), &mut writer).await.expect("issue");
    assert_eq!((done.issued, done.skipped.len()), (3, 0));
    assert_eq!(written.len(), 3);
    assert!(written.iter().all(|(k, _, has_key)| k.is_some() && *has_key));
    assert_eq!(count().await, 3);

    // The same input again: skipped, with the serials issued the first time.
    let mut nothing = |_: &[Issued]| -> std::io::Result<()> { panic!("nothing is issued again") };
    let again = ca.issue_bulk(&common::ME, keyed(3), &mut nothing).await.expect("again");
    assert_eq!(again.issued, 0);
    let mut skipped: Vec<String> = again.skipped.into_iter().map(|(_, serial)| serial).collect();
    let mut first: Vec<String> = written.into_iter().map(|(_, serial, _)| serial).collect();
    skipped.sort();
    first.sort();
    assert_eq!(skipped, first);
    assert_eq!(count().await, 3);
}
