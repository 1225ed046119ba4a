//! The CA ceremony: one function makes a CA (key, certificate, records and
//! audit events), used by `init` for the first root and issuing CA and by
//! incident execution for replacements.
//!
//! Nothing here writes to the store: the caller commits the records and the
//! events in one transaction, so a crash before that leaves at most unused
//! keys in the key store (soft keys exist only in the uncommitted records).

use std::sync::Arc;

use custos_keys::{KeyAlgorithm, KeyStore};
use custos_pki::{CaIssuer, CertificateSpec, CertificateTemplate, Profile, Serial};
use custos_store::{IssuerRecord, KeyRecord};
use custos_types::{IssuerRole, IssuerStatus, KeyStatus};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{InitOptions, Result, issuer_urls};

/// An audit event of the ceremony: action, object and details (the caller adds the actor).
pub(crate) type Event = (&'static str, String, Value);

/// The CA that signs a new one.
#[derive(Clone)]
pub(crate) struct Parent {
    /// Its issuer id.
    pub id: String,
    /// Its key id.
    pub key_id: String,
    /// Its certificate and signer.
    pub issuer: Arc<CaIssuer>,
}

/// What a CA is to be.
pub(crate) struct CaSpec<'a> {
    /// Issuer id (`root-2`, `issuing-3`).
    pub id: String,
    /// Subject common name.
    pub name: String,
    /// Subject organization.
    pub organization: Option<String>,
    /// Its key's algorithm.
    pub algorithm: KeyAlgorithm,
    /// `None` for a self-signed root.
    pub parent: Option<&'a Parent>,
    /// The public base URL (for the AIA and CDP of the parent).
    pub base_url: &'a str,
}

/// A CA made but not yet recorded.
pub(crate) struct MadeCa {
    /// The key record to commit.
    pub key: KeyRecord,
    /// The issuer record to commit.
    pub issuer: IssuerRecord,
    /// The new CA, ready to sign (for children made in the same ceremony).
    pub parent: Parent,
    /// `key.generate` and `issuer.create`, in that order.
    pub events: Vec<Event>,
}

/// Generates the key in `keys` and makes the CA certificate, signed by its
/// parent (or self-signed). The certificate is built and checked before it is
/// signed (custos-pki's two steps).
pub(crate) fn make_ca(keys: &dyn KeyStore, spec: CaSpec<'_>, now: OffsetDateTime) -> Result<MadeCa> {
    let profile = if spec.parent.is_none() { Profile::RootCa } else { Profile::IssuingCa };
    let role = if spec.parent.is_none() { IssuerRole::Root } else { IssuerRole::Issuing };
    let key = keys.generate(spec.algorithm, &spec.id)?;
    let key_id = key.signer.public_key().key_id().to_string();
    let template = CertificateTemplate::new(CertificateSpec {
        serial: Serial::random()?,
        profile,
        common_name: spec.name.clone(),
        organization: spec.organization.clone(),
        sans: vec![],
        not_before: now - time::Duration::minutes(1),
        not_after: now + time::Duration::days(i64::from(profile.default_validity_days())),
        urls: spec.parent.map(|p| issuer_urls(spec.base_url, &p.id)),
    })?;
    let (cert, issuer) = match spec.parent {
        None => {
            let (cert, ca) = template.self_sign(key.signer.clone())?;
            (cert, Arc::new(ca))
        }
        Some(parent) => {
            let cert = template.sign(key.signer.public_key(), key.signer.algorithm(), &parent.issuer)?;
            let ca = CaIssuer::new(&cert.der, key.signer.clone())?;
            (cert, Arc::new(ca))
        }
    };
    let signer_key = spec.parent.map_or_else(|| key_id.clone(), |p| p.key_id.clone());
    let fingerprint = custos_pki::fingerprint(&cert.der);
    let events = vec![
        (
            "key.generate",
            format!("key:{key_id}"),
            json!({"key": key_id, "algorithm": spec.algorithm.as_str(), "backend": key.reference.backend,
                   "label": spec.id}),
        ),
        (
            "issuer.create",
            format!("issuer:{}", spec.id),
            json!({"key": signer_key, "subject_key": key_id, "serial": cert.serial.to_hex(), "role": role.as_str(),
                   "parent": spec.parent.map(|p| p.id.clone()), "fingerprint": fingerprint}),
        ),
    ];
    Ok(MadeCa {
        key: KeyRecord {
            id: key_id.clone(),
            backend: key.reference.backend.clone(),
            algorithm: spec.algorithm.to_string(),
            label: spec.id.clone(),
            public_key: key.signer.public_key().spki_der().to_vec(),
            reference: key.reference.data.clone(),
            status: KeyStatus::Active,
            created_at: now.unix_timestamp(),
        },
        issuer: IssuerRecord {
            id: spec.id.clone(),
            name: spec.name,
            role,
            parent: spec.parent.map(|p| p.id.clone()),
            key_id: key_id.clone(),
            cert_der: cert.der.clone(),
            fingerprint,
            not_after: cert.not_after.unix_timestamp(),
            status: IssuerStatus::Active,
            crl_number: 0,
            created_at: now.unix_timestamp(),
            revoked_at: None,
        },
        parent: Parent { id: spec.id, key_id, issuer },
        events,
    })
}

/// The first CAs of a new custos: `root-1` and `issuing-1` under it.
pub(crate) struct Genesis {
    /// Both keys, root first.
    pub keys: Vec<KeyRecord>,
    /// Both issuers, root first.
    pub issuers: Vec<IssuerRecord>,
    /// Their audit events, in order.
    pub events: Vec<Event>,
}

/// Makes the root and the issuing CA of `init`.
pub(crate) fn root_and_issuing(
    keys: &dyn KeyStore,
    base_url: &str,
    options: &InitOptions,
    now: OffsetDateTime,
) -> Result<Genesis> {
    let org = &options.organization;
    let root = make_ca(
        keys,
        CaSpec {
            id: "root-1".into(),
            name: format!("{org} Root CA 1"),
            organization: Some(org.clone()),
            algorithm: options.ca_algorithm,
            parent: None,
            base_url,
        },
        now,
    )?;
    let issuing = make_ca(
        keys,
        CaSpec {
            id: "issuing-1".into(),
            name: format!("{org} Issuing CA 1"),
            organization: Some(org.clone()),
            algorithm: options.ca_algorithm,
            parent: Some(&root.parent),
            base_url,
        },
        now,
    )?;
    // The order of init's log before the ceremony existed: both keys, then both issuers.
    let mut events = Vec::with_capacity(4);
    let (mut root_events, mut issuing_events) = (root.events.into_iter(), issuing.events.into_iter());
    events.extend(root_events.next());
    events.extend(issuing_events.next());
    events.extend(root_events);
    events.extend(issuing_events);
    Ok(Genesis { keys: vec![root.key, issuing.key], issuers: vec![root.issuer, issuing.issuer], events })
}
