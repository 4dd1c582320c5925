//! The per-user upload rate limit: uploads started and bytes stored per window.
//!
//! A fixed window per user, starting with that user's first upload in it: cheap (one small
//! entry per active user, in a bounded cache that forgets users after a quiet window) and
//! exact enough for abuse control.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct RateSettings {
    pub window: Duration,
    /// 0: no limit.
    pub requests: u32,
    /// 0: no limit.
    pub bytes: u64,
    pub max_users: u64,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    requests: u32,
    bytes: u64,
}

/// What one upload may still store in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// `None`: no byte limit.
    pub bytes: Option<u64>,
    /// Until the window ends.
    pub wait: Duration,
}

pub struct RateLimiter {
    settings: RateSettings,
    users: moka::sync::Cache<Arc<str>, Arc<Mutex<Window>>>,
}

impl RateLimiter {
    pub fn new(settings: RateSettings) -> Self {
        Self {
            settings,
            users: moka::sync::Cache::builder()
                .max_capacity(settings.max_users)
                .time_to_idle(settings.window)
                .build(),
        }
    }

    fn window(&self, user: &Arc<str>) -> Arc<Mutex<Window>> {
        self.users.get_with_by_ref(user, || {
            Arc::new(Mutex::new(Window {
                started: Instant::now(),
                requests: 0,
                bytes: 0,
            }))
        })
    }

    /// Counts an upload starting, of `announced` bytes when the client said; `Err(wait)` when
    /// it would go over either limit, with how long until the window ends. What it may still
    /// send is the [`Allowance`], for an upload whose length was not announced.
    pub fn start(&self, user: &Arc<str>, announced: Option<u64>) -> Result<Allowance, Duration> {
        let s = self.settings;
        let window = self.window(user);
        let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(w.started) >= s.window {
            *w = Window {
                started: now,
                requests: 0,
                bytes: 0,
            };
        }
        let wait = s.window.saturating_sub(now.duration_since(w.started));
        let over_requests = s.requests > 0 && w.requests >= s.requests;
        let over_bytes = s.bytes > 0 && w.bytes.saturating_add(announced.unwrap_or(0)) > s.bytes;
        // A single upload larger than the whole allowance is left to the size limit: it
        // could never pass, so waiting would not help.
        let hopeless = announced.is_some_and(|n| s.bytes > 0 && n > s.bytes);
        if over_requests || (over_bytes && !hopeless) || (s.bytes > 0 && w.bytes >= s.bytes) {
            return Err(wait.max(Duration::from_millis(1)));
        }
        w.requests += 1;
        Ok(Allowance {
            bytes: (s.bytes > 0).then(|| s.bytes - w.bytes),
            wait: wait.max(Duration::from_millis(1)),
        })
    }

    /// Counts bytes stored for `user`.
    pub fn charge(&self, user: &Arc<str>, bytes: u64) {
        let window = self.window(user);
        let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
        w.bytes = w.bytes.saturating_add(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_bytes_per_window() {
        let limiter = RateLimiter::new(RateSettings {
            window: Duration::from_secs(60),
            requests: 3,
            bytes: 100,
            max_users: 10,
        });
        let (alice, bob): (Arc<str>, Arc<str>) = ("@a:x".into(), "@b:x".into());
        assert!(limiter.start(&alice, Some(10)).is_ok());
        assert!(limiter.start(&alice, None).is_ok());
        assert!(limiter.start(&alice, None).is_ok());
        let wait = limiter.start(&alice, None).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50));
        // Bob has his own window.
        assert_eq!(limiter.start(&bob, Some(60)).unwrap().bytes, Some(100));
        limiter.charge(&bob, 60);
        assert_eq!(limiter.start(&bob, None).unwrap().bytes, Some(40));
        assert!(limiter.start(&bob, Some(50)).is_err());
        limiter.charge(&bob, 40);
        assert!(limiter.start(&bob, None).is_err());
    }

    #[test]
    fn the_window_ends() {
        let limiter = RateLimiter::new(RateSettings {
            window: Duration::from_millis(50),
            requests: 1,
            bytes: 0,
            max_users: 10,
        });
        let user: Arc<str> = "@a:x".into();
        assert!(limiter.start(&user, None).is_ok());
        assert!(limiter.start(&user, None).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(limiter.start(&user, None).is_ok());
    }
}
