//! The keys a serving process has checked, remembered so that a call costs no database
//! round trip for its key (`forewarn bench api`: one query of two for a page of tickets).
//!
//! Remembering is safe only while the process hears of revocations: [`listen`] holds a
//! connection listening on [`KEYS_CHANNEL`](crate::store::KEYS_CHANNEL) and forgets every
//! key on each notification (a key revoked, deleted or changed in what it may do,
//! migration 0016). While it does not listen — before it has started, after the connection
//! was lost, until it listens again — nothing is remembered and every call reads its key
//! from the database. A key read from the database is remembered only if nothing was heard
//! (and listening did not start or stop) since the read began, so a revocation that commits
//! during the read is never papered over. A key is remembered for at most [`MAX_AGE`]:
//! a listening connection can die without a word (a half-open TCP connection behind a NAT
//! or a failover), and this bounds how long a revocation can go unheard then. At most
//! [`CAPACITY`] keys are held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::auth::Caller;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Keys held at most; past it, all are forgotten and remembered again as they call.
pub const CAPACITY: usize = 10_000;

/// How long a key is remembered after it was read from the database.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// A remembered key.
#[derive(Debug, Clone)]
pub struct Known {
    pub caller: Caller,
    /// When its use was last noted (`api_keys.last_used_at`), Unix seconds.
    pub noted: Arc<AtomicI64>,
    /// When it was read from the database.
    pub read_at: Instant,
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct KnownKeys {
    keys: RwLock<HashMap<[u8; 32], Known>>,
    /// Moved on every forgetting; a read that began under another epoch is not kept.
    epoch: AtomicU64,
    listening: AtomicBool,
}

impl KnownKeys {
    /// The key of this hash, if remembered (and the process is listening).
    pub fn get(&self, hash: &[u8; 32]) -> Option<Known> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        self.keys
            .read()
            .ok()?
            .get(hash)
            .filter(|known| known.read_at.elapsed() < MAX_AGE)
            .cloned()
    }

    /// To call before reading a key from the database, and hand to [`KnownKeys::keep`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Remembers a key read since `epoch`, unless something was heard meanwhile.
    pub fn keep(&self, hash: [u8; 32], known: Known, epoch: u64) {
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut keys) = self.keys.write() else {
            return;
        };
        // Checked under the lock [`KnownKeys::forget`] takes too.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if keys.len() >= CAPACITY {
            keys.clear();
        }
        keys.insert(hash, known);
    }

    /// Forgets every key.
    fn forget(&self) {
        // The epoch moves under the lock [`KnownKeys::keep`] checks it under.
        let keys = self.keys.write();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut keys) = keys {
            keys.clear();
        }
    }

    fn set_listening(&self, listening: bool) {
        self.forget();
        self.listening.store(listening, Ordering::Release);
        self.forget();
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.keys.read().map_or(0, |keys| keys.len())
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Listens for key changes until `shutdown`, forgetting every key on each; a lost
/// connection stops the remembering until it listens again (after a second).
pub async fn listen(store: Store, known: Arc<KnownKeys>, mut shutdown: Shutdown) {
    loop {
        match store.listen_keys().await {
            Ok(mut listener) => {
                known.set_listening(true);
                loop {
                    tokio::select! {
                        () = shutdown.wait() => {
                            known.set_listening(false);
                            return;
                        }
                        next = listener.next() => match next {
                            Ok(_) => known.forget(),
                            Err(error) => {
                                tracing::warn!(%error, "API keys: listening connection lost; keys are read from the database until it is back");
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "API keys: cannot listen for revocations"),
        }
        known.set_listening(false);
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::Role;

    fn known(id: i64) -> Known {
        Known {
            caller: Caller {
                key_id: id,
                name: format!("k{id}"),
                role: Role::Admin,
                technician_id: None,
            },
            noted: Arc::default(),
            read_at: Instant::now(),
        }
    }

    #[test]
    fn nothing_is_remembered_unless_listening() {
        let keys = KnownKeys::default();
        let epoch = keys.epoch();
        keys.keep([1; 32], known(1), epoch);
        assert!(keys.get(&[1; 32]).is_none());
        keys.set_listening(true);
        let epoch = keys.epoch();
        keys.keep([1; 32], known(1), epoch);
        assert_eq!(keys.get(&[1; 32]).unwrap().caller.key_id, 1);
        keys.set_listening(false);
        assert!(keys.get(&[1; 32]).is_none());
        assert!(keys.is_empty());
    }

    #[test]
    fn a_read_that_overlapped_a_change_is_not_kept() {
        let keys = KnownKeys::default();
        keys.set_listening(true);
        let epoch = keys.epoch();
        // A revocation heard while the key was being read.
        keys.forget();
        keys.keep([2; 32], known(2), epoch);
        assert!(keys.get(&[2; 32]).is_none());
    }

    #[test]
    fn keys_are_remembered_for_a_while_only() {
        let keys = KnownKeys::default();
        keys.set_listening(true);
        let old = Known {
            read_at: Instant::now() - MAX_AGE - Duration::from_secs(1),
            ..known(3)
        };
        keys.keep([3; 32], old, keys.epoch());
        assert!(keys.get(&[3; 32]).is_none());
    }

    #[test]
    fn held_keys_are_bounded() {
        let keys = KnownKeys::default();
        keys.set_listening(true);
        for i in 0..(CAPACITY + 5) {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            keys.keep(hash, known(i as i64), keys.epoch());
        }
        assert!(keys.len() <= CAPACITY, "{}", keys.len());
    }
}
