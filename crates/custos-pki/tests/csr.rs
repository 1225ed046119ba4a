//! CSR parsing against requests made by rcgen (not our encoder), and against
//! hostile bytes: every mutation must yield an error, never a panic.

use custos_keys::KeyAlgorithm;
use custos_pki::{CertificateRequest, PkiError};

fn csr_der(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    let params = rcgen::CertificateParams::new(vec!["x.example".to_string()]).expect("params");
    params.serialize_request(&key).expect("csr").der().to_vec()
}

#[test]
fn accepts_each_supported_key_type_in_pem_and_der() {
    for (alg, expected) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, KeyAlgorithm::EcdsaP256),
        (&rcgen::PKCS_ECDSA_P384_SHA384, KeyAlgorithm::EcdsaP384),
        (&rcgen::PKCS_ED25519, KeyAlgorithm::Ed25519),
    ] {
        let der = csr_der(alg);
        assert_eq!(CertificateRequest::parse(&der).expect("der").algorithm, expected);
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        assert_eq!(CertificateRequest::parse(pem.as_bytes()).expect("pem").algorithm, expected);
    }
}

#[test]
fn a_changed_byte_in_the_signed_part_fails_the_signature() {
    let mut der = csr_der(&rcgen::PKCS_ECDSA_P256_SHA256);
    let at = der.windows(9).position(|w| w == b"x.example").expect("SAN in request");
    der[at] = b'y';
    assert!(matches!(CertificateRequest::parse(&der), Err(PkiError::CsrSignature)));
}

/// A small deterministic generator, so a failure reproduces.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutated_truncated_and_random_input_never_panics() {
    let seeds = [csr_der(&rcgen::PKCS_ECDSA_P256_SHA256), csr_der(&rcgen::PKCS_ED25519)];
    let mut rng = XorShift(0x5eed_c5a1_u64);
    let mut accepted = 0;
    for round in 0..20_000 {
        let seed = &seeds[round % seeds.len()];
        let mut input = seed.clone();
        match rng.next() % 4 {
            0 => input.truncate((rng.next() as usize) % seed.len()),
            1 => {
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % input.len();
                    input[i] ^= 1 << (rng.next() % 8);
                }
            }
            2 => {
                let i = (rng.next() as usize) % input.len();
                input.insert(i, rng.next() as u8);
            }
            _ => input = (0..rng.next() % 300).map(|_| rng.next() as u8).collect(),
        }
        if CertificateRequest::parse(&input).is_ok() {
            accepted += 1;
        }
    }
    // A flipped bit outside the signed part (e.g. the BIT STRING's unused-bits
    // octet, which the parser tolerates) can leave a request that still says
    // the same thing; 7 of 20,000 did when this was written.
    assert!(accepted < 50, "{accepted} mutated requests were accepted");
}

/// A CSR made by openssl with `genpkey_options` for the key and `req_options` for the request.
fn openssl_csr(genpkey_options: &[&str], req_options: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("k.pem");
    let csr = dir.path().join("r.der");
    let run = |args: Vec<&str>| {
        let out = std::process::Command::new("openssl").args(&args).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let mut g = vec!["genpkey"];
    g.extend_from_slice(genpkey_options);
    g.extend(["-out", key.to_str().expect("p")]);
    run(g);
    let mut r = vec!["req", "-new", "-subj", "/CN=x", "-outform", "DER", "-key", key.to_str().expect("p")];
    r.extend(["-out", csr.to_str().expect("p")]);
    r.extend_from_slice(req_options);
    run(r);
    std::fs::read(csr).expect("read csr")
}

#[test]
fn rsa_keys_need_exponent_65537_and_an_exact_size() {
    let e3 =
        openssl_csr(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-pkeyopt", "rsa_keygen_pubexp:3"], &[]);
    let err = CertificateRequest::from_der(&e3).expect_err("e = 3");
    assert!(err.to_string().contains("public exponent 3"), "{err}");
    let odd = openssl_csr(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2050"], &[]);
    let err = CertificateRequest::from_der(&odd).expect_err("2050 bits");
    assert!(err.to_string().contains("RSA-2050"), "{err}");
    let good = openssl_csr(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], &[]);
    assert_eq!(CertificateRequest::from_der(&good).expect("RSA-2048, e = 65537").algorithm, KeyAlgorithm::Rsa2048);
}

#[test]
fn ecdsa_csrs_signed_with_sha384_and_sha512_are_accepted() {
    for (curve, hash, algorithm) in [
        ("P-256", "-sha384", KeyAlgorithm::EcdsaP256),
        ("P-256", "-sha512", KeyAlgorithm::EcdsaP256),
        ("P-384", "-sha512", KeyAlgorithm::EcdsaP384),
    ] {
        let group = format!("ec_paramgen_curve:{curve}");
        let der = openssl_csr(&["-algorithm", "EC", "-pkeyopt", &group], &[hash]);
        let parsed = CertificateRequest::from_der(&der).unwrap_or_else(|e| panic!("{curve} {hash}: {e}"));
        assert_eq!(parsed.algorithm, algorithm);
        // And a changed signature byte still fails.
        let mut bad = der.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(CertificateRequest::from_der(&bad).is_err(), "{curve} {hash} tampered");
    }
}
