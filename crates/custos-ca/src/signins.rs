//! `audit match`: which of a relying party's sign-ins did custos not sign?
//!
//! A custodied connection's key signs only through custos, and each client
//! assertion is indexed (jti, certificate, audience, time) in the transaction
//! of its audit entry. A sign-in at the relying party with that certificate
//! is genuine only if custos signed an assertion for that certificate and
//! audience in the ten minutes before it (and, when the export names the
//! `jti`, exactly that assertion). Anything else was signed with a stolen
//! key: its tenant was targeted.
//!
//! The export is untrusted input (it comes from outside): every record is
//! checked, and an error names its line and field. It is JSON lines or CSV
//! with a header row, with the fields `time` (RFC 3339), `thumbprint`
//! (`x5t#S256` or `x5t` as base64url, or the same digest in hex as portals
//! show it), `audience`, `client_ip`, and optionally `jti` and `tenant`.

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use custos_audit::merkle::{self, NodeId};
use custos_store::{SignatureProbe, SignatureRecord};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::authorization::{Operation, authorize};
use crate::{Ca, CaError, Principal, Result};

/// How long before a sign-in its assertion may have been made: what Entra ID
/// and custos allow as an assertion's lifetime.
pub const WINDOW_SECS: i64 = 600;
/// How far a sign-in's clock may run behind custos's.
pub const SKEW_SECS: i64 = 60;
/// Sign-ins matched per batch of lookups in the signature index.
const CHUNK: usize = 10_000;
/// Batches looked up at once.
const PARALLEL_LOOKUPS: usize = 4;

/// One sign-in from a relying party's export.
#[derive(Clone, Debug)]
pub struct SignIn {
    /// Its line in the export (1-based; a CSV header is line 1).
    pub line: usize,
    /// When, Unix seconds.
    pub time: i64,
    /// The certificate's thumbprint, as base64url (SHA-256 or SHA-1).
    pub thumbprint: String,
    /// The token endpoint the assertion named.
    pub audience: String,
    /// Where the sign-in came from.
    pub client_ip: String,
    /// The assertion's jti, if the export has it.
    pub jti: Option<String>,
    /// The tenant, if the export names it.
    pub tenant: Option<String>,
    /// The record as given, echoed in the report.
    pub record: Value,
}

/// Why an export could not be read.
#[derive(Debug, thiserror::Error)]
#[error("sign-in export, line {line}: {reason}")]
pub struct SignInError {
    /// The line (1-based).
    pub line: usize,
    /// What was wrong.
    pub reason: String,
}

/// The largest export read at once.
pub const MAX_EXPORT_BYTES: usize = 2 << 30;

/// Reads an export: JSON lines (each line an object) or CSV with a header row.
pub fn parse_signins(bytes: &[u8]) -> std::result::Result<Vec<SignIn>, SignInError> {
    if bytes.len() > MAX_EXPORT_BYTES {
        return Err(SignInError { line: 0, reason: format!("larger than {MAX_EXPORT_BYTES} bytes") });
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        let mut out = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record: Value = serde_json::from_slice(line)
                .map_err(|e| SignInError { line: i + 1, reason: format!("not a JSON object: {e}") })?;
            out.push(sign_in(i + 1, record)?);
        }
        return Ok(out);
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| SignInError { line: 1, reason: format!("CSV header: {e}") })?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let mut out = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let line = i + 2;
        let row = row.map_err(|e| SignInError { line, reason: format!("CSV: {e}") })?;
        let record: serde_json::Map<String, Value> =
            headers.iter().zip(row.iter()).map(|(h, v)| (h.clone(), Value::String(v.to_string()))).collect();
        out.push(sign_in(line, Value::Object(record))?);
    }
    Ok(out)
}

/// One record's fields, checked.
fn sign_in(line: usize, record: Value) -> std::result::Result<SignIn, SignInError> {
    let fail = |reason: String| SignInError { line, reason };
    let field = |name: &str| -> std::result::Result<Option<String>, SignInError> {
        match record.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) if s.len() <= 2048 => Ok(Some(s.trim().to_string())),
            Some(Value::String(_)) => Err(fail(format!("{name} is longer than 2048 characters"))),
            Some(other) => Err(fail(format!("{name} is not a string: {other}"))),
        }
    };
    let required = |name: &str| field(name)?.ok_or_else(|| fail(format!("{name} is missing")));
    if !record.is_object() {
        return Err(fail("not an object".into()));
    }
    let time_text = required("time")?;
    let time = OffsetDateTime::parse(&time_text, &Rfc3339)
        .map_err(|e| fail(format!("time {time_text:?} is not RFC 3339: {e}")))?
        .unix_timestamp();
    let thumbprint = normalize_thumbprint(&required("thumbprint")?).map_err(fail)?;
    Ok(SignIn {
        line,
        time,
        thumbprint,
        audience: required("audience")?,
        client_ip: required("client_ip")?,
        jti: field("jti")?,
        tenant: field("tenant")?,
        record,
    })
}

/// A thumbprint as base64url: given so, or as hex (colons allowed), of a SHA-256 or SHA-1 digest.
fn normalize_thumbprint(text: &str) -> std::result::Result<String, String> {
    let hex_digits: String = text.chars().filter(|c| *c != ':').collect();
    if matches!(hex_digits.len(), 40 | 64)
        && let Ok(bytes) = hex::decode(&hex_digits)
    {
        return Ok(URL_SAFE_NO_PAD.encode(bytes));
    }
    match URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')) {
        Ok(bytes) if matches!(bytes.len(), 20 | 32) => Ok(URL_SAFE_NO_PAD.encode(bytes)),
        _ => Err(format!("thumbprint {text:?} is not a SHA-256 or SHA-1 digest in base64url or hex")),
    }
}

/// A sign-in custos signed the assertion for.
#[derive(Clone, Debug, Serialize)]
pub struct Matched {
    /// The input record.
    pub record: Value,
    /// Its line in the export.
    pub line: usize,
    /// The tenant and connection whose key signed it.
    pub tenant: String,
    /// The connection.
    pub connection: String,
    /// The assertion's jti.
    pub jti: String,
    /// The audit entry that records the assertion.
    pub log_index: u64,
    /// Its inclusion proof against the report's checkpoint (absent with
    /// `--no-proofs`, or when no checkpoint covers it yet).
    pub proof: Option<CompactProof>,
}

/// A sign-in custos did not sign: a use of a stolen key.
#[derive(Clone, Debug, Serialize)]
pub struct Unmatched {
    /// The input record.
    pub record: Value,
    /// Its line in the export.
    pub line: usize,
    /// The tenant it targeted: the export's, else the one whose certificate it named.
    pub tenant: Option<String>,
    /// Why it does not match.
    pub reason: String,
}

/// An audit path, as hex, leaf to root.
#[derive(Clone, Debug, Serialize)]
pub struct CompactProof {
    /// The entry's leaf hash.
    pub leaf_hash: String,
    /// The audit path.
    pub path: Vec<String>,
}

/// What `audit match` found.
#[derive(Clone, Debug, Serialize, Default)]
pub struct MatchReport {
    /// Sign-ins custos signed for.
    pub matched: Vec<Matched>,
    /// Sign-ins it did not.
    pub unmatched: Vec<Unmatched>,
    /// Tenants with at least one unmatched sign-in.
    pub targeted_tenants: Vec<String>,
    /// The signed checkpoint the proofs lead to, if any.
    pub checkpoint: Option<String>,
}

/// What custos knows of a certificate it holds a custodied key for.
#[derive(Clone)]
struct Held {
    serial: String,
    tenant: String,
}

impl Ca {
    /// Matches `signins` against the assertions custos signed (see the module
    /// comment); with `proofs`, each matched one carries its inclusion proof.
    pub async fn match_signins(
        &self,
        principal: &Principal,
        mut signins: Vec<SignIn>,
        proofs: bool,
    ) -> Result<MatchReport> {
        authorize(principal, Operation::ReadAudit)?;
        // Thumbprint (SHA-256 and SHA-1) -> the custodied certificate.
        let mut held: HashMap<String, Held> = HashMap::new();
        let keys = self.store.all_custody_keys().await?;
        for chunk in keys.chunks(500) {
            let serials: Vec<String> = chunk.iter().map(|k| k.serial.clone()).collect();
            for c in self.store.certificates_by_serials(&serials).await? {
                let h = Held { serial: c.serial.clone(), tenant: c.tenant.clone() };
                held.insert(custos_pki::jws::thumbprint_sha256(&c.der), h.clone());
                held.insert(custos_pki::jws::thumbprint_sha1(&c.der), h);
            }
        }
        signins.sort_by_key(|s| (s.time, s.line));
        let mut report = MatchReport::default();
        // One probe per sign-in whose thumbprint custos knows, per chunk; the
        // chunks' lookups run a few at a time (the store reads in parallel).
        let chunks: Vec<&[SignIn]> = signins.chunks(CHUNK).collect();
        let probe_sets: Vec<Vec<SignatureProbe>> = chunks
            .iter()
            .map(|chunk| {
                chunk
                    .iter()
                    .filter_map(|s| held.get(&s.thumbprint).map(|h| (s, h)))
                    .map(|(s, h)| SignatureProbe {
                        jti: s.jti.clone(),
                        serial: h.serial.clone(),
                        aud: s.audience.clone(),
                        from: s.time - WINDOW_SECS,
                        to: s.time + SKEW_SECS,
                    })
                    .collect()
            })
            .collect();
        let mut lookups = futures_util::stream::iter(probe_sets.iter().map(|p| self.store.find_signatures(p)))
            .buffered(PARALLEL_LOOKUPS);
        for chunk in chunks {
            let known: Vec<&SignIn> = chunk.iter().filter(|s| held.contains_key(&s.thumbprint)).collect();
            let found = lookups
                .next()
                .await
                .ok_or_else(|| CaError::Inconsistent("a lookup of the signature index went missing".into()))??;
            let mut answers: HashMap<usize, Option<SignatureRecord>> =
                known.iter().zip(found).map(|(s, f)| (s.line, f)).collect();
            for s in chunk {
                let in_window =
                    |sig: &SignatureRecord| sig.iat >= s.time - WINDOW_SECS && sig.iat <= s.time + SKEW_SECS;
                let h = held.get(&s.thumbprint);
                let answer = answers.remove(&s.line).flatten();
                let outcome: std::result::Result<SignatureRecord, String> = match (h, &s.jti, answer) {
                    (None, _, _) => Err("the thumbprint is not a certificate custos holds a key for".into()),
                    (Some(_), Some(jti), None) => Err(format!("custos never issued jti {jti:?}")),
                    (Some(h), Some(jti), Some(sig)) if sig.serial != h.serial => {
                        Err(format!("jti {jti:?} was signed by another key"))
                    }
                    (Some(_), Some(jti), Some(sig)) if sig.aud != s.audience => {
                        Err(format!("jti {jti:?} was signed for another audience"))
                    }
                    (Some(_), Some(jti), Some(sig)) if !in_window(&sig) => {
                        Err(format!("jti {jti:?} was not signed in the ten minutes before"))
                    }
                    (Some(_), _, Some(sig)) => Ok(sig),
                    (Some(_), None, None) => {
                        Err("custos signed no assertion for this certificate and audience in the ten minutes before"
                            .into())
                    }
                };
                match outcome {
                    Ok(sig) => report.matched.push(Matched {
                        record: s.record.clone(),
                        line: s.line,
                        tenant: sig.tenant,
                        connection: sig.connection,
                        jti: sig.jti,
                        log_index: sig.audit_index,
                        proof: None,
                    }),
                    Err(reason) => report.unmatched.push(Unmatched {
                        record: s.record.clone(),
                        line: s.line,
                        tenant: s.tenant.clone().or_else(|| h.map(|h| h.tenant.clone())),
                        reason,
                    }),
                }
            }
        }
        let targeted: BTreeSet<String> =
            report.unmatched.iter().map(|u| u.tenant.clone().unwrap_or_else(|| "(unknown)".into())).collect();
        report.targeted_tenants = targeted.into_iter().collect();
        if proofs {
            self.prove_matched(&mut report).await?;
        }
        Ok(report)
    }

    /// Adds an inclusion proof to every matched sign-in the latest checkpoint covers.
    async fn prove_matched(&self, report: &mut MatchReport) -> Result<()> {
        let Some(cp) = self.store.latest_checkpoint().await? else { return Ok(()) };
        let vkey = self.log_verifier_key().await?;
        let checkpoint = custos_audit::note::Checkpoint::open(&cp.note, &vkey)?;
        report.checkpoint = Some(cp.note.clone());
        let covered: Vec<usize> =
            (0..report.matched.len()).filter(|i| report.matched[*i].log_index < cp.size).collect();
        for chunk in covered.chunks(2048) {
            let mut wanted: Vec<NodeId> = Vec::new();
            for i in chunk {
                let index = report.matched[*i].log_index;
                wanted.extend(merkle::needed_nodes(|read| merkle::inclusion_proof(index, cp.size, read)));
                wanted.push(NodeId { level: 0, index });
            }
            wanted.sort_by_key(|n| (n.level, n.index));
            wanted.dedup();
            let nodes = self.store.audit_nodes(&wanted).await?;
            for i in chunk {
                let m = &mut report.matched[*i];
                let read = &mut |id: NodeId| nodes.get(&id).copied().unwrap_or_default();
                let path =
                    merkle::inclusion_proof(m.log_index, cp.size, read).map_err(custos_audit::AuditError::from)?;
                let leaf = nodes
                    .get(&NodeId { level: 0, index: m.log_index })
                    .copied()
                    .ok_or_else(|| CaError::Inconsistent(format!("entry {} has no leaf hash", m.log_index)))?;
                merkle::verify_inclusion(&leaf, m.log_index, cp.size, &path, &checkpoint.root)
                    .map_err(custos_audit::AuditError::from)?;
                m.proof =
                    Some(CompactProof { leaf_hash: hex::encode(leaf), path: path.iter().map(hex::encode).collect() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_B64: &str = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";

    #[test]
    fn json_lines_and_csv_read_alike_and_hex_thumbprints_become_base64url() {
        let jsonl = format!(
            "{{\"time\": \"2026-11-29T10:00:00Z\", \"thumbprint\": \"{SHA256_B64}\", \"audience\": \"https://a/token\", \"client_ip\": \"198.51.100.7\", \"jti\": \"j-1\"}}\n\n"
        );
        let hex = "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55";
        let csv = format!(
            "time,thumbprint,audience,client_ip,jti,tenant\n2026-11-29T10:00:00Z,{hex},\"https://a/token\",198.51.100.7,,acme\n"
        );
        let a = parse_signins(jsonl.as_bytes()).expect("jsonl");
        let b = parse_signins(csv.as_bytes()).expect("csv");
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(a[0].thumbprint, SHA256_B64);
        assert_eq!(b[0].thumbprint, SHA256_B64, "hex (as portals show it) is the same digest");
        assert_eq!((a[0].jti.as_deref(), b[0].jti.as_deref()), (Some("j-1"), None));
        assert_eq!((b[0].tenant.as_deref(), b[0].line), (Some("acme"), 2));
        assert_eq!(a[0].time, b[0].time);
    }

    #[test]
    fn a_bad_record_names_its_line_and_field() {
        let cases: [(&str, &str); 5] = [
            ("{\"time\": \"2026-11-29T10:00:00Z\"}\n{}", "line 1: thumbprint is missing"),
            ("{\"time\": \"noon\", \"thumbprint\": \"x\", \"audience\": \"a\", \"client_ip\": \"c\"}", "line 1: time"),
            ("time,thumbprint,audience,client_ip\n2026-11-29T10:00:00Z,abc,a,c\n", "line 2: thumbprint"),
            ("time,thumbprint\n1,2,3\n", "line 2: CSV"),
            ("{\"time\": 5}", "line 1: time is not a string"),
        ];
        for (input, expected) in cases {
            let e = parse_signins(input.as_bytes()).expect_err(input);
            assert!(e.to_string().contains(expected), "{input:?}: {e}");
        }
    }

    /// The fuzz target's entry point (fuzz/fuzz_targets/signins.rs) on hostile
    /// and mutated input, bounded, on stable: it answers, it never panics.
    #[test]
    fn the_parser_survives_mutated_exports() {
        let seeds: [&[u8]; 3] = [
            include_bytes!("../../../fuzz/seeds/signins/one.jsonl"),
            include_bytes!("../../../fuzz/seeds/signins/one.csv"),
            b"\xff\xfe{\"time\":[1,2,{}]}\n\"\"\",,,\n",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 6) {
                if input.is_empty() {
                    break;
                }
                let at = (next() as usize) % input.len();
                match next() % 3 {
                    0 => input[at] = next() as u8,
                    1 => {
                        input.remove(at);
                    }
                    _ => input.insert(at, b"{},\"\n:="[(next() % 7) as usize]),
                }
            }
            let _ = parse_signins(&input);
        }
    }
}
