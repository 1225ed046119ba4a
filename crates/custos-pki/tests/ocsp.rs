//! The OCSP request parser against hostile bytes: every mutation of a valid
//! request yields a value or an error, never a panic, and what parses still
//! names a positive serial of at most 20 octets.

use custos_pki::Serial;
use custos_pki::ocsp::{HashAlgorithm, IssuerHashes, MAX_CERTS_PER_REQUEST, OcspRequest, encode_request};

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn issuer() -> IssuerHashes {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("cert");
    IssuerHashes::from_certificate(cert.der()).expect("hashes")
}

#[test]
fn mutated_requests_never_panic() {
    let hashes = issuer();
    let serial: Serial = "4a1f00ff00ee".parse().expect("serial");
    let seeds = [
        encode_request(
            &[hashes.cert_id(HashAlgorithm::Sha1, &serial)],
            Some(&[0x04, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]),
        ),
        encode_request(
            &[hashes.cert_id(HashAlgorithm::Sha256, &serial), hashes.cert_id(HashAlgorithm::Sha1, &serial)],
            None,
        ),
    ];
    for seed in &seeds {
        let parsed = OcspRequest::parse(seed).expect("seed parses");
        assert!(hashes.matches(&parsed.certs[0]));
    }
    let mut rng = XorShift(0x0c5b_2026);
    for round in 0..50_000 {
        let seed = &seeds[round % seeds.len()];
        let mut input = seed.clone();
        match rng.next() % 4 {
            0 => input.truncate((rng.next() as usize) % seed.len()),
            1 => {
                for _ in 0..1 + rng.next() % 3 {
                    let i = (rng.next() as usize) % input.len();
                    input[i] ^= 1 << (rng.next() % 8);
                }
            }
            2 => {
                let i = (rng.next() as usize) % input.len();
                input[i] = rng.next() as u8;
            }
            _ => input = (0..rng.next() % 200).map(|_| rng.next() as u8).collect(),
        }
        if let Ok(req) = OcspRequest::parse(&input) {
            assert!(!req.certs.is_empty() && req.certs.len() <= MAX_CERTS_PER_REQUEST);
            for c in &req.certs {
                assert!(c.serial.as_bytes().len() <= 20 && c.serial.as_bytes()[0] != 0);
            }
        }
    }
}
