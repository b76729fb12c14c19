//! Access control of `/api/v1` (DESIGN.md §API and console): every call presents an API key
//! (`Authorization: Bearer fwk_…`); only the key's SHA-256 is stored (`api_keys`), so a
//! leaked table gives no key. A key has one role — `admin`, `dispatcher`, `technician`
//! (bound to one technician: they see and change only their jobs, and another's answers
//! 404, not 403), `integration` (machine clients) — and its own rate limit (a token
//! bucket per key, `http.rate_limit` per second, bursts of `http.rate_burst`: 429 with
//! `Retry-After` beyond). A missing, unknown or revoked key is a 401; a role a route does
//! not serve, a 403. A serving process remembers the keys it checked while it hears of
//! revocations ([`known_keys`](super::known_keys)). Customers never hold keys: they answer through signed links. Keys are
//! made with `forewarn keys create --role …` and shown once.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::ApiState;
use super::known_keys::Known;
use super::problem::HttpError;
use crate::outreach::channels::hex;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Dispatcher,
    Technician,
    Integration,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::Admin,
        Role::Dispatcher,
        Role::Technician,
        Role::Integration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Dispatcher => "dispatcher",
            Role::Technician => "technician",
            Role::Integration => "integration",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// Who is calling: put in the request's extensions by [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: i64,
    pub name: String,
    pub role: Role,
    /// A technician key's technician.
    pub technician_id: Option<i32>,
}

impl Caller {
    /// Refuses (403) a caller whose role is not among `roles`; `what` names the action.
    pub fn allow(&self, roles: &[Role], what: &str) -> Result<(), HttpError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(HttpError::Forbidden {
                detail: format!(
                    "a {} key may not {what} (allowed: {})",
                    self.role.as_str(),
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
        }
    }

    /// Who did it, in the audit (`ticket_events.actor`).
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }
}

/// A new key: shown once; only `hash` is stored.
#[derive(Debug)]
pub struct NewKey {
    pub key: String,
    /// Its first characters, stored to tell keys apart.
    pub prefix: String,
    pub hash: [u8; 32],
}

/// A fresh key: `fwk_` and 256 random bits in hex.
pub fn new_key() -> Result<NewKey, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let key = format!("fwk_{}", hex(&bytes));
    Ok(NewKey {
        prefix: key[..12].to_string(),
        hash: hash_key(&key),
        key,
    })
}

/// What is stored of a key.
pub fn hash_key(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

/// The per-key rate limits of one process.
pub struct Limits {
    limiter: DefaultKeyedRateLimiter<i64>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits {
    /// `per_second` requests a second per key, bursts of `burst` (each at least 1).
    pub fn new(per_second: u32, burst: u32) -> Arc<Limits> {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Arc::new(Limits {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
        })
    }

    /// `Err(seconds to wait)` when the key is over its limit.
    fn check(&self, key_id: i64) -> Result<(), u64> {
        self.limiter.check_key(&key_id).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The key of `Authorization: Bearer <key>`.
fn bearer(headers: &HeaderMap) -> Result<&str, HttpError> {
    let unauthorized = |detail: &str| HttpError::Unauthorized {
        detail: detail.to_string(),
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("an API key is required: Authorization: Bearer <key>"))?
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not text"))?;
    let (scheme, key) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| unauthorized("Authorization must be Bearer <key>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(unauthorized("Authorization must be Bearer <key>"));
    }
    Ok(key.trim())
}

/// The middleware of every keyed route: the caller, or 401; within its rate, or 429.
pub async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    let key = bearer(request.headers())?;
    // An over-long header is no key of ours; no need to hash it.
    if key.len() > 200 {
        return Err(HttpError::Unauthorized {
            detail: "not a valid API key".to_string(),
        });
    }
    let hash = hash_key(key);
    let known = match state.known_keys.get(&hash) {
        Some(known) => known,
        None => {
            let epoch = state.known_keys.epoch();
            let row = state.store.api_key_by_hash(&hash).await?.ok_or_else(|| {
                HttpError::Unauthorized {
                    detail: "not a valid API key (unknown or revoked)".to_string(),
                }
            })?;
            let role = Role::parse(&row.role).ok_or_else(|| {
                HttpError::Internal(format!("key {} has role {:?}", row.id, row.role))
            })?;
            let known = Known {
                caller: Caller {
                    key_id: row.id,
                    name: row.name,
                    role,
                    technician_id: row.technician_id,
                },
                noted: Arc::new(AtomicI64::new(
                    row.last_used_at.map_or(0, |at| at.timestamp()),
                )),
                read_at: std::time::Instant::now(),
            };
            state.known_keys.keep(hash, known.clone(), epoch);
            known
        }
    };
    state
        .limits
        .check(known.caller.key_id)
        .map_err(|retry_after_s| HttpError::TooManyRequests { retry_after_s })?;
    // Its use noted at most once a minute, by one of the calls that find it stale.
    let now = chrono::Utc::now().timestamp();
    let noted = known.noted.load(Ordering::Relaxed);
    if now - noted > 60
        && known
            .noted
            .compare_exchange(noted, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let store = state.store.clone();
        let id = known.caller.key_id;
        tokio::spawn(async move {
            if let Err(error) = store.touch_api_key(id).await {
                tracing::debug!(%error, key = id, "could not note the key's use");
            }
        });
    }
    request.extensions_mut().insert(known.caller);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_only_their_hash_is_kept() {
        let a = new_key().unwrap();
        let b = new_key().unwrap();
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with("fwk_") && a.key.len() == 68, "{}", a.key);
        assert_eq!(a.hash, hash_key(&a.key));
        assert!(a.key.starts_with(&a.prefix));
    }

    #[test]
    fn a_key_past_its_burst_waits() {
        let limits = Limits::new(1, 3);
        for _ in 0..3 {
            assert!(limits.check(7).is_ok());
        }
        assert_eq!(limits.check(7), Err(1));
        // Another key has its own bucket.
        assert!(limits.check(8).is_ok());
    }

    #[test]
    fn only_bearer_keys_are_read() {
        let mut headers = HeaderMap::new();
        assert!(bearer(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(bearer(&headers).is_err());
        headers.insert(header::AUTHORIZATION, "bearer fwk_x".parse().unwrap());
        assert_eq!(bearer(&headers).unwrap(), "fwk_x");
    }
}
