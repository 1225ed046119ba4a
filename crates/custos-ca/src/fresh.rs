//! Reads reused for at most a second.
//!
//! The hot API paths (a bearer token, a custodied connection's active key and
//! policy) read the same rows on every request. A [`Fresh`] map keeps what
//! was read for [`FRESH_FOR`]: a change made on another node (a token or a
//! certificate revoked, a key switched) is seen here within that time, which
//! keeps the promise custos makes for revocation everywhere (a second). A change made
//! through this process clears the map at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a read is reused: short enough that, with the request that sees
/// the change, a revocation takes effect everywhere within a second.
pub const FRESH_FOR: Duration = Duration::from_millis(750);

/// Entries kept before the map starts over: bounds memory whatever the
/// number of distinct keys callers present.
const MAX_ENTRIES: usize = 100_000;

/// A map of reads, each reused for at most [`FRESH_FOR`].
pub(crate) struct Fresh<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for Fresh<K, V> {
    fn default() -> Self {
        Fresh { entries: Mutex::new(HashMap::new()) }
    }
}

impl<K: Eq + Hash, V: Clone> Fresh<K, V> {
    /// The value read for `key` less than [`FRESH_FOR`] ago, if any.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        entries.get(key).filter(|(at, _)| at.elapsed() < FRESH_FOR).map(|(_, v)| v.clone())
    }

    /// Remembers `value`, read just now, for `key`.
    pub(crate) fn put(&self, key: K, value: V) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, (Instant::now(), value));
        }
    }

    /// Forgets everything: something changed through this process.
    pub(crate) fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_clear() {
        let f: Fresh<&str, u32> = Fresh::default();
        f.put("a", 1);
        assert_eq!(f.get(&"a"), Some(1));
        f.clear();
        assert_eq!(f.get(&"a"), None);
        f.entries.lock().expect("lock").insert("b", (Instant::now() - FRESH_FOR, 2));
        assert_eq!(f.get(&"b"), None, "a read as old as FRESH_FOR is not reused");
    }
}
