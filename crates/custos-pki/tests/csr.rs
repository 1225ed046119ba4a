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
