//! What differs between SQLite and PostgreSQL, and the SQL text helpers
//! every aggregate uses. A leaf: it imports no other module of this crate but
//! the error type.

/// Which database engine is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// `(?, ?, ...), (?, ...)` for `rows` rows of `columns` values.
///
/// SQLite gets anonymous `?` parameters: sqlx resolves each named `$n` through
/// `sqlite3_bind_parameter_name`, a linear search, which made a 1900-parameter
/// insert quadratic (29% of bulk issuance time in perf).
pub(crate) fn values_clause(engine: Engine, rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        out.push_str(&params(engine, r * columns + 1, columns));
        out.push(')');
    }
    out
}

/// `count` comma-separated placeholders, numbered from `first` where the
/// engine needs numbers (PostgreSQL); SQLite gets `?` (numbered ones made
/// large multi-row statements quadratic there).
pub(crate) fn params(engine: Engine, first: usize, count: usize) -> String {
    match engine {
        Engine::Sqlite => vec!["?"; count].join(", "),
        Engine::Postgres => (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", "),
    }
}

/// Splits a migration script into statements; our scripts keep `;` out of literals.
pub(crate) fn statements(script: &str) -> Vec<String> {
    let without_comments: String =
        script.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
    without_comments.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// A database URL without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The time now, Unix seconds.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

#[cfg(test)]
mod tests {
    use custos_types::{CertificateStatus, DeliveryState, IssuerStatus, KeyStatus};

    /// A few queries name a state as a constant in their text (the partial
    /// index on revoked certificates needs the literal to be usable); those
    /// literals must be exactly the typed names every other query binds.
    #[test]
    fn the_states_written_into_sql_text_are_the_typed_names() {
        assert_eq!(CertificateStatus::Valid.as_str(), "valid");
        assert_eq!(CertificateStatus::Revoked.as_str(), "revoked");
        assert_eq!(KeyStatus::Destroyed.as_str(), "destroyed");
        assert_eq!(KeyStatus::Compromised.as_str(), "compromised");
        assert_eq!(IssuerStatus::Compromised.as_str(), "compromised");
        assert_eq!(DeliveryState::Pending.as_str(), "pending");
    }
}
