//! `custos issue --from FILE [--out RESULTS]`: bulk issuance that never loses
//! a generated key and resumes after a crash.
//!
//! Each input line's request carries an idempotency key, `bulk:JOB:LINE`,
//! where JOB is the SHA-256 of the input file: a line whose key is in the
//! database was issued, in the same transaction as its certificate. Results
//! (with generated private keys) are appended to RESULTS and synced before
//! their batch commits. Crash states and what a second run of the same
//! command does with them:
//!
//! - killed before a batch's results were synced: nothing of that batch
//!   exists anywhere; the rerun issues it.
//! - killed after the sync, before the commit: RESULTS holds lines for
//!   certificates that do not exist; the rerun drops them from RESULTS
//!   (rewritten through a new file renamed into place) and issues them anew.
//! - killed after the commit: the rerun skips those lines and says so.
//! - a torn last line (killed mid-write): dropped like an uncommitted one.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use custos_ca::Issued;
use serde::Deserialize;
use serde_json::json;

use crate::session::{checkpoint, open_unsealed};
use crate::{Cli, CliError, IssueArgs};
use custos_ca::policy::parse_duration;
use custos_ca::{IssueRequest, KeyAlgorithm, KeySource};
use custos_pki::Profile;

/// One line of `issue --from FILE`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkLine {
    tenant: String,
    connection: String,
    /// CSR in PEM; without it custos generates the key.
    csr: Option<String>,
    profile: Option<String>,
    #[serde(default, alias = "sans")]
    san: Vec<String>,
    validity: Option<String>,
    key_algorithm: Option<String>,
}

/// One request as the CLI takes it (arguments, or a line of a bulk file).
pub fn request(
    tenant: String,
    connection: String,
    csr: Option<Vec<u8>>,
    profile: Option<&str>,
    sans: Vec<String>,
    validity: Option<&str>,
    key_algorithm: Option<&str>,
) -> Result<IssueRequest, CliError> {
    let profile: Option<Profile> = profile.map(str::parse).transpose().map_err(custos_ca::CaError::from)?;
    let validity_secs = validity.map(parse_duration).transpose()?;
    let key = match csr {
        Some(bytes) => KeySource::Csr(bytes),
        None => KeySource::Generate(
            key_algorithm.map(str::parse::<KeyAlgorithm>).transpose().map_err(custos_ca::CaError::from)?,
        ),
    };
    Ok(IssueRequest { tenant, connection, profile, sans, validity_secs, key, request_key: None })
}

/// Runs `issue --from FILE`.
pub async fn issue_bulk(cli: &Cli, args: &IssueArgs, from: &Path) -> Result<(), CliError> {
    let io = |source| CliError::Io { path: from.to_path_buf(), source };
    let input = std::fs::read(from).map_err(io)?;
    let job = hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input).as_ref()[..16]);
    let mut requests = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |e: String| CliError::Usage(format!("{}:{}: {e}", from.display(), i + 1));
        let l: BulkLine = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let mut r = request(
            l.tenant,
            l.connection,
            l.csr.map(String::into_bytes),
            l.profile.as_deref(),
            l.san,
            l.validity.as_deref(),
            l.key_algorithm.as_deref(),
        )
        .map_err(|e| bad(e.to_string()))?;
        r.request_key = Some(format!("bulk:{job}:{}", i + 1));
        requests.push(r);
    }
    if requests.is_empty() {
        return Err(CliError::Usage(format!("{} holds no requests", from.display())));
    }
    let s = open_unsealed(cli).await?;
    let done: HashMap<String, String> = s.ca.issued_requests(&s.me, &requests).await?.into_iter().collect();
    let mut sink: Box<dyn ResultSink> = match &args.out {
        Some(path) => Box::new(ResultsFile::open(path, &job, &done)?),
        None => Box::new(std::io::stdout()),
    };
    let mut write = |batch: &[Issued]| sink.write_batch(&job, batch);
    let started = std::time::Instant::now();
    let outcome = s.ca.issue_bulk(&s.me, requests, &mut write).await?;
    checkpoint(&s).await;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("issued {} certificates in {secs:.2}s ({:.0}/s)", outcome.issued, outcome.issued as f64 / secs.max(1e-9));
    if !outcome.skipped.is_empty() {
        eprintln!(
            "skipped {} lines an earlier run of this input already issued (their results are where that run wrote them)",
            outcome.skipped.len()
        );
    }
    Ok(())
}

/// Line number of a `bulk:JOB:LINE` request key.
fn line_of(key: Option<&str>) -> Option<u64> {
    key?.rsplit(':').next()?.parse().ok()
}

/// Where results go; each batch must be durable when `write_batch` returns.
trait ResultSink: Send {
    /// Appends one JSON line per certificate and makes them durable.
    fn write_batch(&mut self, job: &str, batch: &[Issued]) -> std::io::Result<()>;
}

fn result_lines(job: &str, batch: &[Issued]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.len() * 1200);
    for issued in batch {
        let r = &issued.record;
        let line = json!({
            "job": job, "line": line_of(issued.request_key.as_deref()),
            "serial": r.serial, "tenant": r.tenant, "connection": r.connection,
            "certificate": custos_pki::certificate_pem(&r.der),
            "private_key": issued.key.as_ref().map(|k| k.pkcs8_pem().to_string()),
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

impl ResultSink for std::io::Stdout {
    fn write_batch(&mut self, job: &str, batch: &[Issued]) -> std::io::Result<()> {
        let mut out = self.lock();
        out.write_all(&result_lines(job, batch))?;
        out.flush()
    }
}

/// The results file: custos's own (0600, one link, no symlink), synced per batch.
struct ResultsFile {
    file: std::fs::File,
}

/// What a results line says about itself.
#[derive(Deserialize)]
struct ResultLine {
    job: Option<String>,
    line: Option<u64>,
    serial: Option<String>,
}

impl ResultsFile {
    /// Opens `path` for this job: a new file, or one an earlier run of the same
    /// input wrote, kept only for lines whose certificates were committed.
    fn open(path: &Path, job: &str, done: &HashMap<String, String>) -> Result<ResultsFile, CliError> {
        let io = |source| CliError::Io { path: path.to_path_buf(), source };
        let file = custos_ca::files::open_own_private(path, "--out")?;
        // The checks above held for the open descriptor; read through it too.
        let text = std::fs::read(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file))).map_err(io)?;
        if text.is_empty() {
            return Ok(ResultsFile { file });
        }
        let committed: HashMap<u64, &str> =
            done.iter().filter_map(|(k, serial)| Some((line_of(Some(k))?, serial.as_str()))).collect();
        let mut kept = Vec::with_capacity(text.len());
        let mut dropped = 0usize;
        for raw in text.split_inclusive(|b| *b == b'\n') {
            let parsed: Option<ResultLine> = raw.ends_with(b"\n").then(|| serde_json::from_slice(raw).ok()).flatten();
            match parsed {
                Some(l) if l.job.as_deref() != Some(job) => {
                    return Err(CliError::Usage(format!(
                        "{} holds results of another input (or of an older custos); custos resumes only its own \
                         results of this input: choose another --out",
                        path.display()
                    )));
                }
                Some(l) if l.line.and_then(|n| committed.get(&n)).is_some_and(|s| Some(*s) == l.serial.as_deref()) => {
                    kept.extend_from_slice(raw)
                }
                // A torn line, or one whose batch never committed.
                _ => dropped += 1,
            }
        }
        if dropped == 0 {
            return Ok(ResultsFile { file });
        }
        eprintln!(
            "{}: dropping {dropped} results of an interrupted run whose certificates were never committed",
            path.display()
        );
        crate::output::replace_private(path, &kept)?;
        Ok(ResultsFile { file: custos_ca::files::open_own_private(path, "--out")? })
    }
}

impl ResultSink for ResultsFile {
    fn write_batch(&mut self, job: &str, batch: &[Issued]) -> std::io::Result<()> {
        self.file.write_all(&result_lines(job, batch))?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_come_from_request_keys() {
        assert_eq!(line_of(Some("bulk:00ff:17")), Some(17));
        assert_eq!(line_of(Some("bulk:00ff:x")), None);
        assert_eq!(line_of(None), None);
    }
}
