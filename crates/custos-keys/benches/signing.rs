//! Signatures per second: custos through a PKCS#11 token (SoftHSM2) and
//! through the soft store, at 1 and 2 threads, for P-256 and RSA-2048, next to
//! the token's raw `C_Sign` rate measured in the same run (a session per
//! thread, pre-hashed input for ECDSA: the most a caller could get).
//!
//! `CUSTOS_TEST_PKCS11=<token URI> SOFTHSM2_CONF=… cargo bench -p custos-keys --bench signing`
//! (scripts/bench-signing sets up a throwaway token). `CUSTOS_BENCH_SECS` sets
//! the seconds per cell (default 2).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use custos_keys::pkcs11::{Pkcs11KeyStore, TokenConfig, key_id_of};
use custos_keys::soft::SoftKeyStore;
use custos_keys::{KeyAlgorithm, KeyStore, Signer};

/// Runs `sign` on `threads` threads for `secs` and returns signatures per second.
fn rate(threads: usize, secs: f64, sign: Arc<dyn Fn() + Send + Sync>) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, count, sign) = (stop.clone(), count.clone(), sign.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sign();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let Ok(uri) = std::env::var("CUSTOS_TEST_PKCS11") else {
        eprintln!("set CUSTOS_TEST_PKCS11 (and SOFTHSM2_CONF) to a token URI; see scripts/bench-signing");
        return;
    };
    let secs: f64 = std::env::var("CUSTOS_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(2.0);
    let config = TokenConfig::parse(&uri).expect("token URI");
    let token = Pkcs11KeyStore::open(config.clone()).expect("open token");
    let (soft, _) = SoftKeyStore::create(b"bench").expect("soft store");
    let raw_ctx = cryptoki::context::Pkcs11::new(&config.module_path).expect("module");
    let slot = raw_ctx
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| raw_ctx.get_token_info(*s).map(|i| i.label().trim_end() == config.token).unwrap_or(false))
        .expect("token slot");

    println!("| algorithm | threads | token raw C_Sign/s | custos via PKCS#11/s | ratio | custos soft store/s |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
        let on_token = token.generate(algorithm, "bench").expect("generate on token");
        let in_soft = soft.generate(algorithm, "bench").expect("generate soft");
        let id = key_id_of(&String::from_utf8_lossy(&on_token.reference.data)).expect("id");
        let message = vec![0x5a; 512];
        for threads in [1usize, 2] {
            // Raw: a session per thread (the token is already logged in), the
            // private key found once, C_Sign in a loop.
            let raw = {
                let sessions: Vec<_> = (0..threads)
                    .map(|_| {
                        let s = raw_ctx.open_ro_session(slot).expect("session");
                        let key = s
                            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Id(id.clone())])
                            .expect("find")[0];
                        std::sync::Mutex::new((s, key))
                    })
                    .collect();
                let sessions = Arc::new(sessions);
                let next = Arc::new(AtomicU64::new(0));
                let input = if algorithm == KeyAlgorithm::EcdsaP256 { vec![7u8; 32] } else { message.clone() };
                let ecdsa = algorithm == KeyAlgorithm::EcdsaP256;
                // Each thread takes its own session for the whole run.
                let per_thread: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    thread_local!(static MINE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) });
                    let i = MINE.with(|m| {
                        m.get().unwrap_or_else(|| {
                            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                            m.set(Some(i));
                            i
                        })
                    });
                    let guard = sessions[i % sessions.len()].lock().expect("session lock");
                    // Mechanism holds raw pointers (not Send), so it is built per call; it is a plain value.
                    let mechanism = if ecdsa { Mechanism::Ecdsa } else { Mechanism::Sha256RsaPkcs };
                    guard.0.sign(&mechanism, guard.1, &input).expect("raw sign");
                });
                rate(threads, secs, per_thread)
            };
            let signer: Arc<dyn Signer> = on_token.signer.clone();
            let m = message.clone();
            let ours = rate(
                threads,
                secs,
                Arc::new(move || {
                    signer.sign(&m).expect("sign");
                }),
            );
            let signer: Arc<dyn Signer> = in_soft.signer.clone();
            let m = message.clone();
            let soft_rate = rate(
                threads,
                secs,
                Arc::new(move || {
                    signer.sign(&m).expect("sign");
                }),
            );
            println!("| {algorithm} | {threads} | {raw:.0} | {ours:.0} | {:.2} | {soft_rate:.0} |", ours / raw);
        }
        token.destroy(&on_token.reference).expect("destroy");
    }
}
