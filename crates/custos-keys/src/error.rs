/// What went wrong in key custody.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The passphrase does not open this key store.
    #[error("wrong passphrase: it does not unseal this key store")]
    WrongPassphrase,
    /// An algorithm name we do not know or do not allow.
    #[error(transparent)]
    UnsupportedAlgorithm(#[from] custos_types::UnsupportedAlgorithm),
    /// A backend could not sign.
    #[error(transparent)]
    Sign(#[from] custos_types::SignError),
    /// The key belongs to another backend than the one asked to open it.
    #[error("key belongs to backend {found:?}, not {expected:?}")]
    BackendMismatch {
        /// The backend that was asked.
        expected: &'static str,
        /// The backend named in the reference.
        found: String,
    },
    /// A sealed key or seal parameters could not be read.
    #[error("sealed key store data is corrupt: {0}")]
    Corrupt(String),
    /// The crypto library refused an operation.
    #[error("crypto operation failed: {operation}")]
    Crypto {
        /// Which operation failed.
        operation: &'static str,
    },
    /// The key store configuration (a PKCS#11 URI, its PIN source) is unusable.
    #[error("key store configuration: {0}")]
    Config(String),
    /// A PKCS#11 token operation failed.
    #[error("PKCS#11 token: cannot {operation}: {detail}")]
    Token {
        /// What we were doing.
        operation: &'static str,
        /// What the token said.
        detail: String,
    },
    /// A token key that could be exported; custos refuses to use it.
    #[error(
        "key {key} can leave, or may once have left, the token (CKA_SENSITIVE or CKA_ALWAYS_SENSITIVE false, CKA_EXTRACTABLE true or CKA_NEVER_EXTRACTABLE false, or not a token object); custos refuses it"
    )]
    Exportable {
        /// The key's URI.
        key: String,
    },
    /// A key asked to do what its purpose forbids: a connection key making a
    /// certificate, or a CA key signing a caller's bytes.
    #[error("key purpose: {0}")]
    Purpose(String),
    /// Building a PKCS#12 bundle failed.
    #[error("cannot build PKCS#12 bundle: {0}")]
    Pkcs12(String),
}
