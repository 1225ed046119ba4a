//! `custos incident ...`: declare, execute (with a progress bar), status, ack, close, report, notify.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use custos_ca::incident::{Declaration, IncidentReport, IncidentStatus, IncidentView, Progress};
use serde_json::json;

use crate::output::{json, table};
use crate::session::{Session, checkpoint, open, open_unsealed};
use crate::{Cli, CliError, DeclareArgs, IncidentCommand};

/// How long `execute` and `notify` keep delivering notifications before leaving the rest to `serve`.
const DELIVERY_BUDGET: Duration = Duration::from_secs(15);

/// Runs one `incident` subcommand.
pub async fn run(cli: &Cli, command: &IncidentCommand) -> Result<(), CliError> {
    if let Some(api) = crate::remote::Api::from_cli(cli).await? {
        return remote(cli, api, command).await;
    }
    match command {
        IncidentCommand::Declare(args) => declare(cli, args).await,
        IncidentCommand::Execute { id, yes, keys_out } => execute(cli, id, *yes, keys_out.clone()).await,
        IncidentCommand::Status { id } => {
            let s = open(cli).await?;
            let status = s.ca.incident_status(&s.me, id).await?;
            if cli.json {
                return json(&status);
            }
            print_status(&status);
            Ok(())
        }
        IncidentCommand::Ack { id, connection } => {
            let (tenant, name) = connection
                .split_once('/')
                .ok_or_else(|| CliError::Usage(format!("--connection {connection:?}: expected TENANT/CONNECTION")))?;
            let s = open(cli).await?;
            let c = s.ca.ack_incident(&s.me, id, tenant, name).await?;
            if cli.json {
                return json(&c);
            }
            println!("{tenant}/{name}: {}", c.state);
            Ok(())
        }
        IncidentCommand::Close { id } => {
            let s = open(cli).await?;
            let r = s.ca.close_incident(&s.me, id).await?;
            if cli.json {
                return json(&r);
            }
            println!("closed {id}");
            Ok(())
        }
        IncidentCommand::Report { id, markdown } => {
            let s = open(cli).await?;
            let report = s.ca.incident_report(&s.me, id).await?;
            if cli.json {
                return json(&report);
            }
            print!("{}", render_report(&report, *markdown));
            Ok(())
        }
        IncidentCommand::Notify { id } => {
            // Webhook secrets are derived in the key store.
            let s = open_unsealed(cli).await?;
            s.ca.incident(&s.me, id).await?;
            let delivered = deliver(&s).await?;
            let status = s.ca.incident_status(&s.me, id).await?;
            if cli.json {
                return json(&json!({"delivered_now": delivered, "delivered": status.notifications.delivered,
                                    "pending": status.notifications.pending}));
            }
            println!(
                "delivered {delivered} now; {} delivered in all, {} pending",
                status.notifications.delivered, status.notifications.pending
            );
            Ok(())
        }
        IncidentCommand::List => {
            let s = open(cli).await?;
            let list = s.ca.incidents(&s.me).await?;
            if cli.json {
                return json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|i| {
                    vec![
                        i.id.clone(),
                        i.state.to_string(),
                        format!("{}:{}", i.scope_kind, i.scope_value),
                        i.reason.to_string(),
                        custos_ca::rfc3339(i.declared_at),
                    ]
                })
                .collect();
            print!("{}", table(&["INCIDENT", "STATE", "COMPROMISED", "REASON", "DECLARED"], &rows));
            Ok(())
        }
    }
}

/// One `incident` subcommand through the API: the same text as the local
/// command where the API holds the same facts; `--json` prints its documents.
async fn remote(cli: &Cli, mut api: crate::remote::Api, command: &IncidentCommand) -> Result<(), CliError> {
    use crate::remote::{encode, text};
    use serde_json::Value;
    let path = |id: &str, rest: &str| format!("/api/v1/incidents/{}{rest}", encode(id));
    match command {
        IncidentCommand::Declare(args) => {
            let body = json!({"compromised": args.compromised, "reason": args.reason, "note": args.note,
                              "since": args.since});
            let status = api.post("/api/v1/incidents", Some(body)).await?;
            if cli.json {
                return json(&status);
            }
            let i = &status["incident"];
            println!("incident {}: {} compromised ({})", text(i, "id"), text(i, "compromised"), text(i, "reason"));
            if !text(i, "note").is_empty() {
                println!("note: {}", text(i, "note"));
            }
            let mut tenants: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for c in status["connections"].as_array().into_iter().flatten() {
                tenants.entry(text(c, "tenant")).or_default().push(text(c, "connection"));
            }
            let connections: usize = tenants.values().map(Vec::len).sum();
            println!("blast radius: {connections} connections of {} tenants", tenants.len());
            let rows: Vec<Vec<String>> =
                tenants.iter().map(|(t, names)| vec![t.clone(), names.len().to_string(), names.join(", ")]).collect();
            print!("{}", table(&["TENANT", "CONNECTIONS", "NAMES"], &rows));
            println!("\nnothing has changed yet: run `custos incident execute {}` to carry it out", text(i, "id"));
            Ok(())
        }
        IncidentCommand::Execute { id, yes, keys_out } => {
            if keys_out.is_some() {
                return Err(CliError::Usage(
                    "--keys-out is local: over the API the server writes replacement keys into its own data directory"
                        .into(),
                ));
            }
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(CliError::Usage(format!(
                        "execute {id} revokes and replaces certificates on the server: pass --yes"
                    )));
                }
                let status = api.get(&path(id, "")).await?;
                let affected = status["connections"].as_array().map_or(0, Vec::len);
                eprint!(
                    "execute {id} on the server: revoke and replace certificates on {affected} connections? [y/N] "
                );
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer).map_err(|e| CliError::Output(e.to_string()))?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Err(CliError::Usage("not executed".into()));
                }
            }
            let done = api.post(&path(id, "/execute"), None).await?;
            if cli.json {
                return json(&done);
            }
            let issuers: Vec<&str> =
                done["new_issuers"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if !issuers.is_empty() {
                println!("new CAs: {}", issuers.join(", "));
            }
            println!(
                "revoked {} certificates in {:.2}s, issued {} replacements in {:.2}s",
                done["revoked"],
                done["seconds_to_revoked"].as_f64().unwrap_or_default(),
                done["replaced"],
                done["seconds_to_replaced"].as_f64().unwrap_or_default()
            );
            if let Some(f) = done["keys_file"].as_str() {
                println!(
                    "replacement certificates and private keys appended to {f} on the server (0600): hand them over, then delete"
                );
            }
            Ok(())
        }
        IncidentCommand::Status { id } => {
            let status = api.get(&path(id, "")).await?;
            if cli.json {
                return json(&status);
            }
            let i = &status["incident"];
            println!(
                "incident {} ({}): {} compromised, {}",
                text(i, "id"),
                text(i, "state"),
                text(i, "compromised"),
                text(i, "reason")
            );
            // Per state: how many, and how long the longest-waiting one has waited.
            let now = time::OffsetDateTime::now_utc();
            let mut states: Vec<(String, usize, i64)> = Vec::new();
            for c in status["connections"].as_array().into_iter().flatten() {
                let waited =
                    time::OffsetDateTime::parse(&text(c, "updated"), &time::format_description::well_known::Rfc3339)
                        .map_or(0, |t| (now - t).whole_seconds().max(0));
                match states.iter_mut().find(|(s, _, _)| *s == text(c, "state")) {
                    Some((_, n, oldest)) => {
                        *n += 1;
                        *oldest = (*oldest).max(waited);
                    }
                    None => states.push((text(c, "state"), 1, waited)),
                }
            }
            let rows: Vec<Vec<String>> =
                states.iter().map(|(s, n, oldest)| vec![s.clone(), n.to_string(), format!("{oldest}s")]).collect();
            print!("{}", table(&["STATE", "CONNECTIONS", "LONGEST WAIT"], &rows));
            Ok(())
        }
        IncidentCommand::Ack { id, connection } => {
            let (tenant, name) = connection
                .split_once('/')
                .ok_or_else(|| CliError::Usage(format!("--connection {connection:?}: expected TENANT/CONNECTION")))?;
            let c = api.post(&path(id, "/ack"), Some(json!({"tenant": tenant, "connection": name}))).await?;
            if cli.json {
                return json(&c);
            }
            println!("{tenant}/{name}: {}", text(&c, "state"));
            Ok(())
        }
        IncidentCommand::Close { id } => {
            let r = api.post(&path(id, "/close"), None).await?;
            if cli.json {
                return json(&r);
            }
            println!("closed {id}");
            Ok(())
        }
        IncidentCommand::Report { id, markdown } => {
            let r = api.get(&path(id, "/report")).await?;
            if cli.json {
                return json(&r);
            }
            print!("{}", render_remote_report(&r, *markdown));
            Ok(())
        }
        IncidentCommand::Notify { .. } => {
            Err(CliError::Usage("notify is local: a running `custos serve` delivers notifications every second".into()))
        }
        IncidentCommand::List => {
            let list = api.get("/api/v1/incidents").await?;
            if cli.json {
                return json(&list);
            }
            let rows: Vec<Vec<String>> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| ["id", "state", "compromised", "reason", "declared"].iter().map(|k| text(i, k)).collect())
                .collect();
            print!("{}", table(&["INCIDENT", "STATE", "COMPROMISED", "REASON", "DECLARED"], &rows));
            Ok(())
        }
    }
}

/// The API's report as `incident report` prints a local one (the API leaves
/// out the notifications' delivery, which stays on the server).
fn render_remote_report(r: &serde_json::Value, markdown: bool) -> String {
    use crate::remote::text;
    let i = &r["incident"];
    let mut out = String::new();
    let h = |level: usize, text: &str| {
        if markdown { format!("{} {text}\n\n", "#".repeat(level)) } else { format!("{text}\n") }
    };
    let item = if markdown { "- " } else { "" };
    out += &h(1, &format!("Incident {}: {} compromised", text(i, "id"), text(i, "compromised")));
    out += &format!(
        "{item}state: {}, reason: {}, declared by {}\n",
        text(i, "state"),
        text(i, "reason"),
        text(i, "declared_by")
    );
    if !text(i, "note").is_empty() {
        out += &format!("{item}note: {}\n", text(i, "note"));
    }
    out += "\n";
    let warnings = r["warnings"].as_array().cloned().unwrap_or_default();
    if !warnings.is_empty() {
        out += &h(2, "Warnings");
        for w in &warnings {
            out += &format!("- {}\n", w.as_str().unwrap_or_default());
        }
        out += "\n";
    }
    out += &h(2, "Timeline");
    for e in r["timeline"].as_array().into_iter().flatten() {
        out += &format!("- {}  {}\n", text(e, "time"), text(e, "event"));
    }
    for (title, key) in [("Counts", "counts"), ("Durations (seconds)", "durations")] {
        out += "\n";
        out += &h(2, title);
        for (k, v) in r[key].as_object().into_iter().flatten() {
            out += &format!("- {k}: {v}\n");
        }
    }
    out
}

async fn declare(cli: &Cli, args: &DeclareArgs) -> Result<(), CliError> {
    let since = args
        .since
        .as_deref()
        .map(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| CliError::Usage(format!("--since {t:?} is not RFC 3339 ({e})")))
        })
        .transpose()?;
    let declaration = Declaration {
        scope: args.compromised.parse()?,
        reason: custos_ca::Reason::parse_loose(&args.reason).map_err(custos_ca::CaError::from)?,
        since,
        note: args.note.clone(),
    };
    let s = open(cli).await?;
    let view = s.ca.declare_incident(&s.me, &declaration).await?;
    if cli.json {
        return json(&view);
    }
    print_view(&view);
    println!("\nnothing has changed yet: run `custos incident execute {}` to carry it out", view.id);
    Ok(())
}

fn print_view(v: &IncidentView) {
    println!("incident {}: {} compromised ({})", v.id, v.compromised, v.reason);
    if !v.note.is_empty() {
        println!("note: {}", v.note);
    }
    println!(
        "blast radius: {} certificates on {} connections of {} tenants",
        v.affected_certificates, v.affected_connections, v.affected_tenants
    );
    if !v.compromised_issuers.is_empty() {
        println!("CAs to replace: {}", v.compromised_issuers.join(", "));
    }
    if v.root_compromised {
        println!("A ROOT CA IS COMPROMISED: every relying party will have to trust a new root.");
    }
    const SHOWN: usize = 50;
    let rows: Vec<Vec<String>> = v
        .tenants
        .iter()
        .take(SHOWN)
        .map(|t| {
            let names: Vec<&str> = t.connections.iter().map(|c| c.connection.as_str()).collect();
            vec![t.tenant.clone(), t.connections.len().to_string(), t.certificates.to_string(), names.join(", ")]
        })
        .collect();
    print!("{}", table(&["TENANT", "CONNECTIONS", "CERTIFICATES", "NAMES"], &rows));
    if v.tenants.len() > SHOWN {
        println!("... and {} more tenants (--json lists them all)", v.tenants.len() - SHOWN);
    }
}

async fn execute(cli: &Cli, id: &str, yes: bool, keys_out: Option<PathBuf>) -> Result<(), CliError> {
    let s = open_unsealed(cli).await?;
    let view = s.ca.incident_view(&s.me, id).await?;
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(format!(
                "execute {id} changes {} certificates: pass --yes",
                view.affected_certificates
            )));
        }
        eprint!(
            "execute {id}: revoke and replace {} certificates on {} connections{}? [y/N] ",
            view.affected_certificates,
            view.affected_connections,
            if view.compromised_issuers.is_empty() {
                String::new()
            } else {
                format!(", replace CAs {}", view.compromised_issuers.join(", "))
            }
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).map_err(|e| CliError::Output(e.to_string()))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CliError::Usage("not executed".into()));
        }
    }
    // By default beside the database, in the owner-only data directory, not
    // in whatever directory the operator happens to stand in.
    let keys_file = keys_out.unwrap_or_else(|| s.config.data_dir.join(format!("{id}-replacements.jsonl")));
    let bar = if cli.json || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress = |p: Progress| {
        let (msg, done, total) = match p {
            Progress::Revoked(d, t) => ("revoked", d, t),
            Progress::Replaced(d, t) => ("replaced", d, t),
        };
        bar.set_message(msg);
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let summary = s.ca.execute_incident(&s.me, id, &keys_file, &progress).await?;
    bar.finish_and_clear();
    checkpoint(&s).await;
    let delivered = deliver(&s).await?;
    let status = s.ca.incident_status(&s.me, id).await?;
    if cli.json {
        return json(&json!({"summary": summary, "notifications_delivered_now": delivered, "status": status.states}));
    }
    if !summary.new_issuers.is_empty() {
        println!("new CAs: {}", summary.new_issuers.join(", "));
    }
    println!(
        "revoked {} certificates in {:.2}s, issued {} replacements in {:.2}s",
        summary.revoked, summary.seconds_to_revoked, summary.replaced, summary.seconds_to_replaced
    );
    if let Some(f) = &summary.keys_file {
        println!(
            "replacement certificates and private keys appended to {} (0600): hand them over, then delete",
            f.display()
        );
    }
    let waiting = status.connections.iter().filter(|c| c.state == custos_ca::ConnectionState::Pending).count();
    if waiting > 0 {
        println!(
            "{waiting} connections wait for their ACME clients: ARI tells them to renew now, and each new certificate re-establishes its connection"
        );
    }
    println!(
        "notifications: {} delivered, {} pending (custos serve keeps retrying), {} tenants without a webhook",
        status.notifications.delivered,
        status.notifications.pending,
        status.notifications.tenants_without_webhook.len()
    );
    Ok(())
}

/// Delivers due notifications until none is due or the budget is spent.
async fn deliver(s: &Session) -> Result<usize, CliError> {
    let started = Instant::now();
    let mut total = 0;
    let transport = custos_node::WebhookTransport::new(&s.config.webhooks)?;
    while started.elapsed() < DELIVERY_BUDGET {
        let give_up = i64::try_from(s.config.webhooks.give_up_after_s).unwrap_or(i64::MAX);
        let n = s.ca.deliver_due(&s.me, &transport, give_up).await?;
        total += n;
        if !s.ca.notifications_due().await? {
            break;
        }
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(total)
}

fn print_status(s: &IncidentStatus) {
    let i = &s.incident;
    println!("incident {} ({}): {}:{} compromised, {}", i.id, i.state, i.scope_kind, i.scope_value, i.reason);
    let rows: Vec<Vec<String>> = s
        .states
        .iter()
        .map(|c| vec![c.state.to_string(), c.connections.to_string(), format!("{}s", c.oldest_seconds)])
        .collect();
    print!("{}", table(&["STATE", "CONNECTIONS", "LONGEST WAIT"], &rows));
    let n = &s.notifications;
    println!(
        "notifications: {} delivered, {} pending, {} tenants without a webhook",
        n.delivered,
        n.pending,
        n.tenants_without_webhook.len()
    );
    for m in n.messages.iter().filter(|m| m.state == custos_ca::DeliveryState::Pending).take(10) {
        println!(
            "  pending to {} ({}): {} attempts, last error: {}",
            m.tenant,
            m.url,
            m.attempts,
            m.last_error.as_deref().unwrap_or("-")
        );
    }
}

/// The report as text, or as Markdown.
fn render_report(r: &IncidentReport, markdown: bool) -> String {
    let i = &r.incident;
    let mut out = String::new();
    let h = |level: usize, text: &str| {
        if markdown { format!("{} {text}\n\n", "#".repeat(level)) } else { format!("{text}\n") }
    };
    out += &h(1, &format!("Incident {}: {}:{} compromised", i.id, i.scope_kind, i.scope_value));
    out += &format!(
        "{}state: {}, reason: {}, declared by {}\n",
        if markdown { "- " } else { "" },
        i.state,
        i.reason,
        i.declared_by
    );
    if !i.note.is_empty() {
        out += &format!("{}note: {}\n", if markdown { "- " } else { "" }, i.note);
    }
    out += "\n";
    if !r.warnings.is_empty() {
        out += &h(2, "Warnings");
        for w in &r.warnings {
            out += &format!("- {w}\n");
        }
        out += "\n";
    }
    out += &h(2, "Timeline");
    for e in &r.timeline {
        out += &format!("- {}  {}\n", e.time, e.event);
    }
    out += "\n";
    out += &h(2, "Counts");
    for (k, v) in &r.counts {
        out += &format!("- {k}: {v}\n");
    }
    out += "\n";
    out += &h(2, "Durations (seconds)");
    for (k, v) in &r.durations {
        out += &format!("- {k}: {v}\n");
    }
    out += "\n";
    out += &h(2, "Notifications");
    if r.notifications.is_empty() {
        out += "- none sent\n";
    }
    for m in &r.notifications {
        out += &format!(
            "- {} to {} ({} connections): {}, {} attempts{}\n",
            custos_ca::rfc3339(m.created_at),
            m.tenant,
            m.connections.len(),
            m.state,
            m.attempts,
            m.delivered_at.map(|t| format!(", delivered {}", custos_ca::rfc3339(t))).unwrap_or_default()
        );
    }
    out
}
