//! API tokens on a real SQLite custos: the secret is stored only as a hash,
//! a token stands for exactly its scope, and revocation and expiry hold from
//! the next request, read through a second handle on the same database (as
//! a second node would).

mod common;

use custos_ca::access::TokenScope;
use custos_ca::{CaError, InitOptions, ListFilter, Principal, Role};

#[tokio::test(flavor = "multi_thread")]
async fn tokens_authenticate_their_scope_until_revoked_or_expired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, _store) = common::init(dir.path(), &InitOptions::default(), b"access test passphrase").await;
    ca.add_tenant(&common::ME, "acme").await.expect("tenant");
    ca.add_tenant(&common::ME, "other").await.expect("tenant");
    common::add_client_connection(&ca, "acme", "mail").await;
    let other_node = common::reopen(dir.path(), b"access test passphrase").await;

    let admin = ca.create_token(&common::ME, &TokenScope::Role(Role::Admin), None).await.expect("admin token");
    let (id, secret) = admin.token.split_once('.').expect("tok_ID.SECRET");
    assert_eq!(id, admin.record.id);
    // Only the hash is stored: the secret appears nowhere in the database.
    let db = std::fs::read(dir.path().join("custos.db-wal")).unwrap_or_default();
    let db = [db, std::fs::read(dir.path().join("custos.db")).expect("db")].concat();
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "the secret is not stored");
    let who = other_node.authenticate_token(&admin.token).await.expect("admin");
    assert_eq!(who, Principal::Operator { name: format!("token:{id}"), role: Role::Admin });

    // A tenant token reads its own tenant, and another tenant's is not found.
    let scope = TokenScope::parse("tenant", Some("acme"), Some("mail")).expect("scope");
    let tenant = ca.create_token(&who, &scope, Some(3600)).await.expect("tenant token");
    let as_tenant = other_node.authenticate_token(&tenant.token).await.expect("tenant");
    assert!(
        matches!(&as_tenant, Principal::Tenant { tenant, connection: Some(c), .. } if tenant == "acme" && c == "mail")
    );
    let own = ListFilter { tenant: Some("acme".into()), ..ListFilter::default() };
    ca.certificates(&as_tenant, &own).await.expect("own certificates");
    let theirs = ListFilter { tenant: Some("other".into()), ..ListFilter::default() };
    assert!(matches!(ca.certificates(&as_tenant, &theirs).await, Err(CaError::UnknownTenant(_))));
    // A tenant token makes no tokens; neither does an auditor, who may list them.
    assert!(matches!(ca.create_token(&as_tenant, &scope, None).await, Err(CaError::Forbidden { .. })));
    let auditor = ca.create_token(&who, &TokenScope::Role(Role::Auditor), Some(60)).await.expect("auditor");
    let auditor = ca.authenticate_token(&auditor.token).await.expect("auditor");
    assert_eq!(ca.tokens(&auditor).await.expect("list").len(), 3);
    assert!(matches!(ca.revoke_token(&auditor, id).await, Err(CaError::Forbidden { .. })));

    // Wrong secrets, malformed tokens and unknown ids are refused.
    let wrong = format!("{id}.{}", "A".repeat(43));
    for bad in [wrong.as_str(), "tok_0000000000000000.x", "Bearer", "", &format!("{id}.{secret}x")] {
        assert!(matches!(other_node.authenticate_token(bad).await, Err(CaError::Unauthenticated(_))), "{bad}");
    }
    // Scopes that make no sense are refused before anything is stored.
    assert!(TokenScope::parse("tenant", None, None).is_err());
    assert!(TokenScope::parse("admin", Some("acme"), None).is_err());
    assert!(TokenScope::parse("root", None, None).is_err());
    let nowhere = TokenScope::parse("tenant", Some("acme"), Some("nowhere")).expect("scope");
    assert!(matches!(ca.create_token(&who, &nowhere, None).await, Err(CaError::UnknownConnection { .. })));
    assert!(matches!(ca.create_token(&who, &scope, Some(400 * 86_400)).await, Err(CaError::Policy(_))));

    // Revoked on one node: refused there at once, and on the other within a
    // second (each node reuses a token's row for at most FRESH_FOR).
    other_node.authenticate_token(&tenant.token).await.expect("the other node has read it");
    ca.revoke_token(&common::ME, &tenant.record.id).await.expect("revoke");
    let revoked_at = std::time::Instant::now();
    let said = ca.authenticate_token(&tenant.token).await.expect_err("revoked here");
    assert!(said.to_string().contains("revoked"), "{said}");
    let said = loop {
        match other_node.authenticate_token(&tenant.token).await {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    revoked_at.elapsed() <= custos_ca::FRESH_FOR,
                    "still accepted after {:?}",
                    revoked_at.elapsed()
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert!(said.to_string().contains("revoked"), "{said}");
    assert!(matches!(ca.revoke_token(&common::ME, &tenant.record.id).await, Err(CaError::UnknownToken(_))));

    // Expired: a two-second token, three seconds later. (Expiry is in whole
    // seconds: a one-second token made just before a second's end is
    // expired a millisecond later, which made this test fail under load.)
    let short = ca.create_token(&common::ME, &TokenScope::Role(Role::Operator), Some(2)).await.expect("short");
    other_node.authenticate_token(&short.token).await.expect("fresh");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let said = other_node.authenticate_token(&short.token).await.expect_err("expired");
    assert!(said.to_string().contains("expired"), "{said}");

    // Each creation and revocation is in the audit log, its actor the principal.
    let filter = custos_ca::AuditFilter { action: Some("token".into()), limit: 20, ..Default::default() };
    let entries = ca.audit_tail(&common::ME, &filter).await.expect("tail");
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.record.action.as_str(), e.record.actor.as_str()))
        .filter(|(a, _)| a.starts_with("token."))
        .collect();
    assert_eq!(actions.len(), 5, "{actions:?}");
    assert!(
        actions.iter().any(|(a, actor)| *a == "token.create" && actor.contains(&format!("token:{id}"))),
        "{actions:?}"
    );
}
