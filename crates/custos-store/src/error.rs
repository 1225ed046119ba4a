/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `initialize` found an existing custos in this database.
    #[error("this database already holds an initialized custos")]
    AlreadyInitialized,
    /// The database has not been initialized.
    #[error("this database holds no custos yet (run `custos init`)")]
    NotInitialized,
    /// An object with this key already exists.
    #[error("{what} already exists")]
    Duplicate {
        /// What was duplicated, e.g. `tenant "acme"`.
        what: String,
    },
    /// The object is not in a state that allows the change.
    #[error("{what}")]
    Conflict {
        /// What conflicted.
        what: String,
    },
    /// A referenced object does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What was missing.
        what: String,
    },
    /// Input the store refuses before writing anything.
    #[error("{0}")]
    Invalid(String),
    /// Stored data that does not decode.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The storage is gone or refuses reads or writes (`check_storage`).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database could not be opened or migrated.
    #[error("cannot open database {location}{}", damage_hint(source))]
    Open {
        /// Where the database was.
        location: String,
        /// Why it failed.
        #[source]
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("database error while trying to {operation}{}", damage_hint(source))]
    Database {
        /// What we were doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

/// Whether a driver error says the database file is damaged (SQLite's
/// SQLITE_CORRUPT, 11, or SQLITE_NOTADB, 26, with their extended codes).
fn is_damage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            matches!(code & 0xff, 11 | 26)
                || d.message().contains("malformed")
                || d.message().contains("file is not a database")
        }
        _ => false,
    }
}

fn damage_hint(e: &sqlx::Error) -> &'static str {
    match is_damage(e) {
        true => {
            ": THE DATABASE IS DAMAGED. Stop custos, keep a copy of the files as they are, and restore the last \
             backup (`custos restore FILE`); `custos doctor` shows what is wrong"
        }
        false => "",
    }
}

impl StoreError {
    /// Whether this error says the database is damaged (restore from a backup).
    pub fn is_damaged(&self) -> bool {
        match self {
            StoreError::Open { source, .. } | StoreError::Database { source, .. } => is_damage(source),
            _ => false,
        }
    }

    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { operation, source }
    }
}
