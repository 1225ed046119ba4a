//! The console and `/metrics` at scale: a custos with `CUSTOS_BENCH_CERTS`
//! certificates (default 1,000,000, on 1,000 connections of 100 tenants, one
//! name each, 2% revoked) on a real SQLite file, served by the same routers
//! `custos serve` runs, called in-process so that only server time is
//! measured (no TLS, no network). Each page is asked for 200 times after 10
//! warm-ups, one at a time; p50, p99 and max are printed, with the p99 as a
//! ratio to the JSON API's certificate list (the same store query, the
//! baseline) measured in the same run. The figures job's own count is timed
//! too (it runs in the background, never on a request).
//!
//! `cargo bench -p custos-node --bench console` (`CUSTOS_BENCH_CERTS=100000` for a quick run)

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use custos_ca::{Principal, Role, StatusPublisher};
use custos_server::AppState;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

const PASSPHRASE: &[u8] = b"console bench passphrase";
const TENANTS: usize = 100;
const CONNECTIONS_PER_TENANT: usize = 10;

fn main() {
    let n: usize = std::env::var("CUSTOS_BENCH_CERTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(run(n));
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = custos_node::Config { data_dir: dir.path().join("data"), ..custos_node::Config::default() };
    let me = Principal::local();
    let ca = custos_node::init(&config, PASSPHRASE, &me).await.expect("init");
    let options = custos_ca::ConnectionOptions {
        profile: custos_pki::Profile::Server,
        allowed_sans: vec!["*.bench.example".into()],
        key_algorithm: custos_ca::KeyAlgorithm::EcdsaP256,
        validity_days: None,
    };
    for t in 0..TENANTS {
        ca.add_tenant(&me, &format!("t{t:02}")).await.expect("tenant");
        for c in 0..CONNECTIONS_PER_TENANT {
            ca.add_connection(&me, &format!("t{t:02}"), &format!("c{c}"), &options).await.expect("connection");
        }
    }
    let started = Instant::now();
    let mut issued = 0;
    while issued < n {
        let chunk = (n - issued).min(50_000);
        let requests = (issued..issued + chunk)
            .map(|i| {
                let conn = i % (TENANTS * CONNECTIONS_PER_TENANT);
                custos_ca::IssueRequest {
                    tenant: format!("t{:02}", conn / CONNECTIONS_PER_TENANT),
                    connection: format!("c{}", conn % CONNECTIONS_PER_TENANT),
                    profile: None,
                    sans: vec![format!("h{i}.bench.example")],
                    validity_secs: None,
                    key: custos_ca::KeySource::Generate(None),
                    request_key: None,
                }
            })
            .collect();
        ca.issue_many(&me, requests, drop).await.expect("issue");
        issued += chunk;
    }
    // 20 of 1,000 connections revoked whole: 2% of the certificates.
    for c in 0..20 {
        let (t, c) = (format!("t{:02}", c / 2), format!("c{}", c % 2));
        ca.revoke_connection(&me, &t, &c, custos_pki::Reason::Superseded, None).await.expect("revoke");
    }
    eprintln!("populated {n} certificates in {:.0} s", started.elapsed().as_secs_f64());
    let token =
        ca.create_token(&me, &custos_ca::access::TokenScope::Role(Role::Admin), None).await.expect("token").token;
    let ca = Arc::new(ca);
    let publisher = Arc::new(StatusPublisher::start(ca.clone()).await.expect("publisher"));
    let t = Instant::now();
    let figures = ca.refresh_figures(&Principal::System).await.expect("figures");
    let figures_secs = t.elapsed().as_secs_f64();
    assert_eq!((figures.valid + figures.revoked) as usize, n, "{figures:?}");
    let state = Arc::new(AppState {
        metrics: Arc::new(custos_server::metrics::Metrics::new(ca.metrics(), publisher.clone())),
        sessions: custos_server::console::Sessions::default(),
        ca: ca.clone(),
        publisher,
        limiter: custos_server::api::Limiter::new(1_000_000, 1_000_000),
        sign_limiter: custos_server::api::Limiter::new(1_000_000, 1_000_000),
        incident_keys_dir: dir.path().to_path_buf(),
        acme: None,
        acme_on_plain_http: false,
    });
    let app = custos_server::router(state.clone())
        .merge(custos_server::api::router(state.clone()))
        .merge(custos_server::console::router(state.clone()))
        .route("/metrics", axum::routing::get(custos_server::metrics::authenticated).with_state(state.clone()));

    let session = sign_in(&app, &token).await;
    let cookie = format!("custos_session={session}");
    let bearer = format!("Bearer {token}");
    // A page deep in the list: follow "next" twenty times.
    let mut deep = "/ui/certificates".to_string();
    for _ in 0..20 {
        let (_, body) = get(&app, &deep, header::COOKIE, &cookie).await;
        let at = body.find("id=\"next\" href=\"").expect("a next page") + "id=\"next\" href=\"".len();
        deep = body[at..].split('"').next().expect("link").replace("&amp;", "&");
    }
    let (_, listed) = get(&app, "/ui/certificates?tenant=t42&connection=c3", header::COOKIE, &cookie).await;
    let at = listed.find("/ui/certificates/").expect("a certificate link") + "/ui/certificates/".len();
    let serial: String = listed[at..].chars().take_while(char::is_ascii_hexdigit).collect();
    let name = format!("h{}.bench.example", n / 2 + 7);

    let scenarios: Vec<(&str, String, header::HeaderName, &str)> = vec![
        (
            "API: certificate list, 50 (baseline)",
            "/api/v1/certificates?limit=50".into(),
            header::AUTHORIZATION,
            &bearer,
        ),
        ("console: overview", "/ui/".into(), header::COOKIE, &cookie),
        ("console: inventory, first page", "/ui/certificates".into(), header::COOKIE, &cookie),
        ("console: inventory, page 21", deep.clone(), header::COOKIE, &cookie),
        ("console: one tenant", "/ui/certificates?tenant=t42".into(), header::COOKIE, &cookie),
        ("console: one connection", "/ui/certificates?tenant=t42&connection=c3".into(), header::COOKIE, &cookie),
        ("console: revoked", "/ui/certificates?status=revoked".into(), header::COOKIE, &cookie),
        (
            "console: valid, expiring within 30 days",
            "/ui/certificates?status=valid&expiring=30".into(),
            header::COOKIE,
            &cookie,
        ),
        ("console: by name", format!("/ui/certificates?san={name}"), header::COOKIE, &cookie),
        ("console: a certificate", format!("/ui/certificates/{serial}"), header::COOKIE, &cookie),
        ("/metrics scrape", "/metrics".into(), header::AUTHORIZATION, &bearer),
    ];
    println!("figures counted by the background job in {figures_secs:.2} s ({n} certificates)\n");
    println!("| request | p50 | p99 | max | p99 / API list p99 |");
    println!("| --- | --- | --- | --- | --- |");
    let mut baseline = None;
    for (label, path, name, value) in &scenarios {
        for _ in 0..10 {
            get(&app, path, name.clone(), value).await;
        }
        let mut times = Vec::with_capacity(200);
        for _ in 0..200 {
            let t = Instant::now();
            let (status, body) = get(&app, path, name.clone(), value).await;
            times.push(t.elapsed());
            assert_eq!(status, 200, "{label}: {body}");
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (p50, p99, max) = (times[100], times[197], times[199]);
        let base = *baseline.get_or_insert(p99);
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} |",
            ms(p50),
            ms(p99),
            ms(max),
            p99.as_secs_f64() / base.as_secs_f64()
        );
    }
}

async fn get(app: &axum::Router, path: &str, name: header::HeaderName, value: &str) -> (u16, String) {
    let req = Request::get(path).header(name, value).body(Body::empty()).expect("request");
    let response = app.clone().oneshot(req).await.expect("answer");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Signs in through the login form as a browser would; returns the session cookie's value.
async fn sign_in(app: &axum::Router, token: &str) -> String {
    let form = app.clone().oneshot(Request::get("/ui/login").body(Body::empty()).expect("req")).await.expect("form");
    let csrf = cookie_value(&form, "custos_login").expect("login cookie");
    let body = format!("csrf={csrf}&method=token&token={token}");
    let req = Request::post("/ui/login")
        .header(header::COOKIE, format!("custos_login={csrf}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .expect("req");
    let answer = app.clone().oneshot(req).await.expect("login");
    cookie_value(&answer, "custos_session").expect("session cookie")
}

fn cookie_value(response: &axum::response::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}
