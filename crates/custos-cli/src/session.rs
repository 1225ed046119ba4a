//! How a CLI command reaches custos: the one place that reads the
//! configuration (file, environment, flags), opens the store through
//! custos-node, unseals the key store, and names the caller.
//!
//! The caller of every command is the local administrator, identified by the
//! OS (real uid), never by `$USER`.

use custos_ca::{Ca, Principal};
use custos_node::{Loaded, Origin, Override};

use crate::{Cli, CliError, Command, passphrase};

/// An opened custos and who is acting on it.
pub struct Session {
    /// The opened custos.
    pub ca: Ca,
    /// The caller: the local administrator.
    pub me: Principal,
    /// The effective configuration.
    pub config: custos_node::Config,
}

/// The effective configuration of this invocation: file, then environment, then flags.
pub fn config(cli: &Cli) -> Result<Loaded, CliError> {
    let mut overrides = custos_node::config::environment();
    let mut flag = |key: &'static str, name: &'static str, value: Option<String>| {
        if let Some(value) = value {
            overrides.push(Override { key, value, origin: Origin::Flag(name) });
        }
    };
    flag("data_dir", "--data-dir", cli.data_dir.as_ref().map(|p| p.display().to_string()));
    flag("database", "--database", cli.database.clone());
    flag("webhooks.danger_allow_http", "--danger-allow-http", cli.danger_allow_http.then(|| "true".into()));
    flag("log.format", "--log-format", cli.log_format.clone());
    match &cli.command {
        Command::Init(a) => {
            flag("base_url", "--base-url", a.base_url.clone());
            flag("init.organization", "--organization", a.organization.clone());
            flag("init.ca_algorithm", "--ca-algorithm", a.ca_algorithm.clone());
            flag("init.crl_partition_size", "--crl-partition-size", a.crl_partition_size.map(|n| n.to_string()));
            flag("key_store", "--key-store", a.key_store.clone());
            flag(
                "init.danger_weak_passphrase",
                "--danger-weak-passphrase",
                a.danger_weak_passphrase.then(|| "true".into()),
            );
        }
        Command::Serve(a) => {
            flag("serve.listen", "--listen", a.listen.clone());
            flag("serve.tls_listen", "--tls-listen", a.tls_listen.clone());
            flag("serve.tls_cert", "--tls-cert", a.tls_cert.as_ref().map(|p| p.display().to_string()));
            flag("serve.tls_key", "--tls-key", a.tls_key.as_ref().map(|p| p.display().to_string()));
        }
        _ => {}
    }
    Ok(custos_node::config::load(cli.config.as_deref(), &overrides)?)
}

/// Opens the custos the configuration names, keys sealed.
pub async fn open(cli: &Cli) -> Result<Session, CliError> {
    let config = config(cli)?.config;
    let ca = custos_node::open(&config).await?;
    Ok(Session { ca, me: Principal::local(), config })
}

/// Opens the custos and unseals its key store.
pub async fn open_unsealed(cli: &Cli) -> Result<Session, CliError> {
    let mut s = open(cli).await?;
    unseal(cli, &mut s).await?;
    Ok(s)
}

/// Opens the key store: the soft store with the passphrase, a token with its own PIN source.
pub async fn unseal(cli: &Cli, s: &mut Session) -> Result<(), CliError> {
    if custos_node::needs_passphrase(&s.ca).await? {
        let (pw, source) = passphrase::resolve(cli.passphrase_file.as_deref(), &s.config.data_dir, false)?;
        custos_node::unseal(&s.config, &mut s.ca, &pw).await.map_err(|e| passphrase::explain(e, &source))?;
    } else {
        custos_node::unseal(&s.config, &mut s.ca, b"").await?;
    }
    Ok(())
}

/// Covers what this command logged with a signed checkpoint: signed here
/// (and appended to the checkpoint file) when the key store is open; else
/// a running `serve` on the configured address signs one within its
/// checkpoint interval; else the command says plainly that its entries are
/// not covered yet. The command itself already succeeded and its entries are
/// durable either way.
pub async fn checkpoint(s: &Session) {
    match custos_node::sign_checkpoint(&s.config, &s.ca, &s.me).await {
        Ok(_) => return,
        Err(custos_node::NodeError::Ca(custos_ca::CaError::KeyStoreSealed)) => {}
        Err(e) => {
            eprintln!("warning: signing an audit checkpoint failed ({e}); the next one will cover these entries");
            return;
        }
    }
    let listen = &s.config.serve.listen;
    let reachable = match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) => std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200)).is_ok(),
        Err(_) => false,
    };
    if reachable {
        tracing::info!(%listen, "a running custos serve covers these entries with its next checkpoint");
    } else {
        eprintln!(
            "note: these audit entries are not covered by a signed checkpoint yet (the key store is sealed and no \
             custos serve answers on {listen}): run `custos audit checkpoint --sign`"
        );
    }
}
