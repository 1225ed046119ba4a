//! Who may do what: one table of every principal kind × every operation
//! (allowed, denied, or hidden as not found), and the same rules seen through
//! real operations on a real SQLite custos: a refused call changes nothing,
//! and its audit entry names the principal that was allowed.

mod common;

use custos_ca::authorization::{Decision, Operation, decide};
use custos_ca::{InitOptions, ListFilter, Principal, Role};
use custos_pki::Reason;

use Decision::{Allow, Deny, Hide};

fn operator(role: Role) -> Principal {
    Principal::Operator { name: format!("{role}-1"), role }
}

fn tenant(name: &str, connection: Option<&str>) -> Principal {
    Principal::Tenant { account: "tok-1".into(), tenant: name.into(), connection: connection.map(str::to_string) }
}

/// Every operation, on tenant `t` / connection `c` where it names one.
fn operations() -> Vec<Operation<'static>> {
    use Operation as O;
    vec![
        O::Initialize,
        O::AddTenant,
        O::ReadTenants(None),
        O::ReadTenants(Some("t")),
        O::ManageConnection { tenant: "t" },
        O::ReadConnections(None),
        O::ReadConnections(Some("t")),
        O::Issue { tenant: "t", connection: "c", generated_key: false },
        O::Issue { tenant: "t", connection: "c", generated_key: true },
        O::Revoke { tenant: "t", connection: "c" },
        O::ReadCertificates { tenant: None, connection: None },
        O::ReadCertificates { tenant: Some("t"), connection: None },
        O::ReadCertificates { tenant: Some("t"), connection: Some("c") },
        O::ReadIssuers,
        O::ReadKeys,
        O::SignCrl,
        O::ReadAudit,
        O::SignCheckpoint,
        O::DeclareIncident,
        O::ExecuteIncident,
        O::CloseIncident,
        O::ReadIncidents(None),
        O::ReadIncidents(Some("t")),
        O::AcknowledgeIncident { tenant: "t", connection: "c" },
        O::DeliverNotifications,
        O::PublishStatus,
        O::BlockKey,
        O::ManageKeyStore,
        O::ManageAccess,
        O::ReadAccess,
        O::Approve,
        O::Sign { tenant: "t", connection: "c" },
        O::Sign { tenant: "t", connection: "d" },
        O::RotateCustodyKeys,
        O::CreateAcmeBinding { tenant: "t", connection: Some("c") },
        O::ReadMetrics,
    ]
}

/// The table: for each principal, the decision on each operation of [`operations`], in order.
fn table() -> Vec<(&'static str, Principal, [Decision; 36])> {
    vec![
        ("local admin", Principal::LocalAdmin { uid: 0, user: Some("root".into()) }, [Allow; 36]),
        ("admin", operator(Role::Admin), [Allow; 36]),
        (
            "operator",
            operator(Role::Operator),
            [
                Deny, Allow, Allow, Allow, Allow, Allow, Allow, Allow, Allow, Allow, Allow, Allow, Allow, Allow, Deny,
                Deny, Deny, Deny, Allow, Deny, Deny, Allow, Allow, Allow, Deny, Deny, Deny, Deny, Deny, Deny, Deny,
                Allow, Allow, Deny, Allow, Allow,
            ],
        ),
        (
            "auditor",
            operator(Role::Auditor),
            [
                Deny, Deny, Allow, Allow, Deny, Allow, Allow, Deny, Deny, Deny, Allow, Allow, Allow, Allow, Allow,
                Deny, Allow, Deny, Deny, Deny, Deny, Allow, Allow, Deny, Deny, Deny, Deny, Deny, Deny, Allow, Deny,
                Deny, Deny, Deny, Deny, Allow,
            ],
        ),
        (
            "tenant t",
            tenant("t", None),
            [
                Deny, Deny, Deny, Allow, Deny, Deny, Allow, Allow, Deny, Allow, Deny, Allow, Allow, Allow, Deny, Deny,
                Deny, Deny, Deny, Deny, Deny, Deny, Allow, Allow, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny,
                Deny, Allow, Deny,
            ],
        ),
        (
            "tenant t, connection d",
            tenant("t", Some("d")),
            [
                Deny, Deny, Deny, Allow, Deny, Deny, Allow, Hide, Deny, Hide, Deny, Allow, Hide, Allow, Deny, Deny,
                Deny, Deny, Deny, Deny, Deny, Deny, Allow, Hide, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Hide, Allow,
                Deny, Hide, Deny,
            ],
        ),
        (
            "tenant u (another)",
            tenant("u", None),
            [
                Deny, Deny, Deny, Hide, Deny, Deny, Hide, Hide, Hide, Hide, Deny, Hide, Hide, Allow, Deny, Deny, Deny,
                Deny, Deny, Deny, Deny, Deny, Hide, Hide, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Hide, Hide, Deny,
                Hide, Deny,
            ],
        ),
        (
            "custos itself",
            Principal::System,
            [
                Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Allow, Deny, Allow,
                Allow, Allow, Deny, Deny, Deny, Deny, Deny, Deny, Allow, Allow, Deny, Deny, Deny, Deny, Deny, Deny,
                Deny, Allow, Deny, Allow,
            ],
        ),
        (
            "ACME account bound to t/c",
            Principal::AcmeAccount { account: "acct-1".into(), tenant: "t".into(), connection: Some("c".into()) },
            [
                Deny, Deny, Deny, Deny, Deny, Deny, Deny, Allow, Deny, Allow, Deny, Deny, Allow, Allow, Deny, Deny,
                Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny,
                Deny, Deny, Deny,
            ],
        ),
        (
            "ACME account bound to u",
            Principal::AcmeAccount { account: "acct-2".into(), tenant: "u".into(), connection: None },
            [
                Deny, Deny, Deny, Deny, Deny, Deny, Deny, Hide, Deny, Hide, Deny, Deny, Hide, Allow, Deny, Deny, Deny,
                Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny, Deny,
                Deny, Deny,
            ],
        ),
    ]
}

#[test]
fn every_principal_against_every_operation() {
    let ops = operations();
    let mut wrong = Vec::new();
    for (who, principal, expected) in table() {
        assert_eq!(ops.len(), expected.len(), "the table row of {who} covers every operation");
        for (op, want) in ops.iter().zip(expected) {
            let got = decide(&principal, op);
            if got != want {
                wrong.push(format!("{who} on {op:?}: expected {want:?}, got {got:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn actors_name_the_principal_and_never_user() {
    assert_eq!(operator(Role::Auditor).actor(), "operator:auditor-1(auditor)");
    assert_eq!(tenant("t", Some("c")).actor(), "tenant:t/c[tok-1]");
    assert_eq!(Principal::System.actor(), "custos");
    assert_eq!(Principal::LocalAdmin { uid: 0, user: Some("root".into()) }.actor(), "local:uid=0(root)");
    // The local principal is the uid the kernel reports for this process, whatever $USER says
    // (the CLI tests run the binary with USER=alice to show it).
    let status = std::fs::read_to_string("/proc/self/status").expect("proc status");
    let uid: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .expect("uid");
    assert!(Principal::local().actor().starts_with(&format!("local:uid={uid}")), "{}", Principal::local().actor());
}

#[tokio::test]
async fn refused_operations_change_nothing_and_hide_other_tenants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, _store) = common::init(dir.path(), &InitOptions::default(), b"pw").await;
    let me = common::ME.clone();
    ca.add_tenant(&me, "t").await.expect("tenant t");
    ca.add_tenant(&me, "u").await.expect("tenant u");
    common::add_client_connection(&ca, "t", "c").await;
    let issued = ca.issue(&me, common::generated("t", "c")).await.expect("issue");
    let serial = issued.record.serial.parse().expect("serial");
    let size = ca.audit_size().await.expect("size");

    // An auditor reads but does not write.
    let auditor = operator(Role::Auditor);
    assert_eq!(ca.tenants(&auditor).await.expect("auditor reads").len(), 2);
    let err = ca.add_tenant(&auditor, "v").await.expect_err("auditor may not add");
    assert_eq!(err.to_string(), "operator:auditor-1(auditor) may not add a tenant");
    let err = ca.revoke(&auditor, &serial, Reason::KeyCompromise, None).await.expect_err("auditor may not revoke");
    assert!(matches!(err, custos_ca::CaError::Forbidden { .. }), "{err}");

    // Another tenant sees nothing of t: the certificate is "unknown", exactly like a serial never issued.
    let other = tenant("u", None);
    let err = ca.certificate(&other, &serial).await.expect_err("hidden");
    assert_eq!(err.to_string(), format!("no certificate with serial {}", serial.to_hex()));
    let err = ca.revoke(&other, &serial, Reason::KeyCompromise, None).await.expect_err("hidden");
    assert_eq!(err.to_string(), format!("no certificate with serial {}", serial.to_hex()));
    let filter = ListFilter { tenant: Some("t".into()), ..ListFilter::default() };
    let err = ca.certificates(&other, &filter).await.expect_err("hidden");
    assert_eq!(err.to_string(), "unknown tenant \"t\" (see `custos tenant list`)");
    // A tenant may not have custos generate (and hand out) a key.
    let own = tenant("t", None);
    let err = ca.issue(&own, common::generated("t", "c")).await.expect_err("no generated keys for tenants");
    assert!(err.to_string().contains("may not issue"), "{err}");
    assert_eq!(ca.audit_size().await.expect("size"), size, "refused calls wrote nothing");

    // The tenant itself reads and revokes its own certificate; the entry names it.
    assert_eq!(ca.certificate(&own, &serial).await.expect("own certificate").serial, issued.record.serial);
    ca.revoke(&own, &serial, Reason::KeyCompromise, None).await.expect("own revoke");
    let entries = ca
        .audit_tail(&me, &custos_ca::AuditFilter { action: Some("certificate.revoke".into()), ..Default::default() })
        .await
        .expect("tail");
    assert_eq!(entries.last().expect("revocation entry").record.actor, "tenant:t[tok-1]");
}
