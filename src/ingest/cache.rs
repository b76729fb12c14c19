//! Bounded maps for the writer's id caches: two generations, so that what is used stays
//! and what is not used falls out, in O(1) and without a crate.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A map of at most `capacity` entries. New entries go to the young generation; when it is
/// full it becomes the old one (the previous old one is dropped), and an entry found in the
/// old generation moves back to the young. An entry used within the last `capacity / 2`
/// insertions is never dropped.
#[derive(Debug)]
pub(super) struct BoundedMap<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    generation_size: usize,
}

impl<K: Eq + Hash + Clone, V: Copy> BoundedMap<K, V> {
    pub fn new(capacity: usize) -> BoundedMap<K, V> {
        BoundedMap {
            young: HashMap::new(),
            old: HashMap::new(),
            generation_size: (capacity / 2).max(1),
        }
    }

    pub fn get<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if let Some(value) = self.young.get(key) {
            return Some(*value);
        }
        let (key, value) = self.old.remove_entry(key)?;
        self.insert(key, value);
        Some(value)
    }

    pub fn peek<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.young.get(key).or_else(|| self.old.get(key)).copied()
    }

    pub fn insert(&mut self, key: K, value: V) {
        if self.young.len() >= self.generation_size && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&key);
        self.young.insert(key, value);
    }

    pub fn remove<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.young.remove(key);
        self.old.remove(key);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

/// Ids known to exist, and names recently found missing, both bounded.
#[derive(Debug)]
pub(super) struct IdCache<T> {
    known: BoundedMap<String, T>,
    missing: BoundedMap<String, Instant>,
    negative_ttl: Duration,
}

impl<T: Copy> IdCache<T> {
    pub fn new(capacity: usize, negative_ttl: Duration) -> IdCache<T> {
        IdCache {
            known: BoundedMap::new(capacity),
            missing: BoundedMap::new(capacity),
            negative_ttl,
        }
    }

    pub fn get(&mut self, key: &str) -> Option<T> {
        self.known.get(key)
    }

    /// Records the answer to a lookup of `asked`: found ids are known, the rest missing.
    pub fn learn(&mut self, asked: &[String], found: Vec<(String, T)>, now: Instant) {
        for (key, id) in found {
            self.missing.remove(key.as_str());
            self.known.insert(key, id);
        }
        for key in asked {
            if self.known.peek(key.as_str()).is_none() {
                self.missing.insert(key.clone(), now);
            }
        }
    }

    /// Forgets that `key` was missing, so that the next message asks again.
    pub fn forget_missing(&mut self, key: &str) {
        self.missing.remove(key);
    }

    pub fn needs_lookup(&self, key: &str, now: Instant) -> bool {
        self.known.peek(key).is_none()
            && self
                .missing
                .peek(key)
                .is_none_or(|since| now.duration_since(since) > self.negative_ttl)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.known.len() + self.missing.len()
    }
}

/// A token bucket of registrations per minute, shared by the sessions of a process.
#[derive(Debug)]
pub(super) struct RateLimit {
    per_minute: u32,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    pub fn per_minute(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            state: Mutex::new((f64::from(per_minute), Instant::now())),
        }
    }

    /// Takes up to `wanted` tokens; returns how many were granted.
    pub fn take(&self, wanted: usize) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, refilled) = &mut *state;
        let now = Instant::now();
        let capacity = f64::from(self.per_minute);
        *tokens =
            (*tokens + now.duration_since(*refilled).as_secs_f64() * capacity / 60.0).min(capacity);
        *refilled = now;
        let granted = (*tokens).floor().min(wanted as f64).max(0.0);
        *tokens -= granted;
        granted as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_map_never_exceeds_its_capacity_and_keeps_what_is_used() {
        let mut map = BoundedMap::new(1000);
        map.insert("hot".to_string(), 0u32);
        for n in 0..1_000_000u32 {
            map.insert(format!("device-{n}"), n);
            assert!(map.len() <= 1000);
            if n % 100 == 0 {
                assert_eq!(map.get("hot"), Some(0), "a key in use is kept");
            }
        }
        assert_eq!(map.get("device-999999"), Some(999_999));
        assert_eq!(map.get("device-0"), None);
    }

    #[test]
    fn id_cache_is_bounded_for_a_million_random_devices() {
        let mut cache: IdCache<i32> = IdCache::new(10_000, Duration::from_secs(30));
        let now = Instant::now();
        for n in 0..1_000_000 {
            let name = format!("stranger-{n}");
            let asked = [name.clone()];
            let found = if n % 2 == 0 { vec![(name, n)] } else { vec![] };
            cache.learn(&asked, found, now);
        }
        assert!(cache.len() <= 20_000, "{} entries", cache.len());
    }

    #[test]
    fn rate_limit_grants_at_most_its_budget() {
        let limit = RateLimit::per_minute(100);
        assert_eq!(limit.take(60), 60);
        assert_eq!(limit.take(60), 40);
        assert_eq!(limit.take(1), 0);
    }
}
