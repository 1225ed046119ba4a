//! The records custos keeps: tenants, connections, keys, issuers,
//! certificates, revocations, audit entries, incidents and notifications, as
//! plain values. custos-store persists them and custos-ca speaks them; neither
//! the server nor the CLI needs the store to name them.

use crate::{
    CertificateStatus, ConnectionState, CustodySlot, DeliveryState, IncidentState, IssuerRole, IssuerStatus, KeyStatus,
    Profile, Reason,
};
use serde::Serialize;

/// A customer organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantRecord {
    /// Unique name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether its new connections keep their keys in custody unless told otherwise.
    pub custody_default: bool,
}

/// One authenticated link of a tenant, with its issuance policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConnectionRecord {
    /// Owning tenant.
    pub tenant: String,
    /// Name, unique within the tenant.
    pub name: String,
    /// Default certificate profile.
    pub profile: Profile,
    /// SAN patterns certificates may carry (`*.example.com` matches one label).
    pub allowed_sans: Vec<String>,
    /// Key algorithm for server-side keys.
    pub key_algorithm: String,
    /// Default lifetime in days, if not the profile's.
    pub validity_days: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A key held by a key store backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// Key id (from the public key).
    pub id: String,
    /// Backend name.
    pub backend: String,
    /// Algorithm name.
    pub algorithm: String,
    /// Operator label.
    pub label: String,
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    /// The backend's opaque reference (a sealed blob, or a PKCS#11 URI).
    pub reference: Vec<u8>,
    /// `active`, `destroyed` or `compromised`.
    pub status: KeyStatus,
    /// Unix seconds.
    pub created_at: i64,
}

/// A CA certificate and the key it signs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerRecord {
    /// Short id used in URLs.
    pub id: String,
    /// Display name (the subject CN).
    pub name: String,
    /// `root` or `issuing`.
    pub role: IssuerRole,
    /// The issuer that signed this one; `None` for a root.
    pub parent: Option<String>,
    /// The key id.
    pub key_id: String,
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// SHA-256 fingerprint of the certificate.
    pub fingerprint: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// `active`, `retired`, `compromised`.
    pub status: IssuerStatus,
    /// Last CRL number issued.
    pub crl_number: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds when its certificate was revoked (a compromised CA), if it was.
    pub revoked_at: Option<i64>,
}

/// An issued end-entity certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRecord {
    /// Lowercase hex serial.
    pub serial: String,
    /// Issuer id.
    pub issuer: String,
    /// Tenant name.
    pub tenant: String,
    /// Connection name.
    pub connection: String,
    /// Profile name.
    pub profile: Profile,
    /// Subject DN as text.
    pub subject: String,
    /// SANs.
    pub sans: Vec<String>,
    /// Key algorithm of the subject key.
    pub key_algorithm: String,
    /// `csr` or `generated`.
    pub key_origin: String,
    /// SHA-256 of the subject SPKI, hex.
    pub spki_sha256: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// DER certificate.
    pub der: Vec<u8>,
    /// `valid` or `revoked` (expiry is computed from `not_after`).
    pub status: CertificateStatus,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
    /// RFC 5280 reason name, if revoked.
    pub revocation_reason: Option<Reason>,
    /// Unix seconds, if known.
    pub invalidity_date: Option<i64>,
    /// Serial of the certificate that replaced this one.
    pub replaced_by: Option<String>,
    /// The CRL partition that lists it once revoked (0 for the issuer's main CRL).
    pub crl_partition: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// One audit log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Unix seconds.
    pub time: i64,
    /// Who did it (`cli:root`, `api`, ...).
    pub actor: String,
    /// What was done (`issue`, `tenant.add`, `key.generate`, ...).
    pub action: String,
    /// What it was done to (`cert:SERIAL`, `tenant:NAME`, ...).
    pub object: String,
    /// The key this entry used or changed, if any; `audit usage` counts by it.
    pub key: Option<String>,
    /// Structured details, JSON.
    pub details: String,
}

/// What the audit log says about a certificate, as the database holds it:
/// the columns `audit verify --state` compares, borrowed from the page they
/// were read in (a million rows are compared without a copy each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertificateState<'a> {
    /// Lowercase hex serial.
    pub serial: &'a str,
    /// Issuer id.
    pub issuer: &'a str,
    /// Tenant.
    pub tenant: &'a str,
    /// Connection.
    pub connection: &'a str,
    /// SHA-256 of the SPKI, hex.
    pub spki_sha256: &'a str,
    /// Unix seconds.
    pub not_after: i64,
    /// Valid or revoked.
    pub status: CertificateStatus,
    /// Why it was revoked.
    pub revocation_reason: Option<Reason>,
}

/// One entry as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log, from 0.
    pub index: u64,
    /// The entry's content.
    pub record: AuditRecord,
    /// Its RFC 9162 leaf hash as stored (a verifier recomputes it).
    pub leaf_hash: Vec<u8>,
    /// The salt of its public form's commitment; `None` for an entry written
    /// (and hashed) in the clear form, before entries were salted.
    pub salt: Option<Vec<u8>>,
}

/// Which entries `audit tail` wants.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Action, or its dotted prefix (`certificate`) or suffix (`revoke`).
    pub action: Option<String>,
    /// When not empty, only entries whose action is one of these (custos-ca
    /// says which actions are signatures; the store knows no such list).
    pub any_of: Vec<String>,
    /// Key id.
    pub key: Option<String>,
    /// Oldest first from this index; `None` for the newest `limit`.
    pub from: Option<u64>,
    /// At most this many entries.
    pub limit: usize,
}

/// A signed checkpoint of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    /// Tree size it commits to.
    pub size: u64,
    /// Unix seconds when it was signed.
    pub time: i64,
    /// Root hash at that size.
    pub root: Vec<u8>,
    /// The C2SP signed note.
    pub note: String,
}

/// How often one actor used a key for one action on one day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyUsage {
    /// Days since the Unix epoch.
    pub day: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// How many entries.
    pub count: i64,
}

/// Certificate status as `custos list --status` asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    /// Not revoked and not expired.
    Valid,
    /// Revoked.
    Revoked,
    /// Not revoked, but past notAfter.
    Expired,
}

/// Which certificates to list.
#[derive(Clone, Debug, Default)]
pub struct CertificateFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this connection (with `tenant`).
    pub connection: Option<String>,
    /// Only this issuer.
    pub issuer: Option<String>,
    /// Only this status, judged at `now`.
    pub status: Option<StatusFilter>,
    /// Only those whose notAfter is before this time.
    pub expiring_before: Option<i64>,
    /// The time that "expired" is judged at.
    pub now: i64,
    /// Only those naming this subject alternative name exactly.
    pub san: Option<String>,
    /// Only those after this one in the listing order (newest first, then
    /// by serial): `(created_at, serial)` of the last one of the previous page.
    pub after: Option<(i64, String)>,
    /// At most this many.
    pub limit: Option<i64>,
}

/// How certificates are being revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Unix seconds.
    pub revoked_at: i64,
    /// RFC 5280 reason name.
    pub reason: Reason,
    /// Unix seconds, if known.
    pub invalidity_date: Option<i64>,
}

/// A revoked certificate as a CRL lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedRow {
    /// Lowercase hex serial.
    pub serial: String,
    /// Unix seconds.
    pub revoked_at: i64,
    /// Reason name.
    pub reason: Option<Reason>,
    /// Unix seconds.
    pub invalidity_date: Option<i64>,
}

/// One entry of the revocation feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationEvent {
    /// Feed position.
    pub seq: i64,
    /// Lowercase hex serial.
    pub serial: String,
    /// Issuer id.
    pub issuer: String,
    /// The CRL partition that lists it.
    pub crl_partition: i64,
}

/// A delegated OCSP responder of an issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponderRecord {
    /// The issuer it answers for.
    pub issuer: String,
    /// Its key.
    pub key_id: String,
    /// Its certificate, signed by the issuer.
    pub cert_der: Vec<u8>,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// An incident as declared, and how far its execution got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IncidentRecord {
    /// `INC-0001`, ...
    pub id: String,
    /// `issuer`, `key`, `cert` or `tenant`.
    pub scope_kind: String,
    /// The issuer id, key id, serial or tenant name.
    pub scope_value: String,
    /// RFC 5280 reason name for the revocations.
    pub reason: Reason,
    /// Unix seconds: since when the compromise is assumed (the invalidity date).
    pub since: Option<i64>,
    /// Free text from the declaration.
    pub note: String,
    /// `declared`, `executing`, `executed` or `closed`.
    pub state: IncidentState,
    /// Issuers execute created in place of compromised ones.
    pub new_issuers: Vec<String>,
    /// Unix seconds.
    pub declared_at: i64,
    /// Who declared it.
    pub declared_by: String,
    /// When execution started (first run).
    pub executed_at: Option<i64>,
    /// When the last affected certificate was revoked.
    pub revoked_at: Option<i64>,
    /// When the last replacement was issued.
    pub replaced_at: Option<i64>,
    /// When it was closed.
    pub closed_at: Option<i64>,
}

/// One certificate in an incident's blast radius.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IncidentCertificate {
    /// Serial, hex.
    pub serial: String,
    /// Its tenant.
    pub tenant: String,
    /// Its connection.
    pub connection: String,
}

/// Where one affected connection stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IncidentConnection {
    /// Tenant.
    pub tenant: String,
    /// Connection.
    pub connection: String,
    /// `pending`, `replacement-issued`, `notified`, `acknowledged`, `old-certificate-retired`.
    pub state: ConnectionState,
    /// Serial of the replacement, once issued.
    pub replacement: Option<String>,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// When the replacement was issued.
    pub issued_at: Option<i64>,
    /// When the tenant's webhook took the notification.
    pub notified_at: Option<i64>,
    /// When the tenant acknowledged.
    pub acknowledged_at: Option<i64>,
    /// When the old certificate was retired.
    pub retired_at: Option<i64>,
}

/// A replacement issued for a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// Tenant.
    pub tenant: String,
    /// Connection.
    pub connection: String,
    /// The new certificate's serial.
    pub serial: String,
}

/// A move of incident connections between states, decided by custos-ca (the
/// rules live there): only connections in one of `from` move to `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The states a connection may be in to move.
    pub from: &'static [ConnectionState],
    /// The state it moves to.
    pub to: ConnectionState,
}

/// A key that must never be certified again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockedKey {
    /// SHA-256 of the key's SubjectPublicKeyInfo, lowercase hex.
    pub spki_sha256: String,
    /// Why (`key-compromise`, or the operator's words).
    pub reason: String,
    /// What blocked it: `cert:SERIAL`, `incident:INC-0001`, or the principal who blocked it by hand.
    pub source: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A tenant's webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRecord {
    /// Tenant.
    pub tenant: String,
    /// Where notifications are POSTed.
    pub url: String,
    /// HMAC-SHA256 key, hex.
    pub secret: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A notification waiting for, or past, delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxMessage {
    /// Sequence number.
    pub id: i64,
    /// The incident it reports on.
    pub incident: String,
    /// The tenant it goes to.
    pub tenant: String,
    /// The connections it covers.
    pub connections: Vec<String>,
    /// Where it goes.
    pub url: String,
    /// The JSON body.
    #[serde(skip)]
    pub body: String,
    /// `pending` or `delivered`.
    pub state: DeliveryState,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Unix seconds of the next attempt.
    pub next_attempt_at: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub delivered_at: Option<i64>,
}

/// An API token as stored: never the secret, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// The token's public id (`tok_` and 16 hex digits), the part of the token before its secret.
    pub id: String,
    /// SHA-256 of the token's secret, lowercase hex.
    #[serde(skip)]
    pub secret_sha256: String,
    /// `admin`, `operator`, `auditor` or `tenant`.
    pub role: String,
    /// The tenant a `tenant` token is limited to.
    pub tenant: Option<String>,
    /// The connection a `tenant` token is limited to, if any.
    pub connection: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which it is refused, if it expires.
    pub expires_at: Option<i64>,
    /// Unix seconds it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// The principal that created it (its audit actor).
    pub created_by: String,
}

/// An operator who signs in to the API with a client certificate from the operators' CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OperatorRecord {
    /// The operator's name: the certificate's subject common name.
    pub name: String,
    /// `admin`, `operator` or `auditor`.
    pub role: String,
    /// The serial of the operator's current certificate, lowercase hex.
    pub serial: String,
    /// That certificate, DER.
    #[serde(skip)]
    pub der: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds the certificate expires.
    pub not_after: i64,
    /// Unix seconds it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// The principal that added it (its audit actor).
    pub created_by: String,
}

/// A request that a second admin approve an action (two-person rule).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApprovalRecord {
    /// `REQ-` and 8 hex digits.
    pub id: String,
    /// What is to be done: `incident.execute`.
    pub action: String,
    /// On what: the incident id.
    pub object: String,
    /// Who asked (an audit actor).
    pub requested_by: String,
    /// Unix seconds.
    pub requested_at: i64,
    /// Unix seconds after which it can no longer be approved or used.
    pub expires_at: i64,
    /// Who approved it, if anyone.
    pub approved_by: Option<String>,
    /// Unix seconds it was approved.
    pub approved_at: Option<i64>,
    /// Who refused it, if anyone: a refused request can no longer be approved.
    pub refused_by: Option<String>,
    /// Unix seconds it was refused.
    pub refused_at: Option<i64>,
}

/// A connection key held in custody, with the certificate that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustodyKeyRecord {
    /// The key (its reference stays in the key store's form: sealed, or a token URI).
    pub key: KeyRecord,
    /// Owning tenant.
    pub tenant: String,
    /// The connection it signs for.
    pub connection: String,
    /// Active, standby or retired.
    pub slot: CustodySlot,
    /// Serial (lowercase hex) of the key's certificate.
    pub serial: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// What a custodied connection's key may sign: the audiences and client ids
/// (`iss`/`sub`) a client assertion may name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SigningPolicy {
    /// Owning tenant.
    pub tenant: String,
    /// The connection.
    pub connection: String,
    /// Allowed `aud` values (token endpoint URLs).
    pub audiences: Vec<String>,
    /// Allowed `iss`/`sub` values (the app's client id).
    pub client_ids: Vec<String>,
    /// Unix seconds.
    pub updated_at: i64,
}

/// One change to a connection's custody keys, recorded in one transaction:
/// the connection (when it is created with them), slot moves (promote a
/// standby, retire a key), new keys with their certificates, and, during an
/// incident, the connections it replaces and the notifications to send.
#[derive(Clone, Debug, Default)]
pub struct CustodyChange {
    /// A connection created with its keys.
    pub connection: Option<ConnectionRecord>,
    /// Existing keys moved to another slot: (key id, new slot).
    pub slots: Vec<(String, CustodySlot)>,
    /// New keys.
    pub add: Vec<CustodyKeyRecord>,
    /// The new keys' certificates.
    pub certificates: Vec<CertificateRecord>,
    /// The incident whose connections this change replaces, if any.
    pub incident: Option<IncidentReplacements>,
    /// Webhook messages to queue (telling tenants which certificates to add and remove).
    pub messages: Vec<OutboxMessage>,
}

/// Incident connections replaced by a custody change, and their notifications.
#[derive(Clone, Debug)]
pub struct IncidentReplacements {
    /// The incident's id.
    pub incident: String,
    /// The connections and their new certificates.
    pub replacements: Vec<Replacement>,
    /// How each connection's state moves.
    pub transition: Transition,
}

/// A client assertion custos signed, indexed for `audit match`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignatureRecord {
    /// The assertion's `jti`.
    pub jti: String,
    /// The serial of the signing key's certificate.
    pub serial: String,
    /// The signing key.
    pub key_id: String,
    /// Tenant.
    pub tenant: String,
    /// Connection.
    pub connection: String,
    /// The assertion's `aud`.
    pub aud: String,
    /// `iat`, Unix seconds.
    pub iat: i64,
    /// `exp`, Unix seconds.
    pub exp: i64,
    /// The audit entry that records it.
    pub audit_index: u64,
}

/// What `audit match` asks of the signature index for one sign-in: the
/// assertion with this `jti`, or, without one, the newest assertion for this
/// certificate and audience with `iat` in `from..=to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureProbe {
    /// The sign-in's jti, if the export has it.
    pub jti: Option<String>,
    /// The serial of the certificate its thumbprint names.
    pub serial: String,
    /// Its audience.
    pub aud: String,
    /// Earliest `iat`, Unix seconds.
    pub from: i64,
    /// Latest `iat`, Unix seconds.
    pub to: i64,
}

/// An External Account Binding key custos gave a tenant: single use, it
/// binds the ACME account made with it to the tenant (and connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeEabRecord {
    /// The key id the client sends.
    pub kid: String,
    /// The HMAC key, base64url; cleared once an account is bound with it.
    pub hmac_key: String,
    /// The tenant accounts made with it belong to.
    pub tenant: String,
    /// The one connection they are limited to, if any.
    pub connection: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// After this it binds nothing.
    pub expires_at: i64,
    /// The account bound with it, once used.
    pub account: Option<String>,
}

/// An ACME account: a client's key, bound by EAB to a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcmeAccountRecord {
    /// The account id (the last segment of its URL).
    pub id: String,
    /// RFC 7638 thumbprint of its key: one account per key.
    pub thumbprint: String,
    /// Its key, canonical JWK JSON.
    pub jwk: String,
    /// The tenant.
    pub tenant: String,
    /// The connection, when the EAB named one.
    pub connection: Option<String>,
    /// `valid` or `deactivated`.
    pub status: String,
    /// Contact URLs.
    pub contact: Vec<String>,
    /// The EAB key id it was bound with.
    pub eab_kid: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// An ACME order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcmeOrderRecord {
    /// The order id.
    pub id: String,
    /// The account that placed it.
    pub account: String,
    /// The tenant.
    pub tenant: String,
    /// The connection its certificate goes to.
    pub connection: String,
    /// `pending`, `ready`, `processing`, `valid` or `invalid`.
    pub status: String,
    /// The DNS names, as ordered.
    pub identifiers: Vec<String>,
    /// Requested notBefore, Unix seconds.
    pub not_before: Option<i64>,
    /// Requested notAfter, Unix seconds.
    pub not_after: Option<i64>,
    /// When it expires, Unix seconds.
    pub expires_at: i64,
    /// Why it is invalid: a problem document as JSON.
    pub error: Option<String>,
    /// The certificate's serial, once issued.
    pub certificate: Option<String>,
    /// The serial of the certificate it replaces (ARI `replaces`).
    pub replaces: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// An ACME authorization with its challenges (one token for all of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcmeAuthzRecord {
    /// The authorization id.
    pub id: String,
    /// The order it belongs to.
    pub order_id: String,
    /// The account.
    pub account: String,
    /// The DNS name (without `*.`).
    pub identifier: String,
    /// Whether the order asked for the wildcard.
    pub wildcard: bool,
    /// `pending`, `valid`, `invalid`, `deactivated`.
    pub status: String,
    /// When it expires, Unix seconds.
    pub expires_at: i64,
    /// The challenge token.
    pub token: String,
    /// The challenge the client answered (`http-01`, ...), if any.
    pub challenge: Option<String>,
    /// The challenge's status: `pending`, `processing`, `valid`, `invalid`.
    pub challenge_status: String,
    /// When it was validated, Unix seconds.
    pub validated_at: Option<i64>,
    /// Why it failed: a problem document as JSON.
    pub error: Option<String>,
}

/// One ACME state change, committed with others in one transaction (each in
/// a savepoint of its own: one that fails leaves the others standing).
#[derive(Clone, Debug)]
pub enum AcmeWrite {
    /// Uses a nonce up; fails with a conflict if it was used before.
    UseNonce {
        /// The nonce.
        nonce: String,
        /// Until when it must be remembered (its expiry).
        expires_at: i64,
    },
    /// Stores an order and its authorizations.
    AddOrder {
        /// The order.
        order: AcmeOrderRecord,
        /// Its authorizations.
        authzs: Vec<AcmeAuthzRecord>,
        /// What was done.
        audit: AuditRecord,
    },
    /// Writes an authorization's state, and its order's status if given.
    UpdateAuthz {
        /// The authorization.
        authz: AcmeAuthzRecord,
        /// The order's new status, if it changes.
        order_status: Option<String>,
        /// What was done.
        audit: AuditRecord,
    },
    /// A finalized order: its certificates, the order (valid only if it was
    /// ready), an incident connection it re-establishes.
    Finalize {
        /// The order as it becomes.
        order: AcmeOrderRecord,
        /// The certificates issued.
        certificates: Vec<CertificateRecord>,
        /// The incident connection re-established, if any.
        incident: Option<IncidentReplacements>,
        /// What was done.
        audit: Vec<AuditRecord>,
    },
}

/// Counts over the whole store that dashboards and `/metrics` show, read in
/// one go by [`MaintenanceStore::figures`](../custos_store/trait.MaintenanceStore.html).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreFigures {
    /// Certificates not revoked and not expired.
    pub valid: i64,
    /// Certificates revoked (expired or not).
    pub revoked: i64,
    /// Certificates expired and not revoked.
    pub expired: i64,
    /// Valid certificates whose notAfter is within 7 days.
    pub expiring_7d: i64,
    /// Valid certificates whose notAfter is within 30 days (those within 7 days included).
    pub expiring_30d: i64,
    /// Certificates revoked since the start of the current UTC day.
    pub revoked_today: i64,
    /// Incidents by state (every state present, closed ones included).
    pub incidents: Vec<(String, i64)>,
    /// Connections of incidents not closed, by their state in the incident.
    pub incident_connections: Vec<(String, i64)>,
    /// Webhook messages by delivery state.
    pub outbox: Vec<(String, i64)>,
    /// Entries in the audit log.
    pub audit_size: i64,
    /// When the newest checkpoint was signed (Unix seconds), if any.
    pub checkpoint_time: Option<i64>,
    /// Size of the checkpoint that is newest.
    pub checkpoint_size: i64,
}
