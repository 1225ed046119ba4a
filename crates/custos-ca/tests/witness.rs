//! The log's side of witnessing on a real SQLite custos: a request carries a
//! consistency proof a witness can check, a cosignature line that does not
//! verify is refused and changes nothing, a valid one is kept on the
//! checkpoint and makes it the witnessed one.

mod common;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use custos_audit::VerifierKey;
use custos_audit::witness::{WitnessState, cosign};
use custos_ca::InitOptions;

#[tokio::test]
async fn cosignatures_are_checked_before_they_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, _store) = common::init(dir.path(), &InitOptions::default(), b"witness test passphrase").await;
    ca.sign_checkpoint(&common::ME).await.expect("checkpoint");
    let first = ca.witness_request(&common::ME, 0).await.expect("request").expect("a checkpoint");
    ca.add_tenant(&common::ME, "acme").await.expect("tenant");
    let cp = ca.sign_checkpoint(&common::ME).await.expect("checkpoint").expect("the log grew");

    // What a witness that saw the first checkpoint decides on the second.
    let log_key = ca.log_verifier_key().await.expect("log key");
    let seen = WitnessState { log_key: log_key.to_string(), size: 0, root: String::new() }
        .add_checkpoint(&first)
        .expect("the first checkpoint");
    let state = WitnessState { log_key: log_key.to_string(), size: seen.size, root: hex::encode(seen.root) };
    let request = ca.witness_request(&common::ME, seen.size).await.expect("request").expect("a checkpoint");
    assert!(!request.proof.is_empty(), "a consistency proof from the witness's size");
    assert_eq!(state.add_checkpoint(&request).expect("it extends what the witness saw").size, cp.size);
    assert!(ca.witness_request(&common::ME, cp.size + 1).await.is_err(), "a witness ahead of the log: rolled back");

    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let witness = VerifierKey::cosigner("witness.test/w1", pair.public_key().as_ref()).expect("key");
    let line = cosign(&request.note, &witness, 1_800_000_000, |m| Ok::<_, String>(pair.sign(m).as_ref().to_vec()))
        .expect("cosign");
    assert!(ca.witnessed_checkpoint(&common::ME, std::slice::from_ref(&witness)).await.expect("read").is_none());

    // A line with the witness's name and key id but another signature: refused, nothing kept.
    let (name_and_prefix, b64) = line.trim_end().rsplit_once(' ').expect("line");
    let mut forged = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).expect("b64");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged =
        format!("{name_and_prefix} {}\n", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, forged));
    assert!(ca.add_cosignatures(&common::ME, cp.size, &witness, &forged).await.is_err());
    let note = ca.latest_checkpoint().await.expect("read").expect("cp").note;
    assert!(!note.contains("witness.test/w1"), "{note}");

    // The genuine line is kept once, and the checkpoint is witnessed.
    ca.add_cosignatures(&common::ME, cp.size, &witness, &line).await.expect("cosignature");
    ca.add_cosignatures(&common::ME, cp.size, &witness, &line).await.expect("again: nothing to add");
    let note = ca.latest_checkpoint().await.expect("read").expect("cp").note;
    assert_eq!(note.matches("witness.test/w1").count(), 1, "{note}");
    let (witnessed, times) =
        ca.witnessed_checkpoint(&common::ME, std::slice::from_ref(&witness)).await.expect("read").expect("witnessed");
    assert_eq!((witnessed.size, times), (cp.size, vec![("witness.test/w1".to_string(), 1_800_000_000)]));
}
