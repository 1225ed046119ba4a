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
    /// The database could not be opened or migrated.
    #[error("cannot open database {location}")]
    Open {
        /// Where the database was.
        location: String,
        /// Why it failed.
        #[source]
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("database error while trying to {operation}")]
    Database {
        /// What we were doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    pub(crate) fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { operation, source }
    }
}
