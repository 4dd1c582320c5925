//! Why content could not be had, shared by every module that fetches (gateways, ranges,
//! verified walks). How a client sees each case is decided in `error`.

/// Why content could not be had. Cloned to every request waiting on the same fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no gateway has this content")]
    NotFound,
    #[error("the content did not arrive in time")]
    Timeout,
    #[error("the content is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("gateway error: {0}")]
    Upstream(String),
    /// A trustless gateway's bytes did not match the CID.
    #[error("verification failed: {0}")]
    Unverified(String),
    /// Verified, and not a file: a directory or other DAG is never served as media.
    #[error("this CID is {0}, not a file")]
    NotAFile(String),
    /// The CID uses a hash function outside the allow-list, and no trusted gateway is set.
    #[error("{0}")]
    Unsupported(String),
    /// Verified, and its DAG needs far more blocks or bytes than its file's size justifies
    /// (or than `retrieval.max_dag_blocks`): refused rather than walked.
    #[error("{0}")]
    TooCostly(String),
    /// Not fetched: the bytes held by running fetches are at `cache.max_fetch_bytes`.
    #[error("too many bytes are being fetched right now")]
    Busy,
}

impl FetchError {
    /// How telling a failure is when every gateway failed: a timeout says more than "not
    /// found" (the content may exist), a broken or lying gateway more than both; what the
    /// content itself proves (too large, not a file, unverifiable hash) settles it.
    pub fn weight(&self) -> u8 {
        match self {
            FetchError::NotFound | FetchError::Busy => 0,
            FetchError::Timeout => 1,
            FetchError::Upstream(_) => 2,
            FetchError::Unverified(_) => 3,
            FetchError::Unsupported(_) => 4,
            FetchError::TooLarge { .. } | FetchError::NotAFile(_) | FetchError::TooCostly(_) => 5,
        }
    }

    /// A failure that is the content's, not the gateway's: asking others cannot help.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            FetchError::TooLarge { .. } | FetchError::NotAFile(_) | FetchError::TooCostly(_)
        )
    }
}
