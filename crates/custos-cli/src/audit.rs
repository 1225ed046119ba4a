//! `custos audit ...`: tail, verify (local or remote), proof, checkpoint, usage, key.

use std::path::Path;

use custos_audit::tiles::tiles_for;
use custos_audit::{Checkpoint, Expected, TileRef, Verifier, VerifierKey};
use custos_ca::{AuditEntry, AuditFilter};
use serde_json::json;

use crate::output::{json, table};
use crate::session::{open, open_unsealed};
use crate::{AuditCommand, Cli, CliError, TailArgs, VerifyArgs};

/// How often `tail --follow` looks for new entries.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs one `audit` subcommand.
pub async fn run(cli: &Cli, command: &AuditCommand) -> Result<(), CliError> {
    if let Some(api) = crate::remote::Api::from_cli(cli).await? {
        return remote(cli, api, command).await;
    }
    match command {
        AuditCommand::Tail(args) => tail(cli, args).await,
        AuditCommand::Verify(args) => verify(cli, args).await,
        AuditCommand::Proof { index } => {
            let s = open(cli).await?;
            let proof = s.ca.inclusion_proof(&s.me, *index).await?;
            if cli.json {
                return json(&proof);
            }
            println!("entry {} is in the log of {} entries (root {})", proof.index, proof.size, proof.root);
            println!("leaf hash {}", proof.leaf_hash);
            for (i, h) in proof.path.iter().enumerate() {
                println!("path[{i}] {h}");
            }
            println!("entry {}", proof.entry);
            print!("\n{}", proof.checkpoint);
            Ok(())
        }
        AuditCommand::Checkpoint { sign } => {
            let s = if *sign { open_unsealed(cli).await? } else { open(cli).await? };
            if *sign {
                custos_node::sign_checkpoint(&s.config, &s.ca, &s.me).await?;
            }
            let cp =
                s.ca.latest_checkpoint()
                    .await?
                    .ok_or_else(|| CliError::Usage("the log has no checkpoint yet; run with --sign".into()))?;
            let size = s.ca.audit_size().await?;
            if size > cp.size {
                eprintln!(
                    "note: {} newer entries are not covered yet (a running `custos serve` signs within a second; or use --sign)",
                    size - cp.size
                );
            }
            if cli.json {
                return json(&json!({"size": cp.size, "root": hex::encode(&cp.root), "note": cp.note}));
            }
            print!("{}", cp.note);
            Ok(())
        }
        AuditCommand::Usage { key } => usage(cli, key).await,
        AuditCommand::Match { signins, no_proofs, witnesses } => {
            match_signins(cli, signins, !*no_proofs, witnesses).await
        }
        AuditCommand::Key => {
            let key = open(cli).await?.ca.log_verifier_key().await?;
            if cli.json {
                return json(&json!({"verifier_key": key.to_string(), "origin": key.name}));
            }
            println!("{key}");
            Ok(())
        }
    }
}

/// One `audit` subcommand through the API, printing what the local one prints.
async fn remote(cli: &Cli, mut api: crate::remote::Api, command: &AuditCommand) -> Result<(), CliError> {
    match command {
        AuditCommand::Tail(args) => remote_tail(cli, &mut api, args).await,
        AuditCommand::Proof { index } => {
            let p = api.get(&format!("/api/v1/audit/entries/{index}")).await?;
            let proof = RemoteProof::check(&p)?;
            if cli.json {
                return json(&json!({"index": index, "size": proof.size, "leaf_hash": p["leaf_hash"],
                                    "path": p["path"], "root": p["root"], "checkpoint": p["checkpoint"],
                                    "entry": p["public_entry"]}));
            }
            println!("entry {index} is in the log of {} entries (root {})", proof.size, proof.root);
            println!("leaf hash {}", p["leaf_hash"].as_str().unwrap_or_default());
            for (i, h) in p["path"].as_array().into_iter().flatten().enumerate() {
                println!("path[{i}] {}", h.as_str().unwrap_or_default());
            }
            println!("entry {}", p["public_entry"]);
            print!("\n{}", p["checkpoint"].as_str().unwrap_or_default());
            Ok(())
        }
        AuditCommand::Checkpoint { sign } => {
            if *sign {
                return Err(CliError::Usage(
                    "--sign is local: a running `custos serve` signs a checkpoint within a second of each write".into(),
                ));
            }
            let cp = api.get("/api/v1/audit/checkpoint").await?;
            let note = cp["note"].as_str().unwrap_or_default();
            if cli.json {
                let parsed =
                    Checkpoint::parse(note).map_err(|e| CliError::Remote(format!("the server's checkpoint: {e}")))?;
                return json(&json!({"size": parsed.size, "root": hex::encode(parsed.root), "note": note}));
            }
            print!("{note}");
            Ok(())
        }
        AuditCommand::Usage { key } => {
            let usage = api.get(&format!("/api/v1/keys/{}/usage", crate::remote::encode(key))).await?;
            let uses = usage.as_array().cloned().unwrap_or_default();
            let total: i64 = uses.iter().filter_map(|u| u["count"].as_i64()).sum();
            if cli.json {
                return json(&json!({"key": key, "total": total, "usage": uses}));
            }
            let text = crate::remote::text;
            let rows: Vec<Vec<String>> = uses
                .iter()
                .map(|u| vec![text(u, "day"), text(u, "actor"), text(u, "action"), u["count"].to_string()])
                .collect();
            print!("{}", table(&["DAY", "ACTOR", "ACTION", "COUNT"], &rows));
            println!("total: {total}");
            Ok(())
        }
        AuditCommand::Verify(_) => Err(CliError::Usage(
            "a remote log is verified from its public tiles, not through the API: \
             `custos audit verify --url http://HOST:PORT --key KEY`"
                .into(),
        )),
        AuditCommand::Key | AuditCommand::Match { .. } => Err(CliError::Usage(
            "this audit command reads the database: run it on a custos node (`audit key` is also on the \
             checkpoint's signature line)"
                .into(),
        )),
    }
}

/// An inclusion proof from the API, checked here: the path leads from the
/// leaf to the root, and the root is the one the checkpoint note names.
struct RemoteProof {
    size: u64,
    root: String,
}

impl RemoteProof {
    fn check(p: &serde_json::Value) -> Result<RemoteProof, CliError> {
        let bad = |what: &str| CliError::Remote(format!("the server's inclusion proof does not hold: {what}"));
        let hash = |v: &serde_json::Value| -> Option<custos_audit::merkle::Hash> {
            hex::decode(v.as_str()?).ok()?.try_into().ok()
        };
        let (index, size) =
            (p["index"].as_u64().ok_or_else(|| bad("index"))?, p["size"].as_u64().ok_or_else(|| bad("size"))?);
        let leaf = hash(&p["leaf_hash"]).ok_or_else(|| bad("leaf hash"))?;
        let root = hash(&p["root"]).ok_or_else(|| bad("root"))?;
        let path: Vec<custos_audit::merkle::Hash> =
            p["path"].as_array().into_iter().flatten().map(hash).collect::<Option<_>>().ok_or_else(|| bad("path"))?;
        custos_audit::merkle::verify_inclusion(&leaf, index, size, &path, &root).map_err(|e| bad(&e.to_string()))?;
        let checkpoint = Checkpoint::parse(p["checkpoint"].as_str().unwrap_or_default())
            .map_err(|e| bad(&format!("its checkpoint: {e}")))?;
        if (checkpoint.size, checkpoint.root) != (size, root) {
            return Err(bad("the checkpoint names another tree"));
        }
        Ok(RemoteProof { size, root: hex::encode(root) })
    }
}

/// `audit tail` through the API: the newest page, then (with --follow)
/// every page from the cursor after it.
async fn remote_tail(cli: &Cli, api: &mut crate::remote::Api, args: &TailArgs) -> Result<(), CliError> {
    if !(1..=1000).contains(&args.lines) {
        return Err(CliError::Usage(format!(
            "-n {}: through the API, between 1 and 1000 (a page of /api/v1/audit/entries)",
            args.lines
        )));
    }
    let query = |cursor: Option<u64>, limit: usize| {
        let mut q = vec![format!("limit={limit}")];
        for (k, v) in [("action", &args.action), ("key", &args.key)] {
            if let Some(v) = v {
                q.push(format!("{k}={}", crate::remote::encode(v)));
            }
        }
        if let Some(c) = cursor {
            q.push(format!("cursor={c}"));
        }
        format!("/api/v1/audit/entries?{}", q.join("&"))
    };
    let page = api.get(&query(None, args.lines)).await?;
    let mut next = print_remote_entries(cli, &page, true)?;
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        // Without an entry yet, start from the newest checkpoint's size.
        let from = match next {
            Some(n) => n,
            None => api.get("/api/v1/audit/checkpoint").await?["size"].as_u64().unwrap_or_default(),
        };
        let page = api.get(&query(Some(from), 1000)).await?;
        next = print_remote_entries(cli, &page, false)?.or(Some(from));
    }
}

/// Prints a page of the API's entries with the local printer; the index after the last.
fn print_remote_entries(cli: &Cli, page: &serde_json::Value, header: bool) -> Result<Option<u64>, CliError> {
    use crate::remote::text;
    let entries = page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let bad = |what: &str| CliError::Remote(format!("an audit entry's {what}: {e}"));
            let time = time::OffsetDateTime::parse(&text(e, "time"), &time::format_description::well_known::Rfc3339)
                .map_err(|_| bad("time"))?;
            Ok(AuditEntry {
                index: e["index"].as_u64().ok_or_else(|| bad("index"))?,
                record: custos_ca::AuditRecord {
                    time: time.unix_timestamp(),
                    actor: text(e, "actor"),
                    action: text(e, "action"),
                    object: text(e, "object"),
                    key: e["key"].as_str().map(str::to_string),
                    details: text(e, "details"),
                },
                leaf_hash: Vec::new(),
                salt: None,
            })
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    if header || !entries.is_empty() {
        print_entries(cli, &entries, header);
    }
    Ok(entries.last().map(|e| e.index + 1))
}

fn entry_json(e: &AuditEntry) -> serde_json::Value {
    let details: serde_json::Value = serde_json::from_str(&e.record.details).unwrap_or(serde_json::Value::Null);
    json!({
        "index": e.index, "time": custos_ca::rfc3339(e.record.time), "actor": e.record.actor,
        "action": e.record.action, "object": e.record.object, "key": e.record.key, "details": details,
    })
}

fn print_entries(cli: &Cli, entries: &[AuditEntry], header: bool) {
    if cli.json {
        for e in entries {
            println!("{}", entry_json(e));
        }
        return;
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.index.to_string(),
                custos_ca::rfc3339(e.record.time),
                e.record.actor.clone(),
                e.record.action.clone(),
                e.record.object.clone(),
                e.record.key.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let text = table(&["INDEX", "TIME", "ACTOR", "ACTION", "OBJECT", "KEY"], &rows);
    // Followed entries continue the first table without repeating its header.
    print!("{}", if header { &text[..] } else { text.split_once('\n').map_or("", |(_, rest)| rest) });
}

async fn tail(cli: &Cli, args: &TailArgs) -> Result<(), CliError> {
    let s = open(cli).await?;
    let mut filter = AuditFilter {
        action: args.action.clone(),
        key: args.key.clone(),
        from: None,
        limit: args.lines,
        ..Default::default()
    };
    let first = s.ca.audit_tail(&s.me, &filter).await?;
    print_entries(cli, &first, true);
    if !args.follow {
        return Ok(());
    }
    let mut next = match first.last() {
        Some(e) => e.index + 1,
        None => s.ca.audit_size().await?,
    };
    filter.limit = 10_000;
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        filter.from = Some(next);
        let new = s.ca.audit_tail(&s.me, &filter).await?;
        if let Some(last) = new.last() {
            next = last.index + 1;
            print_entries(cli, &new, false);
        } else {
            // Nothing matched, but skip what was scanned.
            next = next.max(s.ca.audit_size().await?);
        }
    }
}

async fn usage(cli: &Cli, key: &str) -> Result<(), CliError> {
    let s = open(cli).await?;
    let usage = s.ca.key_usage(&s.me, key).await?;
    if cli.json {
        let rows: Vec<serde_json::Value> = usage
            .iter()
            .map(|u| json!({"day": day(u.day), "actor": u.actor, "action": u.action, "count": u.count}))
            .collect();
        let total: i64 = usage.iter().map(|u| u.count).sum();
        return json(&json!({"key": key, "total": total, "usage": rows}));
    }
    let rows: Vec<Vec<String>> =
        usage.iter().map(|u| vec![day(u.day), u.actor.clone(), u.action.clone(), u.count.to_string()]).collect();
    print!("{}", table(&["DAY", "ACTOR", "ACTION", "COUNT"], &rows));
    println!("total: {}", usage.iter().map(|u| u.count).sum::<i64>());
    Ok(())
}

fn day(day: i64) -> String {
    custos_ca::rfc3339(day * 86_400).get(..10).map(str::to_string).unwrap_or_default()
}

fn read_text(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Io { path: path.to_path_buf(), source: e })
}

async fn verify(cli: &Cli, args: &VerifyArgs) -> Result<(), CliError> {
    let trusted = args.since_checkpoint.as_deref().map(read_text).transpose()?;
    let key = args.key.as_deref().map(VerifierKey::parse).transpose().map_err(custos_ca::CaError::from)?;
    let (entries, root, checkpoints, key_text) = match &args.url {
        Some(url) => {
            let key = key.ok_or_else(|| CliError::Usage("--url needs --key: the verifier key you trust".into()))?;
            let (size, root) = verify_remote(url, &key, trusted.as_deref()).await?;
            (size, root, 1 + usize::from(trusted.is_some()), key.to_string())
        }
        None => {
            let s = open(cli).await?;
            // Without a checkpoint saved by hand, the newest one custos kept
            // outside the database must be extended by the log.
            let recorded = match &trusted {
                Some(_) => None,
                None => custos_node::newest_recorded_checkpoint(&s.config)?,
            };
            let trusted = trusted.or_else(|| recorded.as_ref().map(|(_, _, note)| note.clone()));
            if args.state {
                let started = std::time::Instant::now();
                let (log, state) = s.ca.verify_log_and_state(&s.me, key.as_ref(), trusted.as_deref()).await?;
                return report_state(cli, &log, &state, recorded.as_ref(), started.elapsed().as_secs_f64());
            }
            let report = s.ca.verify_log(&s.me, key.as_ref(), trusted.as_deref()).await?;
            if let Some((path, size, _)) = &recorded
                && !cli.json
            {
                println!(
                    "extends the newest checkpoint kept outside the database ({}, {size} entries)",
                    path.display()
                );
            }
            if !args.witnesses.is_empty() {
                witnessed(cli, &s, &args.witnesses, report.entries).await?;
            }
            (report.entries, report.root, report.checkpoints, report.key)
        }
    };
    if cli.json {
        return json(
            &json!({"verified": true, "entries": entries, "root": root, "checkpoints": checkpoints, "key": key_text}),
        );
    }
    println!(
        "audit log verified: {entries} entries, root {root}, {checkpoints} checkpoint signatures and roots matched"
    );
    println!("key {key_text}");
    Ok(())
}

/// `audit verify --state`: the log verified and replayed against the database.
fn report_state(
    cli: &Cli,
    log: &custos_ca::audit::LogReport,
    report: &custos_ca::StateReport,
    recorded: Option<&(std::path::PathBuf, u64, String)>,
    secs: f64,
) -> Result<(), CliError> {
    if cli.json {
        json(&json!({"verified": report.differences.is_empty(), "entries": log.entries, "root": log.root,
                     "checkpoints": log.checkpoints, "objects": report.objects, "differences": report.differences,
                     "seconds": secs}))?;
    } else {
        println!(
            "audit log verified: {} entries, root {}, {} checkpoint signatures and roots matched",
            log.entries, log.root, log.checkpoints
        );
        if let Some((path, size, _)) = recorded {
            println!("extends the newest checkpoint kept outside the database ({}, {size} entries)", path.display());
        }
        for d in &report.differences {
            let at = d.index.map_or("no entry".to_string(), |i| format!("entry {i}"));
            println!("DIFFERENCE {}: {} ({at})", d.object, d.problem);
        }
        println!(
            "state: {} objects compared with what {} entries imply in {secs:.2}s: {}",
            report.objects,
            report.entries,
            match report.differences.len() {
                0 => "the database says what the log says".to_string(),
                n => format!("{n} differences"),
            }
        );
    }
    if report.differences.is_empty() {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "the database disagrees with its audit log in {} places (above): it was changed around custos",
        report.differences.len()
    )))
}

/// Verifies a remote log from its checkpoint and entry bundles only.
async fn verify_remote(url: &str, key: &VerifierKey, trusted: Option<&str>) -> Result<(u64, String), CliError> {
    let mut remote = crate::fetch::Remote::connect(url).await?;
    let note = String::from_utf8(remote.get("/audit/checkpoint").await?)
        .map_err(|_| CliError::Remote("the checkpoint is not UTF-8".into()))?;
    let latest = Checkpoint::open(&note, key).map_err(custos_ca::CaError::from)?;
    let mut expected =
        vec![(latest.size, Expected { root: latest.root, source: format!("checkpoint {}", latest.size) })];
    if let Some(t) = trusted {
        expected.push(Expected::saved(t, key)?);
    }
    let mut verifier = Verifier::new(expected);
    for tile in tiles_for(latest.size, None) {
        let bundle = remote.get(&format!("/audit/{}", tile.path())).await?;
        // The level-0 tile holds the leaf hashes the server's tree is built
        // on: comparing each entry with its own leaf pins a changed entry
        // exactly, where the checkpoint root alone bounds it to a range.
        let hash_tile = TileRef { level: Some(0), ..tile };
        let leaves = remote.get(&format!("/audit/{}", hash_tile.path())).await?;
        if leaves.len() as u64 != 32 * tile.width {
            return Err(CliError::Remote(format!("tile {} is not {} hashes", hash_tile.path(), tile.width)));
        }
        let entries = custos_audit::entry::split_bundle(&bundle).map_err(custos_ca::CaError::from)?;
        if entries.len() as u64 != tile.width {
            return Err(custos_audit::VerifyError {
                index: tile.start() + (entries.len() as u64).min(tile.width),
                reason: format!("entry bundle {} holds {} entries, not {}", tile.path(), entries.len(), tile.width),
            }
            .into());
        }
        for (i, bytes) in entries.iter().enumerate() {
            verifier.push(tile.start() + i as u64, bytes, Some(&leaves[32 * i..32 * (i + 1)]))?;
        }
    }
    let done = verifier.finish()?;
    Ok((done.size, hex::encode(done.root)))
}

/// `custos audit match`: reads the export, matches it, prints the report.
async fn match_signins(cli: &Cli, path: &Path, proofs: bool, witnesses: &[String]) -> Result<(), CliError> {
    let bytes = std::fs::read(path).map_err(|source| CliError::Io { path: path.to_path_buf(), source })?;
    let records =
        custos_ca::signins::parse_signins(&bytes).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let s = open(cli).await?;
    if !witnesses.is_empty() {
        // Before matching: a log the witnesses did not cosign (forked, rolled
        // back) would make "custos did not sign this" worthless.
        let size = s.ca.latest_checkpoint().await?.map(|c| c.size).unwrap_or(0);
        witnessed(cli, &s, witnesses, size).await?;
    }
    let total = records.len();
    let report = s.ca.match_signins(&s.me, records, proofs).await?;
    if cli.json {
        json(&report)?;
    } else {
        println!("{total} sign-ins: {} signed by custos, {} not", report.matched.len(), report.unmatched.len());
        if !report.unmatched.is_empty() {
            let rows: Vec<Vec<String>> = report
                .unmatched
                .iter()
                .map(|u| {
                    let field = |name: &str| u.record.get(name).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    vec![
                        u.line.to_string(),
                        u.tenant.clone().unwrap_or_else(|| "(unknown)".into()),
                        field("time"),
                        field("client_ip"),
                        u.reason.clone(),
                    ]
                })
                .collect();
            print!("{}", table(&["LINE", "TENANT", "TIME", "CLIENT IP", "WHY"], &rows));
        }
    }
    if report.unmatched.is_empty() {
        return Ok(());
    }
    Err(CliError::Unmatched(format!(
        "{} sign-ins were not signed by custos; targeted tenants: {}",
        report.unmatched.len(),
        report.targeted_tenants.join(", ")
    )))
}

/// `audit verify --witness`: a checkpoint the verified log extends must carry
/// a valid cosignature by every witness named.
async fn witnessed(cli: &Cli, s: &crate::session::Session, keys: &[String], entries: u64) -> Result<(), CliError> {
    let mut witnesses = Vec::new();
    for k in keys {
        let key = VerifierKey::parse(k).map_err(|e| CliError::Usage(format!("--witness {k:?}: {e}")))?;
        if key.kind != 0x04 {
            return Err(CliError::Usage(format!(
                "--witness {}: that is a log's key, not a witness's (type 0x04)",
                key.name
            )));
        }
        witnesses.push(key);
    }
    let names: Vec<&str> = witnesses.iter().map(|w| w.name.as_str()).collect();
    let Some((cp, times)) = s.ca.witnessed_checkpoint(&s.me, &witnesses).await? else {
        return Err(CliError::Unwitnessed(format!(
            "no checkpoint of this log carries a valid cosignature by every one of {}",
            names.join(", ")
        )));
    };
    // The newest checkpoint is what a reader of this log is shown: a fork or a
    // rollback the witnesses refused shows up as a newest checkpoint without them.
    let newest = s.ca.latest_checkpoint().await?.map(|c| c.size).unwrap_or(0);
    if newest != cp.size {
        return Err(CliError::Unwitnessed(format!(
            "the newest checkpoint ({newest} entries) is not cosigned by every one of {}; the newest that is has {} \
             entries (a witness refuses a log that forked or was rolled back; see serve's log)",
            names.join(", "),
            cp.size
        )));
    }
    if !cli.json {
        for (name, time) in &times {
            println!(
                "witnessed: checkpoint of {} entries cosigned by {name} at {}",
                cp.size,
                custos_ca::rfc3339(*time as i64)
            );
        }
        if entries > cp.size {
            println!(
                "note: the {} newest entries are in no checkpoint yet (serve signs and submits one every second)",
                entries - cp.size
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use custos_audit::Checkpoint;
    use custos_audit::merkle::{Frontier, leaf_hash, verify_inclusion};
    use serde_json::json;

    use super::RemoteProof;

    /// A proof document as `GET /api/v1/audit/entries/0` shapes it, for a tree of three leaves.
    fn document(checkpoint_size: u64, checkpoint_root: Option<[u8; 32]>) -> (serde_json::Value, [u8; 32]) {
        let leaves: Vec<[u8; 32]> = (0..3u8).map(|i| leaf_hash(&[i])).collect();
        let mut tree = Frontier::default();
        for l in &leaves {
            tree.push(*l);
        }
        let root = tree.root();
        let path = [leaves[1], leaves[2]];
        verify_inclusion(&leaves[0], 0, 3, &path, &root).expect("the fixture is a proof");
        let note =
            Checkpoint { origin: "test/log".into(), size: checkpoint_size, root: checkpoint_root.unwrap_or(root) }
                .body()
                + "\n— test/log AAAA\n";
        let doc = json!({"index": 0, "size": 3, "leaf_hash": hex::encode(leaves[0]), "root": hex::encode(root),
                         "path": path.iter().map(hex::encode).collect::<Vec<_>>(), "checkpoint": note});
        (doc, root)
    }

    #[test]
    fn a_remote_proof_is_checked_before_it_is_shown() {
        let (good, root) = document(3, None);
        let proof = RemoteProof::check(&good).expect("a proof that holds");
        assert_eq!((proof.size, proof.root), (3, hex::encode(root)));
        let mut bent = good.clone();
        bent["path"][0] = json!(hex::encode([7u8; 32]));
        assert!(RemoteProof::check(&bent).is_err(), "a path that leads elsewhere");
        assert!(RemoteProof::check(&document(4, None).0).is_err(), "a checkpoint of another size");
        assert!(RemoteProof::check(&document(3, Some([9; 32])).0).is_err(), "a checkpoint of another root");
        let mut unsigned = good;
        unsigned["checkpoint"] = json!("not a checkpoint");
        assert!(RemoteProof::check(&unsigned).is_err(), "no checkpoint at all");
    }
}
