//! The PKCS#11 backend: keys generated inside a token (an HSM, or SoftHSM2),
//! marked sensitive and non-extractable, used only through `C_Sign`.
//!
//! The token is named by an RFC 7512 URI, e.g.
//! `pkcs11:token=custos-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/custos/pin`;
//! keys by `pkcs11:token=…;id=%…;object=LABEL;type=private`. Sessions are
//! pooled (one per concurrent signature). When the library, token or its
//! daemon goes away, the failing signature reports it and the next one
//! re-initializes the library, logs in again and finds its key afresh, so
//! signing resumes without restarting custos.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::connection::{
    ConnectionKey, DigestScheme, DigestSigner, GeneratedConnectionKey, LABEL_PREFIX, connection_algorithm,
};
use crate::{GeneratedKey, KeyAlgorithm, KeyError, KeyReference, KeyStore, PublicKey, SignError, Signer};

/// The backend name in [`KeyReference::backend`].
pub const BACKEND: &str = "pkcs11";

/// How many times the module's token list is read (re-initializing between
/// reads) before a token is reported missing.
const TOKEN_LOOKUPS: u32 = 3;

/// Where the PIN comes from; never the PIN itself, so the URI can be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// `pin-source=file:/path`: the first line of a file.
    File(PathBuf),
    /// `pin-source=env:NAME`: an environment variable.
    Env(String),
}

/// A token as an RFC 7512 URI names it, with the module that reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenConfig {
    /// The token label (`token=`).
    pub token: String,
    /// The PKCS#11 module (`module-path=`).
    pub module_path: PathBuf,
    /// Where the user PIN comes from (`pin-source=`).
    pub pin_source: PinSource,
}

/// Percent-decodes an RFC 7512 attribute value.
fn pct_decode(text: &str) -> Result<Vec<u8>, KeyError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(|| config(format!("bad percent-escape in {text:?}")))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| config(format!("bad percent-escape in {text:?}")))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes bytes for a URI attribute (everything but unreserved characters).
fn pct_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn config(reason: String) -> KeyError {
    KeyError::Config(reason)
}

/// Attribute name and percent-decoded value.
type UriAttributes = Vec<(String, Vec<u8>)>;

/// The path and query attributes of a `pkcs11:` URI.
fn uri_parts(uri: &str) -> Result<(UriAttributes, UriAttributes), KeyError> {
    let rest = uri.strip_prefix("pkcs11:").ok_or_else(|| config(format!("{uri:?} is not a pkcs11: URI")))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let split = |text: &str, sep: char| -> Result<UriAttributes, KeyError> {
        text.split(sep)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').ok_or_else(|| config(format!("{p:?} in {uri:?} has no '='")))?;
                Ok((k.to_string(), pct_decode(v)?))
            })
            .collect()
    };
    Ok((split(path, ';')?, split(query, '&')?))
}

fn text(value: Vec<u8>, what: &str) -> Result<String, KeyError> {
    String::from_utf8(value).map_err(|_| config(format!("{what} is not UTF-8")))
}

impl TokenConfig {
    /// Parses a token URI; `pin-value` is refused so that no PIN is ever stored.
    pub fn parse(uri: &str) -> Result<TokenConfig, KeyError> {
        let (path, query) = uri_parts(uri)?;
        let mut token = None;
        let mut module_path = None;
        let mut pin_source = None;
        for (k, v) in path.into_iter().chain(query) {
            match k.as_str() {
                "token" => token = Some(text(v, "token")?),
                "module-path" => module_path = Some(PathBuf::from(text(v, "module-path")?)),
                "pin-source" => {
                    let source = text(v, "pin-source")?;
                    pin_source = Some(if let Some(p) = source.strip_prefix("file:") {
                        PinSource::File(PathBuf::from(p))
                    } else if let Some(name) = source.strip_prefix("env:") {
                        PinSource::Env(name.to_string())
                    } else {
                        return Err(config(format!("pin-source {source:?}: expected file:/path or env:NAME")));
                    });
                }
                "pin-value" => {
                    return Err(config(
                        "pin-value would put the PIN into the database; use pin-source=file:/path or env:NAME".into(),
                    ));
                }
                // Other RFC 7512 attributes (manufacturer, serial, slot-id, ...) narrow nothing we need.
                _ => {}
            }
        }
        Ok(TokenConfig {
            token: token.ok_or_else(|| config(format!("{uri:?} names no token (token=LABEL)")))?,
            module_path: module_path.ok_or_else(|| config(format!("{uri:?} names no module-path")))?,
            pin_source: pin_source
                .ok_or_else(|| config(format!("{uri:?} names no pin-source (file:/path or env:NAME)")))?,
        })
    }

    /// The URI again, canonical: what the store records.
    pub fn uri(&self) -> String {
        let pin = match &self.pin_source {
            PinSource::File(p) => format!("file:{}", p.display()),
            PinSource::Env(n) => format!("env:{n}"),
        };
        format!(
            "pkcs11:token={}?module-path={}&pin-source={}",
            pct_encode(self.token.as_bytes()),
            pct_encode(self.module_path.to_string_lossy().as_bytes()).replace("%2F", "/"),
            pct_encode(pin.as_bytes()).replace("%2F", "/").replace("%3A", ":")
        )
    }

    /// Reads the PIN from its source.
    fn pin(&self) -> Result<Zeroizing<String>, KeyError> {
        let pin = match &self.pin_source {
            PinSource::File(path) => {
                let text = Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| config(format!("cannot read the token PIN from {}: {e}", path.display())))?,
                );
                Zeroizing::new(text.lines().next().unwrap_or("").to_string())
            }
            PinSource::Env(name) => Zeroizing::new(
                std::env::var(name).map_err(|_| config(format!("the token PIN variable {name} is not set")))?,
            ),
        };
        if pin.is_empty() {
            return Err(config("the token PIN is empty".into()));
        }
        Ok(pin)
    }
}

/// One live connection to the token: the library epoch it was made in, its
/// slot, and a generation number that changes with every reconnection.
struct Connection {
    library: Arc<Library>,
    epoch: u64,
    slot: Slot,
    generation: u64,
}

impl Connection {
    fn ctx(&self) -> &Pkcs11 {
        &self.library.ctx
    }
}

/// The token connection and session pool shared by the store and its signers.
struct Token {
    config: TokenConfig,
    pin: Zeroizing<String>,
    connection: Mutex<Option<Arc<Connection>>>,
    /// Idle logged-in sessions, with the generation they belong to.
    sessions: Mutex<Vec<(u64, Session)>>,
    next_generation: Mutex<u64>,
}

/// Whether a PKCS#11 error means the library, token or session is gone
/// (so reconnecting may help), rather than a bad request.
fn is_outage(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::CryptokiNotInitialized
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::SlotIdInvalid
                | RvError::UserNotLoggedIn
                | RvError::GeneralError,
            _
        ) | CkError::LibraryLoading(_)
    )
}

/// Why a token operation failed: the token said so, or the object is not there.
enum Fail {
    /// A PKCS#11 error.
    Ck(CkError),
    /// No object with the key's CKA_ID.
    Missing,
}

impl From<CkError> for Fail {
    fn from(e: CkError) -> Fail {
        Fail::Ck(e)
    }
}

fn token_error(operation: &'static str, e: CkError) -> KeyError {
    KeyError::Token { operation, detail: describe(&e) }
}

/// A PKCS#11 error in a line: the function and return value names
/// (the library's own texts run to paragraphs).
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

/// A loaded PKCS#11 module. A process initializes a module once (a second
/// `C_Initialize` fails, and two at once crash some modules), so every store
/// using the same module shares this, and re-initialization after an outage
/// happens here, once, under one lock.
struct Library {
    ctx: Pkcs11,
    /// (initialized, epoch): the epoch grows with every finalize.
    state: Mutex<(bool, u64)>,
    /// Held (shared) by every call into the module, and exclusively by finalize.
    calls: std::sync::RwLock<()>,
}

impl Library {
    /// The module at `path`, loaded once per process.
    fn get(path: &std::path::Path) -> Result<Arc<Library>, KeyError> {
        static LOADED: Mutex<Vec<(PathBuf, Arc<Library>)>> = Mutex::new(Vec::new());
        let mut all = LOADED.lock().map_err(|_| config("PKCS#11 module table poisoned".into()))?;
        if let Some((_, lib)) = all.iter().find(|(p, _)| p == path) {
            return Ok(lib.clone());
        }
        let ctx =
            Pkcs11::new(path).map_err(|e| config(format!("cannot load PKCS#11 module {}: {e}", path.display())))?;
        let lib = Arc::new(Library { ctx, state: Mutex::new((false, 0)), calls: std::sync::RwLock::new(()) });
        all.push((path.to_path_buf(), lib.clone()));
        Ok(lib)
    }

    /// Initializes the module if needed; returns the current epoch.
    fn ensure(&self) -> Result<u64, KeyError> {
        let mut state = self.state.lock().map_err(|_| config("PKCS#11 module state poisoned".into()))?;
        if !state.0 {
            match self.ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                Err(e) => return Err(token_error("initialize the PKCS#11 library", e)),
            }
            state.0 = true;
        }
        Ok(state.1)
    }

    /// Finalizes the module after an outage seen in `epoch` (once, however many saw it).
    fn reset(&self, epoch: u64) {
        let Ok(mut state) = self.state.lock() else { return };
        if state.1 != epoch {
            return;
        }
        // It may already be finalized (by the outage itself); either way the next use initializes.
        let _exclusive = self.calls.write();
        let _ = self.ctx.clone().finalize();
        *state = (false, epoch + 1);
    }
}

impl Token {
    /// The live connection, connecting (initialize, find the token, log in) if
    /// there is none or the library was re-initialized since.
    fn connection(&self) -> Result<Arc<Connection>, KeyError> {
        let library = Library::get(&self.config.module_path)?;
        let mut guard = self.connection.lock().map_err(|_| config("PKCS#11 connection poisoned".into()))?;
        let epoch = library.ensure()?;
        if let Some(c) = guard.as_ref()
            && c.epoch == epoch
        {
            return Ok(c.clone());
        }
        // A module lists tokens as it found them at C_Initialize, and may miss
        // one that was busy then (SoftHSM2 while another process rewrites the
        // token's files; a network HSM reconnecting): look again after
        // re-initializing, twice, before saying it is not there.
        let mut epoch = epoch;
        let mut attempt = 0;
        let slot = loop {
            if let Some(slot) = self.find_slot(&library.ctx)? {
                break slot;
            }
            if attempt == TOKEN_LOOKUPS - 1 {
                return Err(KeyError::Token {
                    operation: "find the token",
                    detail: format!(
                        "no token labelled {:?} in {}",
                        self.config.token,
                        self.config.module_path.display()
                    ),
                });
            }
            library.reset(epoch);
            std::thread::sleep(Duration::from_millis(100 << attempt));
            epoch = library.ensure()?;
            attempt += 1;
        };
        let generation = {
            let mut g = self.next_generation.lock().map_err(|_| config("generation poisoned".into()))?;
            *g += 1;
            *g
        };
        let connection = Arc::new(Connection { library: library.clone(), epoch, slot, generation });
        // Login belongs to the token: one session logs in for all.
        let session = self.open_session(&connection)?;
        self.put_session(generation, session);
        *guard = Some(connection.clone());
        Ok(connection)
    }

    /// The slot holding the token with our label, if the module lists it.
    fn find_slot(&self, ctx: &Pkcs11) -> Result<Option<Slot>, KeyError> {
        for s in ctx.get_slots_with_token().map_err(|e| token_error("list slots", e))? {
            if let Ok(info) = ctx.get_token_info(s)
                && info.label().trim_end() == self.config.token
            {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    fn open_session(&self, c: &Connection) -> Result<Session, KeyError> {
        let session = c.ctx().open_rw_session(c.slot).map_err(|e| token_error("open a session", e))?;
        let pin = AuthPin::from(self.pin.as_str());
        // SoftHSM2's file store rewrites the token file when another process
        // adds an object; a login that reads it half-written is told the user
        // PIN is not initialized (seen once in a suite run with many
        // processes on one token). A token whose PIN really is not set still
        // fails after the retries.
        let mut attempts = 0;
        loop {
            match session.login(UserType::User, Some(&pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => return Ok(session),
                Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) if attempts < 5 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20 * attempts));
                }
                Err(e) => return Err(token_error("log in to the token", e)),
            }
        }
    }

    /// A logged-in session of the current connection.
    fn take_session(&self) -> Result<(Arc<Connection>, Session), KeyError> {
        let c = self.connection()?;
        let idle = self.sessions.lock().ok().and_then(|mut pool| {
            pool.retain(|(g, _)| *g == c.generation);
            pool.pop()
        });
        let session = match idle {
            Some((_, s)) => s,
            None => self.open_session(&c)?,
        };
        Ok((c, session))
    }

    fn put_session(&self, generation: u64, session: Session) {
        if let Ok(mut pool) = self.sessions.lock() {
            pool.push((generation, session));
        }
    }

    /// Drops connection `generation` after an outage: its sessions are
    /// discarded and the library re-initialized, so the next use starts afresh.
    fn reset(&self, generation: u64) {
        let Ok(mut guard) = self.connection.lock() else { return };
        if guard.as_ref().is_none_or(|c| c.generation != generation) {
            return;
        }
        if let Some(c) = guard.take() {
            {
                // Closing sessions is a call into the module too.
                let _calls = c.library.calls.read();
                if let Ok(mut pool) = self.sessions.lock() {
                    pool.clear();
                }
            }
            c.library.reset(c.epoch);
        }
    }

    /// Runs `f` on a pooled session; on an outage, reconnects once and retries.
    /// Calls hold the library's read lock, so a re-initialization (which
    /// takes the write lock) never runs under a call in flight.
    fn with_session<T>(
        &self,
        operation: &'static str,
        f: impl Fn(&Connection, &Session) -> Result<T, Fail>,
    ) -> Result<T, KeyError> {
        let mut last = None;
        for _ in 0..2 {
            let (c, session) = self.take_session().map_err(|e| KeyError::Token {
                operation,
                detail: format!(
                    "the token {:?} is unavailable ({e}); signing resumes by itself once it is back",
                    self.config.token
                ),
            })?;
            let calls = c.library.calls.read().map_err(|_| config("PKCS#11 call lock poisoned".into()))?;
            match f(&c, &session) {
                Ok(v) => {
                    drop(calls);
                    self.put_session(c.generation, session);
                    return Ok(v);
                }
                Err(Fail::Ck(e)) if is_outage(&e) => {
                    drop(session);
                    drop(calls);
                    self.reset(c.generation);
                    last = Some(e);
                }
                Err(other) => {
                    drop(calls);
                    self.put_session(c.generation, session);
                    return Err(match other {
                        Fail::Ck(e) => token_error(operation, e),
                        Fail::Missing => KeyError::Token { operation, detail: "no such key on the token".into() },
                    });
                }
            }
        }
        Err(KeyError::Token {
            operation,
            detail: format!(
                "the token {:?} is unavailable ({}); signing resumes by itself once it is back",
                self.config.token,
                last.map_or_else(String::new, |e| describe(&e))
            ),
        })
    }
}

/// A key store on a PKCS#11 token.
pub struct Pkcs11KeyStore {
    token: Arc<Token>,
}

impl Pkcs11KeyStore {
    /// Opens the token: loads the module, reads the PIN, logs in.
    pub fn open(config: TokenConfig) -> Result<Pkcs11KeyStore, KeyError> {
        let pin = config.pin()?;
        let token = Arc::new(Token {
            config,
            pin,
            connection: Mutex::new(None),
            sessions: Mutex::new(Vec::new()),
            next_generation: Mutex::new(0),
        });
        token.connection()?;
        Ok(Pkcs11KeyStore { token })
    }

    /// The token's configuration.
    pub fn config(&self) -> &TokenConfig {
        &self.token.config
    }
}

/// The DER OID of a named curve, as CKA_EC_PARAMS holds it.
fn ec_params(algorithm: KeyAlgorithm) -> Vec<u8> {
    match algorithm {
        KeyAlgorithm::EcdsaP384 => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        KeyAlgorithm::Ed25519 => vec![0x06, 0x03, 0x2b, 0x65, 0x70],
        _ => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
    }
}

/// A DER TLV.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER from unsigned big-endian bytes.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
        &bytes[first.min(bytes.len())..]
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(0x02, &content)
}

/// The raw point from CKA_EC_POINT, which tokens give as a DER OCTET STRING (or bare).
fn ec_point(value: &[u8], len: usize) -> Result<Vec<u8>, KeyError> {
    if value.len() == len {
        return Ok(value.to_vec());
    }
    match value {
        [0x04, l, rest @ ..] if usize::from(*l) == len && rest.len() == len => Ok(rest.to_vec()),
        [0x04, 0x81, l, rest @ ..] if usize::from(*l) == len && rest.len() == len => Ok(rest.to_vec()),
        _ => Err(KeyError::Token { operation: "read the public key", detail: "unexpected CKA_EC_POINT".into() }),
    }
}

/// Builds the SPKI of a public key read from the token.
fn public_key(algorithm: KeyAlgorithm, session: &Session, key: ObjectHandle) -> Result<PublicKey, KeyError> {
    let read =
        |types: &[AttributeType]| session.get_attributes(key, types).map_err(|e| token_error("read the public key", e));
    let alg_id = |oids: &[u8]| tlv(0x30, oids);
    match algorithm {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 | KeyAlgorithm::Ed25519 => {
            let attrs = read(&[AttributeType::EcPoint])?;
            let Some(Attribute::EcPoint(value)) = attrs.into_iter().next() else {
                return Err(KeyError::Token { operation: "read the public key", detail: "no CKA_EC_POINT".into() });
            };
            let (len, algorithm_id) = match algorithm {
                KeyAlgorithm::EcdsaP256 => (
                    65,
                    alg_id(
                        &[&[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01][..], &ec_params(algorithm)].concat(),
                    ),
                ),
                KeyAlgorithm::EcdsaP384 => (
                    97,
                    alg_id(
                        &[&[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01][..], &ec_params(algorithm)].concat(),
                    ),
                ),
                _ => (32, alg_id(&ec_params(algorithm))),
            };
            let point = ec_point(&value, len)?;
            let mut bits = vec![0];
            bits.extend_from_slice(&point);
            let spki = tlv(0x30, &[algorithm_id, tlv(0x03, &bits)].concat());
            Ok(PublicKey::new(spki, point))
        }
        _ => {
            let attrs = read(&[AttributeType::Modulus, AttributeType::PublicExponent])?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (n, e) else {
                return Err(KeyError::Token {
                    operation: "read the public key",
                    detail: "no modulus or exponent".into(),
                });
            };
            let rsa_public = tlv(0x30, &[der_uint(&n), der_uint(&e)].concat());
            let rsa_alg = alg_id(&[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00]);
            let mut bits = vec![0];
            bits.extend_from_slice(&rsa_public);
            let spki = tlv(0x30, &[rsa_alg, tlv(0x03, &bits)].concat());
            Ok(PublicKey::new(spki, rsa_public))
        }
    }
}

/// The key's URI: token, CKA_ID, label and type (`private` or `secret-key`).
fn key_uri(config: &TokenConfig, id: &[u8], label: &str, kind: &str) -> String {
    format!(
        "pkcs11:token={};id={};object={};type={kind}",
        pct_encode(config.token.as_bytes()),
        pct_encode(id),
        pct_encode(label.as_bytes())
    )
}

/// The object class a key URI names: a secret key for `type=secret-key`, else a private key.
fn object_class(uri: &str) -> ObjectClass {
    match uri_parts(uri) {
        Ok((path, _)) if path.iter().any(|(k, v)| k == "type" && v == b"secret-key") => ObjectClass::SECRET_KEY,
        _ => ObjectClass::PRIVATE_KEY,
    }
}

/// The CKA_ID a key URI names (for tools that address the object directly).
pub fn key_id_of(uri: &str) -> Result<Vec<u8>, KeyError> {
    let (path, _) = uri_parts(uri)?;
    path.into_iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v)
        .ok_or_else(|| config(format!("key URI {uri:?} has no id")))
}

/// Finds one object of `class` with CKA_ID `id`.
fn find(session: &Session, class: ObjectClass, id: &[u8]) -> Result<Option<ObjectHandle>, CkError> {
    Ok(session.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])?.into_iter().next())
}

/// A key on the token, signing through pooled sessions.
struct Pkcs11Signer {
    token: Arc<Token>,
    algorithm: KeyAlgorithm,
    public: PublicKey,
    id: Vec<u8>,
    /// The private key's handle in a connection generation; handles do not survive re-initialization.
    handle: Mutex<Option<(u64, ObjectHandle)>>,
}

impl Pkcs11Signer {
    fn handle(&self, c: &Connection, session: &Session) -> Result<ObjectHandle, Fail> {
        if let Ok(h) = self.handle.lock()
            && let Some((g, handle)) = *h
            && g == c.generation
        {
            return Ok(handle);
        }
        let handle = find(session, ObjectClass::PRIVATE_KEY, &self.id)?.ok_or(Fail::Missing)?;
        if let Ok(mut h) = self.handle.lock() {
            *h = Some((c.generation, handle));
        }
        Ok(handle)
    }
}

impl Signer for Pkcs11Signer {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.sign_on_token(message).map_err(|e| SignError { backend: BACKEND, detail: e.to_string() })
    }
}

impl Pkcs11Signer {
    fn sign_on_token(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        // SoftHSM (and many HSMs) have no CKM_ECDSA_SHA256: hash here, sign the digest.
        let (mechanism, input): (Mechanism<'_>, Vec<u8>) = match self.algorithm {
            KeyAlgorithm::EcdsaP256 => (Mechanism::Ecdsa, digest::digest(&digest::SHA256, message).as_ref().to_vec()),
            KeyAlgorithm::EcdsaP384 => (Mechanism::Ecdsa, digest::digest(&digest::SHA384, message).as_ref().to_vec()),
            KeyAlgorithm::Ed25519 => (Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), message.to_vec()),
            _ => (Mechanism::Sha256RsaPkcs, message.to_vec()),
        };
        let raw = self.token.with_session("sign", |c, session| {
            let key = self.handle(c, session)?;
            Ok(session.sign(&mechanism, key, &input)?)
        })?;
        match self.algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => ecdsa_der(&raw),
            _ => Ok(raw),
        }
    }
}

/// r || s (as C_Sign gives it) to the DER `Ecdsa-Sig-Value` X.509 uses.
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(KeyError::Token { operation: "sign", detail: format!("{}-byte ECDSA signature", raw.len()) });
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Ok(tlv(0x30, &[der_uint(r), der_uint(s)].concat()))
}

impl Pkcs11KeyStore {
    /// Generates a key pair labelled `label` on the token.
    fn make(&self, algorithm: KeyAlgorithm, label: &str) -> Result<(KeyReference, Pkcs11Signer), KeyError> {
        let mut id = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| KeyError::Crypto { operation: "random key id" })?;
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Id(id.clone()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Private(private),
            ]
        };
        let mut public_template = common(false);
        public_template.push(Attribute::Verify(true));
        let mut private_template = common(true);
        // A signing key and nothing else: it can neither decrypt, unwrap other
        // keys (a way to get key material in or out) nor derive.
        private_template.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);
        let mechanism = match algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                public_template.push(Attribute::EcParams(ec_params(algorithm)));
                Mechanism::EccKeyPairGen
            }
            KeyAlgorithm::Ed25519 => {
                public_template.push(Attribute::EcParams(ec_params(algorithm)));
                Mechanism::EccEdwardsKeyPairGen
            }
            _ => {
                let bits: u64 = match algorithm {
                    KeyAlgorithm::Rsa2048 => 2048,
                    KeyAlgorithm::Rsa3072 => 3072,
                    _ => 4096,
                };
                public_template.push(Attribute::ModulusBits(bits.into()));
                public_template.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        let public = self.token.with_session("generate a key", |_, session| {
            let (public_handle, _) = session.generate_key_pair(&mechanism, &public_template, &private_template)?;
            Ok(public_handle)
        })?;
        let public = self
            .token
            .with_session("read the public key", |_, session| Ok(public_key(algorithm, session, public)))??;
        let reference = KeyReference {
            backend: BACKEND.into(),
            data: key_uri(&self.token.config, &id, label, "private").into_bytes(),
        };
        let signer = Pkcs11Signer { token: self.token.clone(), algorithm, public, id, handle: Mutex::new(None) };
        Ok((reference, signer))
    }

    /// Opens a private key on the token, with its CKA_LABEL (which carries its purpose).
    fn open_key(&self, reference: &KeyReference) -> Result<(Pkcs11Signer, Vec<u8>), KeyError> {
        if reference.backend != BACKEND {
            return Err(KeyError::BackendMismatch { expected: BACKEND, found: reference.backend.clone() });
        }
        let uri = String::from_utf8_lossy(&reference.data).to_string();
        if object_class(&uri) != ObjectClass::PRIVATE_KEY {
            return Err(KeyError::Token { operation: "load a key", detail: format!("{uri} is not a signing key") });
        }
        let protection = self.protection(reference)?;
        if !protection.acceptable() {
            return Err(KeyError::Exportable { key: uri });
        }
        let id = key_id_of(&uri)?;
        let (algorithm, public) = self
            .token
            .with_session("load a key", |_, session| {
                let handle = find(session, ObjectClass::PUBLIC_KEY, &id)?.ok_or(Fail::Missing)?;
                let attrs = session.get_attributes(
                    handle,
                    &[AttributeType::KeyType, AttributeType::EcParams, AttributeType::ModulusBits],
                )?;
                Ok((handle, attrs))
            })
            .and_then(|(handle, attrs)| {
                let mut key_type = None;
                let mut params = None;
                let mut bits = None;
                for a in attrs {
                    match a {
                        Attribute::KeyType(t) => key_type = Some(t),
                        Attribute::EcParams(p) => params = Some(p),
                        Attribute::ModulusBits(b) => bits = Some(u64::from(b)),
                        _ => {}
                    }
                }
                let algorithm = match key_type {
                    Some(KeyType::EC) if params.as_deref() == Some(&ec_params(KeyAlgorithm::EcdsaP384)[..]) => {
                        KeyAlgorithm::EcdsaP384
                    }
                    Some(KeyType::EC) => KeyAlgorithm::EcdsaP256,
                    Some(KeyType::EC_EDWARDS) => KeyAlgorithm::Ed25519,
                    Some(KeyType::RSA) => KeyAlgorithm::rsa_of_bits(bits.unwrap_or(0) as usize).ok_or_else(|| {
                        KeyError::Token { operation: "load a key", detail: format!("RSA key of {bits:?} bits") }
                    })?,
                    other => {
                        return Err(KeyError::Token {
                            operation: "load a key",
                            detail: format!("unsupported key type {other:?}"),
                        });
                    }
                };
                let public = self
                    .token
                    .with_session("read the public key", |_, session| Ok(public_key(algorithm, session, handle)))??;
                Ok((algorithm, public))
            })?;
        let label = self.token.with_session("read the key's label", |_, session| {
            let handle = find(session, ObjectClass::PRIVATE_KEY, &id)?.ok_or(Fail::Missing)?;
            let attrs = session.get_attributes(handle, &[AttributeType::Label])?;
            Ok(attrs
                .into_iter()
                .find_map(|a| if let Attribute::Label(l) = a { Some(l) } else { None })
                .unwrap_or_default())
        })?;
        Ok((Pkcs11Signer { token: self.token.clone(), algorithm, public, id, handle: Mutex::new(None) }, label))
    }
}

impl DigestSigner for Pkcs11Signer {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign_digest(&self, scheme: DigestScheme, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        // The DER DigestInfo prefix of a SHA-256 digest (RFC 8017 9.2 note 1):
        // CKM_RSA_PKCS signs exactly the bytes it is given.
        const SHA256_DIGEST_INFO: [u8; 19] = [
            0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
            0x20,
        ];
        let pss = PkcsPssParams { hash_alg: MechanismType::SHA256, mgf: PkcsMgfType::MGF1_SHA256, s_len: 32.into() };
        let (mechanism, input): (Mechanism<'_>, Vec<u8>) = match scheme {
            DigestScheme::EcdsaP256 => (Mechanism::Ecdsa, digest.to_vec()),
            DigestScheme::RsaPss => (Mechanism::RsaPkcsPss(pss), digest.to_vec()),
            DigestScheme::RsaPkcs1 => (Mechanism::RsaPkcs, [&SHA256_DIGEST_INFO[..], digest].concat()),
        };
        let raw = self.token.with_session("sign a digest", |c, session| {
            let key = self.handle(c, session)?;
            Ok(session.sign(&mechanism, key, &input)?)
        })?;
        match scheme {
            DigestScheme::EcdsaP256 => ecdsa_der(&raw),
            _ => Ok(raw),
        }
    }
}

/// The security attributes custos requires of a private key on a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyProtection {
    /// CKA_SENSITIVE.
    pub sensitive: bool,
    /// CKA_EXTRACTABLE.
    pub extractable: bool,
    /// CKA_TOKEN (persistent on the token).
    pub token: bool,
    /// CKA_ALWAYS_SENSITIVE: sensitive since it was made (never seen outside the token).
    pub always_sensitive: bool,
    /// CKA_NEVER_EXTRACTABLE: never could have been exported (not imported, never unwrapped out).
    pub never_extractable: bool,
}

impl KeyProtection {
    /// Whether custos accepts the key: sensitive, not extractable, a token
    /// object, and so since it was made. A key that was ever extractable, or
    /// imported from outside, may have been copied (PKCS#11 3.0 4.9).
    pub fn acceptable(&self) -> bool {
        self.sensitive && !self.extractable && self.token && self.always_sensitive && self.never_extractable
    }
}

impl Pkcs11KeyStore {
    /// Reads a key's protection attributes.
    pub fn protection(&self, reference: &KeyReference) -> Result<KeyProtection, KeyError> {
        let uri = String::from_utf8_lossy(&reference.data);
        let (id, class) = (key_id_of(&uri)?, object_class(&uri));
        self.token.with_session("read key attributes", |_, session| {
            let key = find(session, class, &id)?.ok_or(Fail::Missing)?;
            // Absent attributes count against the key.
            let mut p = KeyProtection {
                sensitive: false,
                extractable: true,
                token: false,
                always_sensitive: false,
                never_extractable: false,
            };
            let wanted = [
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Token,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
            ];
            for a in session.get_attributes(key, &wanted)? {
                match a {
                    Attribute::Sensitive(v) => p.sensitive = v,
                    Attribute::Extractable(v) => p.extractable = v,
                    Attribute::Token(v) => p.token = v,
                    Attribute::AlwaysSensitive(v) => p.always_sensitive = v,
                    Attribute::NeverExtractable(v) => p.never_extractable = v,
                    _ => {}
                }
            }
            Ok(p)
        })
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn generate(&self, algorithm: KeyAlgorithm, label: &str) -> Result<GeneratedKey, KeyError> {
        if label.starts_with(LABEL_PREFIX) {
            return Err(KeyError::Purpose(format!("a CA key's label cannot start with {LABEL_PREFIX:?}")));
        }
        let (reference, signer) = self.make(algorithm, label)?;
        Ok(GeneratedKey { reference, signer: Arc::new(signer) })
    }

    fn load(&self, reference: &KeyReference) -> Result<Arc<dyn Signer>, KeyError> {
        let (signer, label) = self.open_key(reference)?;
        if label.starts_with(LABEL_PREFIX.as_bytes()) {
            return Err(KeyError::Purpose(
                "this is a connection key: it cannot sign certificates, CRLs or OCSP responses".into(),
            ));
        }
        Ok(Arc::new(signer))
    }

    fn destroy(&self, reference: &KeyReference) -> Result<(), KeyError> {
        let id = key_id_of(&String::from_utf8_lossy(&reference.data))?;
        self.token.with_session("destroy a key", |_, session| {
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY, ObjectClass::SECRET_KEY] {
                if let Some(h) = find(session, class, &id)? {
                    session.destroy_object(h)?;
                }
            }
            Ok(())
        })
    }

    fn generate_secret(&self, label: &str) -> Result<KeyReference, KeyError> {
        let mut id = vec![0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| KeyError::Crypto { operation: "random key id" })?;
        // A MAC key and nothing else, never leaving the token.
        let template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Id(id.clone()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen(32.into()),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ];
        self.token.with_session("generate a secret key", |_, session| {
            Ok(session.generate_key(&Mechanism::GenericSecretKeyGen, &template)?)
        })?;
        Ok(KeyReference {
            backend: BACKEND.into(),
            data: key_uri(&self.token.config, &id, label, "secret-key").into_bytes(),
        })
    }

    fn generate_connection_key(
        &self,
        algorithm: KeyAlgorithm,
        label: &str,
    ) -> Result<GeneratedConnectionKey, KeyError> {
        let algorithm = connection_algorithm(algorithm)?;
        let (reference, signer) = self.make(algorithm, &format!("{LABEL_PREFIX}{label}"))?;
        Ok(GeneratedConnectionKey { reference, key: ConnectionKey::new(Arc::new(signer)) })
    }

    fn load_connection_key(&self, reference: &KeyReference) -> Result<ConnectionKey, KeyError> {
        let (signer, label) = self.open_key(reference)?;
        if !label.starts_with(LABEL_PREFIX.as_bytes()) {
            return Err(KeyError::Purpose("this key is not a connection key: it cannot sign a caller's bytes".into()));
        }
        connection_algorithm(signer.algorithm)?;
        Ok(ConnectionKey::new(Arc::new(signer)))
    }

    fn mac(&self, reference: &KeyReference, message: &[u8]) -> Result<[u8; 32], KeyError> {
        if reference.backend != BACKEND {
            return Err(KeyError::BackendMismatch { expected: BACKEND, found: reference.backend.clone() });
        }
        let uri = String::from_utf8_lossy(&reference.data).to_string();
        if object_class(&uri) != ObjectClass::SECRET_KEY {
            return Err(KeyError::Token { operation: "compute a MAC", detail: format!("{uri} is not a secret key") });
        }
        if !self.protection(reference)?.acceptable() {
            return Err(KeyError::Exportable { key: uri });
        }
        let id = key_id_of(&uri)?;
        let raw = self.token.with_session("compute a MAC", |_, session| {
            let key = find(session, ObjectClass::SECRET_KEY, &id)?.ok_or(Fail::Missing)?;
            Ok(session.sign(&Mechanism::Sha256Hmac, key, message)?)
        })?;
        raw.try_into().map_err(|r: Vec<u8>| KeyError::Token {
            operation: "compute a MAC",
            detail: format!("{}-byte HMAC", r.len()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_uris_parse_and_refuse_stored_pins() {
        let c = TokenConfig::parse(
            "pkcs11:token=custos%20ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/custos/pin",
        )
        .expect("parse");
        assert_eq!(c.token, "custos ca");
        assert_eq!(c.pin_source, PinSource::File("/etc/custos/pin".into()));
        assert_eq!(TokenConfig::parse(&c.uri()).expect("round trip"), c);
        assert!(TokenConfig::parse("pkcs11:token=x?module-path=/m.so&pin-value=1234").is_err());
        assert!(TokenConfig::parse("pkcs11:token=x?module-path=/m.so").is_err());
        assert!(TokenConfig::parse("pkcs11:module-path=/m.so&pin-source=env:P").is_err());
        assert!(TokenConfig::parse("file:/x").is_err());
        assert_eq!(key_id_of(&key_uri(&c, &[1, 0xab, 0x20], "root 1", "private")).expect("id"), vec![1, 0xab, 0x20]);
    }

    #[test]
    fn ecdsa_signatures_become_der() {
        let mut raw = vec![0x80; 32];
        raw.extend(vec![0x00; 31]);
        raw.push(0x05);
        let der = ecdsa_der(&raw).expect("der");
        assert_eq!(&der[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x05]);
        assert!(ecdsa_der(&[1, 2, 3]).is_err());
    }
}
