//! The README, run as written, so it cannot drift: its first code block
//! (`cargo run --release -- serve --dev`, with this build's binary in place
//! of `cargo run --release --`) in an empty directory until /healthz answers,
//! then every line of the walkthrough block in a shell with `custos` on the
//! PATH, and openssl saying `good` before the revocation and `revoked` after.
//!
//! Two substitutions, both stated here: the server listens on a free loopback
//! port (CUSTOS_LISTEN=127.0.0.1:0, an environment override the README
//! documents) instead of 8080, so the walkthrough's `127.0.0.1:8080` is
//! replaced by that address; and `cargo install` is skipped, the binary under
//! test being on the PATH already.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{Server, http, tools_required};

/// The lines of the fenced block that follows `after` (the first block when `after` is empty).
fn block(readme: &str, after: &str) -> Vec<String> {
    let start = readme.find(after).unwrap_or_else(|| panic!("README has no {after:?}"));
    let rest = &readme[start..];
    let open = rest.find("```").expect("a code block");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let end = body.find("```").expect("closing fence");
    body[..end].lines().map(str::to_string).collect()
}

/// A command line without its trailing `# comment` (two spaces or more before the `#`).
fn command(line: &str) -> Option<String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let code = match trimmed.find("  #") {
        Some(i) => &trimmed[..i],
        None => trimmed,
    };
    Some(code.trim().to_string())
}

/// A `custos` started from the README's first line, in `dir`; killed on drop.
fn serve_dev(dir: &Path, first: &str) -> Server {
    let args = first.strip_prefix("cargo run --release -- ").expect("the README starts with cargo run --release --");
    let mut child = Command::new(env!("CARGO_BIN_EXE_custos"))
        .args(args.split_whitespace())
        .current_dir(dir)
        .env("CUSTOS_LISTEN", "127.0.0.1:0")
        .env("CUSTOS_LOG", "warn")
        .env_remove("CUSTOS_PASSPHRASE")
        .env_remove("CUSTOS_DATA")
        .env_remove("CUSTOS_DATABASE")
        .env_remove("CUSTOS_KEY_STORE")
        .env_remove("CUSTOS_CONFIG")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn serve --dev");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    let addr = line
        .trim()
        .strip_prefix("custos listening on http://")
        .unwrap_or_else(|| panic!("serve --dev printed {line:?}"))
        .to_string();
    Server { child, addr }
}

#[test]
fn the_readme_runs_as_written() {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(!tools_required(), "openssl is required");
        return;
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).expect("README.md");
    let first: Vec<String> = block(&readme, "# custos").iter().filter_map(|l| command(l)).collect();
    assert_eq!(first.len(), 2, "the first block is two commands: {first:?}");
    assert_eq!(first[0], "cargo run --release -- serve --dev");
    assert_eq!(first[1], "scripts/test");

    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve_dev(dir.path(), &first[0]);
    let (status, _, body) = http(&server.addr, "GET", "/healthz", None, b"");
    assert_eq!(status, 200, "healthz: {}", String::from_utf8_lossy(&body));
    assert!(dir.path().join("custos-data/dev-passphrase").exists(), "serve --dev keeps its passphrase");

    let bin = Path::new(env!("CARGO_BIN_EXE_custos")).parent().expect("bin dir").to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let walkthrough: Vec<String> = block(&readme, "<!-- walkthrough -->").iter().filter_map(|l| command(l)).collect();
    assert!(walkthrough.len() >= 8, "{walkthrough:?}");
    let mut ocsp_answers = Vec::new();
    for line in &walkthrough {
        if line.starts_with("cargo install ") {
            continue;
        }
        let line = line.replace("127.0.0.1:8080", &server.addr);
        let out = Command::new("sh")
            .args(["-c", &line])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("CUSTOS_LOG", "warn")
            .env_remove("CUSTOS_PASSPHRASE")
            .env_remove("CUSTOS_DATA")
            .env_remove("CUSTOS_DATABASE")
            .env_remove("CUSTOS_KEY_STORE")
            .env_remove("CUSTOS_CONFIG")
            .output()
            .expect("sh");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "README line `{line}` failed:\n{text}");
        if line.starts_with("openssl ocsp") {
            ocsp_answers.push(text);
        }
    }
    assert_eq!(ocsp_answers.len(), 2, "the walkthrough asks OCSP before and after revoking");
    assert!(ocsp_answers[0].contains("mail-sync/cert.pem: good"), "{}", ocsp_answers[0]);
    assert!(ocsp_answers[0].contains("Response verify OK"), "{}", ocsp_answers[0]);
    assert!(ocsp_answers[1].contains("mail-sync/cert.pem: revoked"), "{}", ocsp_answers[1]);
    assert!(ocsp_answers[1].contains("Reason: keyCompromise"), "{}", ocsp_answers[1]);
}
