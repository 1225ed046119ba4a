//! Connection keys in custody, end to end: `connection add --custody` makes
//! the keys in the key store (the sealed soft store here; SoftHSM2 when
//! scripts/test runs this suite with CUSTOS_KEY_STORE), a service token signs
//! client assertions through `/api/v1` on a real TLS listener, and code
//! nobody here wrote checks them: PyJWT (with `cryptography`) verifies each
//! JWT against the certificate, openssl computes the thumbprints the header
//! carries and verifies raw digest signatures with `pkeyutl`. No private key
//! is written anywhere, and every signature is in the audit log.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::{Env, TlsServer};
use serde_json::{Value, json};

const AUD: &str = "https://login.microsoftonline.example/acme-corp/oauth2/v2.0/token";
const APP: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn token(env: &Env, args: &[&str]) -> String {
    env.json(&[&["token", "create"], args].concat())["token"].as_str().expect("token").to_string()
}

/// openssl's fingerprint of a certificate (`-sha256` or `-sha1`) as base64url, as `x5t#S256`/`x5t` carry it.
fn openssl_thumbprint(cert: &Path, digest: &str) -> String {
    let out = common::sh("openssl", &["x509", "-in", cert.to_str().expect("p"), "-noout", "-fingerprint", digest]);
    let hex: String = out.trim().rsplit_once('=').expect("fingerprint").1.replace(':', "");
    URL_SAFE_NO_PAD.encode(hex::decode(hex).expect("hex"))
}

/// PyJWT verifies `assertion` against the certificate's public key, requiring
/// every claim Entra ID checks; prints the header and claims as JSON. `Err`
/// with PyJWT's message when it refuses.
fn pyjwt(python: &Path, assertion: &str, cert: &Path, algorithm: &str) -> Result<Value, String> {
    let script = r#"
import json, sys, jwt
from cryptography import x509
token, cert, alg, aud, iss = sys.argv[1:6]
key = x509.load_pem_x509_certificate(open(cert, 'rb').read()).public_key()
claims = jwt.decode(token, key=key, algorithms=[alg], audience=aud, issuer=iss,
                    options={"require": ["aud", "iss", "sub", "jti", "nbf", "iat", "exp"]})
print(json.dumps({"header": jwt.get_unverified_header(token), "claims": claims}))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, assertion, cert.to_str().expect("p"), algorithm, AUD, APP])
        .output()
        .expect("run python");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("pyjwt output"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(files(&path)) } else { out.push(path) }
    }
    out
}

#[test]
fn custodied_keys_sign_assertions_that_pyjwt_and_openssl_verify() {
    let python = common::venv_tool("python").filter(|p| {
        std::process::Command::new(p).args(["-c", "import jwt, cryptography"]).status().is_ok_and(|s| s.success())
    });
    let Some(python) = python else {
        assert!(!common::tools_required(), "PyJWT is required but not installed (run scripts/test)");
        eprintln!("SKIPPED: PyJWT not installed (run scripts/test)");
        return;
    };
    let env = Env::initialized();
    env.ok(&["tenant", "add", "globex"]);
    let made = env.json(&["connection", "add", "acme-corp", "mail-sync", "--custody"]);
    let made = made.as_array().expect("keys");
    assert_eq!(made.len(), 2, "an active and a standby key: {made:?}");
    assert_eq!((made[0]["slot"].as_str(), made[1]["slot"].as_str()), (Some("active"), Some("standby")));
    env.ok(&["connection", "add", "acme-corp", "crm", "--custody", "--key-algorithm", "rsa2048", "--no-standby"]);
    let refused = env.fails(&["connection", "add", "acme-corp", "ed", "--custody", "--key-algorithm", "ed25519"]);
    assert!(refused.contains("p256, rsa2048 or rsa3072"), "{refused}");
    for c in ["mail-sync", "crm"] {
        env.ok(&["connection", "policy", "acme-corp", c, "--audience", AUD, "--client-id", APP]);
    }
    let out = env.path("to-upload");
    std::fs::create_dir(&out).expect("mkdir");
    let listed = env.ok(&["connection", "keys", "acme-corp", "mail-sync", "--out", out.to_str().expect("p")]);
    assert!(listed.contains("active") && listed.contains("standby"), "{listed}");
    let cert_of = |slot: &str, serial: &Value| out.join(format!("{slot}-{}.pem", serial.as_str().expect("serial")));
    let active_pem = cert_of("active", &made[0]["serial"]);
    let standby_pem = cert_of("standby", &made[1]["serial"]);
    // The thumbprints custos shows are openssl's.
    assert_eq!(made[0]["thumbprint_sha256"].as_str(), Some(openssl_thumbprint(&active_pem, "-sha256").as_str()));
    assert_eq!(made[0]["thumbprint_sha1"].as_str(), Some(openssl_thumbprint(&active_pem, "-sha1").as_str()));

    let server = TlsServer::start(&env, &[]);
    let admin = token(&env, &["--role", "admin"]);
    let mail = token(&env, &["--role", "tenant", "--tenant", "acme-corp", "--connection", "mail-sync"]);
    let crm = token(&env, &["--role", "tenant", "--tenant", "acme-corp", "--connection", "crm"]);
    let tenant_wide = token(&env, &["--role", "tenant", "--tenant", "acme-corp"]);
    let globex = token(&env, &["--role", "tenant", "--tenant", "globex"]);
    let path = |c: &str, what: &str| format!("/api/v1/tenants/acme-corp/connections/{c}/{what}");
    let request = json!({"aud": AUD, "iss": APP, "sub": APP});

    // ES256 from the P-256 key: PyJWT verifies it against the active certificate only.
    let (status, body) = server.api("POST", &path("mail-sync", "assertion"), Some(&mail), Some(&request));
    assert_eq!(status, 200, "{body}");
    let signed = parse(&body);
    let assertion = signed["assertion"].as_str().expect("assertion");
    let checked = pyjwt(&python, assertion, &active_pem, "ES256").expect("PyJWT verifies the assertion");
    let (header, claims) = (&checked["header"], &checked["claims"]);
    assert_eq!((header["alg"].as_str(), header["typ"].as_str()), (Some("ES256"), Some("JWT")));
    assert_eq!(header["x5t#S256"].as_str(), Some(openssl_thumbprint(&active_pem, "-sha256").as_str()));
    assert_eq!(claims["sub"], APP);
    assert_eq!(claims["jti"], signed["jti"]);
    let lifetime = claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat");
    assert!(lifetime > 0 && lifetime <= 600, "{claims}");
    let forged = pyjwt(&python, assertion, &standby_pem, "ES256");
    assert!(forged.is_err_and(|e| e.contains("InvalidSignatureError")), "the standby's key did not sign it");

    // PS256 by default for RSA, with x5t too; RS256 when asked.
    let crm_pem = env.path("crm.pem");
    let crm_keys = env.json(&["connection", "keys", "acme-corp", "crm"]);
    std::fs::write(&crm_pem, crm_keys[0]["certificate_pem"].as_str().expect("pem")).expect("write");
    for (alg, body) in
        [("PS256", request.clone()), ("RS256", json!({"aud": AUD, "iss": APP, "sub": APP, "alg": "RS256"}))]
    {
        let (status, answer) = server.api("POST", &path("crm", "assertion"), Some(&crm), Some(&body));
        assert_eq!(status, 200, "{answer}");
        let jwt = parse(&answer)["assertion"].as_str().expect("assertion").to_string();
        let checked = pyjwt(&python, &jwt, &crm_pem, alg).unwrap_or_else(|e| panic!("PyJWT refused {alg}: {e}"));
        assert_eq!(checked["header"]["x5t"].as_str(), Some(openssl_thumbprint(&crm_pem, "-sha1").as_str()));
        assert_eq!(checked["header"]["x5t#S256"].as_str(), Some(openssl_thumbprint(&crm_pem, "-sha256").as_str()));
    }

    // A raw digest signature that openssl pkeyutl verifies (ECDSA, and RSA-PSS).
    let message = env.path("message.bin");
    std::fs::write(&message, b"TLS 1.3, client CertificateVerify").expect("write");
    let digest = env.path("digest.bin");
    common::sh(
        "openssl",
        &["dgst", "-sha256", "-binary", "-out", digest.to_str().expect("p"), message.to_str().expect("p")],
    );
    let digest_b64 = STANDARD.encode(std::fs::read(&digest).expect("digest"));
    for (conn, tok, cert, alg, opts) in [
        ("mail-sync", &mail, &active_pem, "ES256", vec![]),
        ("crm", &crm, &crm_pem, "PS256", vec!["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:32"]),
    ] {
        let (status, answer) =
            server.api("POST", &path(conn, "sign"), Some(tok), Some(&json!({"digest": digest_b64, "alg": alg})));
        assert_eq!(status, 200, "{answer}");
        let sig = env.path(&format!("{conn}.sig"));
        std::fs::write(&sig, STANDARD.decode(parse(&answer)["signature"].as_str().expect("sig")).expect("b64"))
            .expect("write");
        let mut args = vec!["pkeyutl", "-verify", "-certin", "-inkey", cert.to_str().expect("p")];
        args.extend(["-pkeyopt", "digest:sha256"]);
        args.extend(opts);
        args.extend(["-in", digest.to_str().expect("p"), "-sigfile", sig.to_str().expect("p")]);
        let verified = common::sh("openssl", &args);
        assert!(verified.contains("Signature Verified Successfully"), "{conn}: {verified}");
    }
    let (status, body) = server.api("POST", &path("crm", "sign"), Some(&crm), Some(&json!({"digest": "AAAA"})));
    assert_eq!(status, 400, "{body}");

    // Who may not: a tenant-wide token (403), another connection's token and
    // another tenant (404, as if it did not exist), the plain listener (404).
    assert_eq!(server.api("POST", &path("mail-sync", "assertion"), Some(&tenant_wide), Some(&request)).0, 403);
    assert_eq!(server.api("POST", &path("mail-sync", "assertion"), Some(&crm), Some(&request)).0, 404);
    assert_eq!(server.api("POST", &path("mail-sync", "assertion"), Some(&globex), Some(&request)).0, 404);
    assert_eq!(
        server
            .api(
                "PUT",
                &path("mail-sync", "policy"),
                Some(&mail),
                Some(&json!({"audiences": [AUD], "client_ids": ["x"]}))
            )
            .0,
        403
    );
    // Outside the policy: 422, and the refusal is in the log with the caller's address.
    let evil = json!({"aud": "https://login.evil.example/token", "iss": APP, "sub": APP});
    let (status, body) = server.api("POST", &path("mail-sync", "assertion"), Some(&mail), Some(&evil));
    assert_eq!(status, 422, "{body}");
    let (status, body) = server.api("GET", "/api/v1/audit/entries?action=connection.sign.refused", Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("login.evil.example") && body.contains("127.0.0.1"), "{body}");
    // Every signature is an entry naming its jti, key and caller.
    let (_, body) = server.api("GET", "/api/v1/audit/entries?action=connection.sign&limit=100", Some(&admin), None);
    let entries = parse(&body)["items"].as_array().expect("items").clone();
    let signatures = entries.iter().filter(|e| e["action"] == "connection.sign").count();
    assert_eq!(signatures, 5, "3 assertions and 2 digests: {body}");
    assert!(body.contains(signed["jti"].as_str().expect("jti")), "{body}");

    // The policy through the API.
    let (status, body) = server.api("GET", &path("mail-sync", "policy"), Some(&mail), None);
    assert_eq!((status, parse(&body)["audiences"][0].as_str()), (200, Some(AUD)), "{body}");
    let (status, body) = server.api("GET", &path("mail-sync", "keys"), Some(&mail), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body).as_array().expect("keys").len(), 2);

    // The incident through the API: declared on the active key, executed by an
    // admin (a tenant may not); the standby signs at once, and no key file exists.
    let (status, body) = server.api(
        "POST",
        "/api/v1/incidents",
        Some(&admin),
        Some(&json!({"compromised": format!("key:{}", made[0]["key_id"].as_str().expect("key")), "note": "API"})),
    );
    assert_eq!(status, 201, "{body}");
    let id = parse(&body)["incident"]["id"].as_str().expect("id").to_string();
    assert_eq!(server.api("POST", &format!("/api/v1/incidents/{id}/execute"), Some(&mail), None).0, 403);
    let (status, body) = server.api("POST", &format!("/api/v1/incidents/{id}/execute"), Some(&admin), None);
    assert_eq!(status, 200, "{body}");
    let executed = parse(&body);
    assert_eq!((executed["replaced"].as_u64(), executed["keys_file"].is_null()), (Some(1), true), "{body}");
    let (status, body) = server.api("POST", &path("mail-sync", "assertion"), Some(&mail), Some(&request));
    assert_eq!(status, 200, "{body}");
    assert_eq!(parse(&body)["key_id"], made[1]["key_id"], "the standby signs now");

    // No private key was written anywhere custos writes.
    for f in files(&env.data_dir()).into_iter().chain(files(&out)) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"), "{} holds a private key", f.display());
    }
    env.ok(&["audit", "verify"]);
}

/// A relying party's export, as JSON lines and as CSV: genuine sign-ins made
/// with assertions from the API, and forged ones (a key generated here, by
/// PyJWT, signing under a thumbprint copied from a real assertion). `audit
/// match` finds every forged one, names its tenant, flags no genuine one,
/// and proves the genuine ones' log entries.
#[test]
fn audit_match_names_the_targeted_tenants() {
    let Some(python) = common::venv_tool("python").filter(|p| {
        std::process::Command::new(p).args(["-c", "import jwt, cryptography"]).status().is_ok_and(|s| s.success())
    }) else {
        assert!(!common::tools_required(), "PyJWT is required but not installed (run scripts/test)");
        eprintln!("SKIPPED: PyJWT not installed (run scripts/test)");
        return;
    };
    let env = Env::initialized();
    env.ok(&["tenant", "add", "globex"]);
    let mut tokens = Vec::new();
    for tenant in ["acme-corp", "globex"] {
        env.ok(&["connection", "add", tenant, "mail-sync", "--custody"]);
        env.ok(&["connection", "policy", tenant, "mail-sync", "--audience", AUD, "--client-id", APP]);
        tokens.push((tenant, token(&env, &["--role", "tenant", "--tenant", tenant, "--connection", "mail-sync"])));
    }
    let server = TlsServer::start(&env, &[]);
    let rfc3339 = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .expect("time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    };
    let mut genuine = Vec::new();
    let mut copied = std::collections::HashMap::new();
    for i in 0..20 {
        let (tenant, tok) = &tokens[i % 2];
        let path = format!("/api/v1/tenants/{tenant}/connections/mail-sync/assertion");
        let (status, body) = server.api("POST", &path, Some(tok), Some(&json!({"aud": AUD, "iss": APP, "sub": APP})));
        assert_eq!(status, 200, "{body}");
        let a = parse(&body);
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(a["assertion"].as_str().expect("jwt").split('.').next().expect("header"))
                .expect("b64"),
        )
        .expect("header");
        let thumbprint = header["x5t#S256"].as_str().expect("x5t#S256").to_string();
        copied.insert(*tenant, thumbprint.clone());
        // Half the export names the jti, half does not (Entra's does not).
        let mut record = json!({"time": rfc3339(a["iat"].as_i64().expect("iat") + 2), "thumbprint": thumbprint,
                                "audience": AUD, "client_ip": "198.51.100.7"});
        if i % 4 < 2 {
            record["jti"] = a["jti"].clone();
        }
        genuine.push(record);
    }
    // The attacker: its own key, a copied thumbprint, its own jti.
    let forge = r#"
import json, sys, time, uuid, jwt
from cryptography.hazmat.primitives.asymmetric import ec
key = ec.generate_private_key(ec.SECP256R1())
now = int(time.time())
claims = {"aud": sys.argv[2], "iss": sys.argv[3], "sub": sys.argv[3], "jti": str(uuid.uuid4()), "nbf": now, "iat": now, "exp": now + 600}
print(json.dumps({"jwt": jwt.encode(claims, key, algorithm="ES256", headers={"x5t#S256": sys.argv[1]}), "jti": claims["jti"]}))
"#;
    let mut forged = Vec::new();
    for _ in 0..2 {
        let out = std::process::Command::new(&python)
            .args(["-c", forge, &copied["globex"], AUD, APP])
            .output()
            .expect("forge");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let f: Value = serde_json::from_slice(&out.stdout).expect("forged");
        forged.push(
            json!({"time": rfc3339(time::OffsetDateTime::now_utc().unix_timestamp()), "thumbprint": copied["globex"],
                           "audience": AUD, "client_ip": "203.0.113.66", "jti": f["jti"]}),
        );
    }
    // Without a jti, an hour after custos last signed for that certificate.
    let later = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    forged.push(
        json!({"time": rfc3339(later), "thumbprint": copied["globex"], "audience": AUD, "client_ip": "203.0.113.66"}),
    );

    let jsonl = env.path("signins.jsonl");
    let mut all: Vec<&Value> = genuine.iter().chain(forged.iter()).collect();
    all.rotate_left(7);
    std::fs::write(&jsonl, all.iter().map(|r| format!("{r}\n")).collect::<String>()).expect("write");
    let csv = env.path("signins.csv");
    let mut text = String::from("time,thumbprint,audience,client_ip,jti\n");
    for r in &all {
        let f = |n: &str| r.get(n).and_then(|v| v.as_str()).unwrap_or("").to_string();
        text.push_str(&format!(
            "{},{},{},{},{}\n",
            f("time"),
            f("thumbprint"),
            f("audience"),
            f("client_ip"),
            f("jti")
        ));
    }
    std::fs::write(&csv, text).expect("write");

    // The signatures must be under a checkpoint for their proofs: serve signs one within a second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    for export in [&jsonl, &csv] {
        let out = env.run(&["audit", "match", export.to_str().expect("p"), "--json"]);
        assert_eq!(out.status.code(), Some(1), "unmatched sign-ins exit 1: {}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).expect("report");
        let unmatched = report["unmatched"].as_array().expect("unmatched");
        assert_eq!(unmatched.len(), 3, "every forged sign-in, nothing else: {unmatched:?}");
        assert!(unmatched.iter().all(|u| u["record"]["client_ip"] == "203.0.113.66" && u["tenant"] == "globex"));
        assert_eq!(report["targeted_tenants"], json!(["globex"]));
        let matched = report["matched"].as_array().expect("matched");
        assert_eq!(matched.len(), 20);
        assert!(matched.iter().all(|m| m["proof"]["path"].is_array() && m["log_index"].is_u64()), "{matched:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("targeted tenants: globex"));
    }
    // The genuine ones alone: exit 0.
    let clean = env.path("genuine.jsonl");
    std::fs::write(&clean, genuine.iter().map(|r| format!("{r}\n")).collect::<String>()).expect("write");
    assert!(
        env.ok(&["audit", "match", clean.to_str().expect("p")]).contains("20 sign-ins: 20 signed by custos, 0 not")
    );
    // A malformed export names its line and changes nothing.
    let bad = env.path("bad.jsonl");
    std::fs::write(&bad, format!("{}\n{{\"time\": \"yesterday\"}}\n", genuine[0])).expect("write");
    let refused = env.fails(&["audit", "match", bad.to_str().expect("p")]);
    assert!(refused.contains("line 2") && refused.contains("time"), "{refused}");
}

/// `serve` rotates a connection key past its configured age while a service
/// signs through the API: every request succeeds, and the signing key
/// changes to the standby the tenant had registered.
#[test]
fn serve_rotates_keys_past_their_age_without_a_failed_signature() {
    let env = Env::initialized();
    let made = env.json(&["connection", "add", "acme-corp", "mail-sync", "--custody"]);
    let standby = made[1]["key_id"].as_str().expect("standby").to_string();
    env.ok(&["connection", "policy", "acme-corp", "mail-sync", "--audience", AUD, "--client-id", APP]);
    let config = env.path("rotation.toml");
    std::fs::write(&config, "[custody]\nmax_key_age_s = 3\nrotation_interval_s = 1\n").expect("config");
    let server = TlsServer::start(&env, &["--config", config.to_str().expect("p")]);
    let mail = token(&env, &["--role", "tenant", "--tenant", "acme-corp", "--connection", "mail-sync"]);
    let path = "/api/v1/tenants/acme-corp/connections/mail-sync/assertion";
    let body = json!({"aud": AUD, "iss": APP, "sub": APP});
    let started = std::time::Instant::now();
    let mut keys = Vec::new();
    // Bounded: until the standby has signed, at most 15 s.
    while started.elapsed() < std::time::Duration::from_secs(15) {
        let (status, answer) = server.api("POST", path, Some(&mail), Some(&body));
        assert_eq!(status, 200, "a signature failed during rotation: {answer}");
        let key = parse(&answer)["key_id"].as_str().expect("key").to_string();
        if keys.last() != Some(&key) {
            keys.push(key.clone());
        }
        if key == standby {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(keys.len(), 2, "the active key, then the standby: {keys:?}");
    assert_eq!(keys[1], standby);
    let after = env.json(&["connection", "keys", "acme-corp", "mail-sync"]);
    let slots: Vec<&str> = after.as_array().expect("keys").iter().filter_map(|k| k["slot"].as_str()).collect();
    assert!(slots.contains(&"retired") && slots.contains(&"standby") && slots.contains(&"active"), "{slots:?}");
    drop(server);
    env.ok(&["audit", "verify", "--state"]);
}

/// Signatures are limited per connection, whoever asks: two tokens of the
/// same connection share its rate (429 with Retry-After past it), another
/// connection is not held back, and a caller who may not sign there is
/// refused as usual (404), not told about the rate.
#[test]
fn signatures_are_limited_per_connection() {
    let env = Env::initialized();
    env.ok(&["tenant", "add", "globex"]);
    for c in ["mail-sync", "crm"] {
        env.ok(&["connection", "add", "acme-corp", c, "--custody", "--no-standby"]);
        env.ok(&["connection", "policy", "acme-corp", c, "--audience", AUD, "--client-id", APP]);
    }
    let config = env.path("limits.toml");
    std::fs::write(&config, "[serve]\nsign_requests_per_second = 1\n").expect("config");
    let server = TlsServer::start(&env, &["--config", config.to_str().expect("p")]);
    let one = token(&env, &["--role", "tenant", "--tenant", "acme-corp", "--connection", "mail-sync"]);
    let two = token(&env, &["--role", "tenant", "--tenant", "acme-corp", "--connection", "mail-sync"]);
    let crm = token(&env, &["--role", "tenant", "--tenant", "acme-corp", "--connection", "crm"]);
    let globex = token(&env, &["--role", "tenant", "--tenant", "globex"]);
    let body = json!({"aud": AUD, "iss": APP, "sub": APP});
    let path = |c: &str| format!("/api/v1/tenants/acme-corp/connections/{c}/assertion");
    // A burst of two (twice the rate), shared by both tokens of mail-sync.
    let statuses: Vec<u16> = [&one, &two, &one, &two]
        .iter()
        .map(|t| server.api("POST", &path("mail-sync"), Some(t), Some(&body)).0)
        .collect();
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    let out = std::process::Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert", server.root.to_str().expect("p"), "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {one}"), "-H", "Content-Type: application/json"])
        .args(["--data-binary", &body.to_string(), &format!("https://{}{}", server.tls_addr, path("mail-sync"))])
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.contains(" 429") && head.contains("retry-after:"), "{head}");
    assert_eq!(server.api("POST", &path("crm"), Some(&crm), Some(&body)).0, 200, "another connection has its own rate");
    assert_eq!(server.api("POST", &path("mail-sync"), Some(&globex), Some(&body)).0, 404, "a stranger learns nothing");
}

/// A tenant that keeps every new connection's key in custody: `connection
/// add` without `--custody` makes the keys (CLI and API alike), `--no-custody`
/// opts one connection out, and the default is an audit entry.
#[test]
fn a_tenant_keeps_new_connections_in_custody_by_default() {
    let env = Env::initialized();
    env.ok(&["tenant", "custody", "acme-corp", "on"]);
    let tenants = env.json(&["tenant", "list"]);
    assert_eq!(tenants[0]["custody_default"], true, "{tenants}");
    env.ok(&["connection", "add", "acme-corp", "mail-sync"]);
    let keys = env.json(&["connection", "keys", "acme-corp", "mail-sync"]);
    assert_eq!(keys.as_array().map(Vec::len), Some(2), "active and standby, without --custody: {keys}");
    env.ok(&["connection", "add", "acme-corp", "legacy", "--no-custody"]);
    let none = env.json(&["connection", "keys", "acme-corp", "legacy"]);
    assert_eq!(none.as_array().map(Vec::len), Some(0), "opted out: {none}");
    let said = env.fails(&["connection", "add", "acme-corp", "odd", "--no-custody", "--no-standby"]);
    assert!(said.contains("--no-standby"), "{said}");

    // The API follows the same default, and `"custody": false` opts out.
    let server = TlsServer::start(&env, &[]);
    let admin = token(&env, &["--role", "admin"]);
    let (status, body) = server.api(
        "POST",
        "/api/v1/tenants/acme-corp/connections",
        Some(&admin),
        Some(&serde_json::json!({"name": "crm"})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(env.json(&["connection", "keys", "acme-corp", "crm"]).as_array().map(Vec::len), Some(2));
    let (status, body) = server.api(
        "POST",
        "/api/v1/tenants/acme-corp/connections",
        Some(&admin),
        Some(&serde_json::json!({"name": "web", "custody": false})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(env.json(&["connection", "keys", "acme-corp", "web"]).as_array().map(Vec::len), Some(0));
    env.ok(&["tenant", "custody", "acme-corp", "off"]);
    env.ok(&["connection", "add", "acme-corp", "plain"]);
    assert_eq!(env.json(&["connection", "keys", "acme-corp", "plain"]).as_array().map(Vec::len), Some(0));
    let audit = env.ok(&["audit", "tail", "-n", "100", "--json", "--action", "tenant.custody-default"]);
    assert_eq!(audit.lines().count(), 2, "on and off are audit entries: {audit}");
}
