//! Issuance policy: names, SAN allow-lists, lifetimes.

use crate::CaError;

/// Checks a tenant or connection name: a short slug that is safe in URLs and paths.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), CaError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(CaError::InvalidName { kind, name: name.to_string() }) }
}

/// Checks a SAN allow-list pattern: a DNS name, `*.` and a DNS name, an IP address or a URI.
pub fn check_san_pattern(pattern: &str) -> Result<(), CaError> {
    if pattern.parse::<std::net::IpAddr>().is_ok() || pattern.contains("://") {
        return Ok(());
    }
    custos_pki::issue::check_dns_name(pattern).map_err(|e| CaError::Policy(format!("allowed SAN pattern: {e}")))?;
    check_wildcard_base(pattern)
}

/// Refuses a wildcard whose base is a public suffix (`*.com`, `*.co.uk`,
/// `*.github.io`): it would cover every registrant's names under it. The
/// suffixes are the Public Suffix List's, ICANN and private sections, as
/// built into the `psl` crate.
pub fn check_wildcard_base(name: &str) -> Result<(), CaError> {
    let Some(base) = name.strip_prefix("*.") else { return Ok(()) };
    let base = base.trim_end_matches('.').to_ascii_lowercase();
    let is_suffix = psl::suffix(base.as_bytes()).is_some_and(|s| s.is_known() && s.as_bytes() == base.as_bytes());
    if is_suffix {
        return Err(CaError::Policy(format!(
            "{name}: {base} is a public suffix (Public Suffix List), so the wildcard would cover other registrants' names"
        )));
    }
    Ok(())
}

/// Whether `san` is allowed by one of `patterns`.
///
/// `*.example.com` allows exactly one more label: `a.example.com` and the
/// wildcard `*.example.com` itself, not `a.b.example.com` or `example.com`.
/// A pattern whose base is a public suffix (recorded before custos refused
/// them) allows nothing.
pub fn san_allowed(san: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| {
        if check_wildcard_base(p).is_err() {
            return false;
        }
        if p == san {
            return true;
        }
        match p.strip_prefix("*.") {
            Some(suffix) => san
                .strip_suffix(suffix)
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty() && !label.contains('.')),
            None => false,
        }
    })
}

/// Parses a lifetime such as `90d`, `12h` or `90` (days) into seconds.
pub fn parse_duration(text: &str) -> Result<i64, CaError> {
    let t = text.trim();
    let bad = || CaError::Policy(format!("invalid duration {text:?}: use e.g. 30d, 12h or 90"));
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "d"),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).filter(|s| *s > 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_on_public_suffixes_are_refused_and_allow_nothing() {
        for bad in ["*.com", "*.co.uk", "*.github.io"] {
            let err = check_san_pattern(bad).expect_err(bad).to_string();
            assert!(err.contains("public suffix"), "{bad}: {err}");
        }
        for good in ["*.example.com", "*.acme.co.uk", "api.example.com", "com.example.net"] {
            check_san_pattern(good).expect(good);
        }
        // A pattern recorded before the check existed allows nothing.
        assert!(!san_allowed("google.com", &["*.com".to_string()]));
        assert!(san_allowed("a.example.com", &["*.example.com".to_string()]));
    }

    #[test]
    fn wildcard_patterns_allow_exactly_one_label() {
        let p = vec!["*.acme.example".to_string(), "10.0.0.1".to_string()];
        assert!(san_allowed("api.acme.example", &p));
        assert!(san_allowed("*.acme.example", &p));
        assert!(san_allowed("10.0.0.1", &p));
        assert!(!san_allowed("acme.example", &p));
        assert!(!san_allowed("a.b.acme.example", &p));
        assert!(!san_allowed("evilacme.example", &p));
        assert!(!san_allowed("api.acme.example.evil", &p));
        assert!(!san_allowed("10.0.0.2", &p));
    }

    #[test]
    fn names_are_slugs() {
        assert!(check_name("tenant", "acme-corp").is_ok());
        for bad in ["", "Acme", "-x", "a/b", "a b", &"a".repeat(64)] {
            assert!(check_name("tenant", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").expect("d"), 30 * 86_400);
        assert_eq!(parse_duration("12h").expect("h"), 12 * 3_600);
        assert_eq!(parse_duration("7").expect("bare"), 7 * 86_400);
        for bad in ["", "d", "0d", "-1d", "5y", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
