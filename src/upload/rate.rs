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

/// One upload's hold on its user's byte allowance: what it announced is reserved when it
/// starts, and every byte beyond that is charged as it arrives, so uploads running at the
/// same time share one allowance instead of each checking it alone before streaming. Dropped
/// without [`Charge::keep`] (the upload failed), it gives its bytes back: nothing was stored.
#[derive(Debug)]
pub struct Charge {
    window: Arc<Mutex<Window>>,
    /// The window's start when the bytes were charged: a later window owes nothing back.
    started: Instant,
    /// Bytes charged to that window.
    charged: u64,
    /// Bytes of the upload charged so far, whichever window took them.
    covered: u64,
    limit: u64,
    window_length: Duration,
    kept: bool,
}

impl Charge {
    /// Charges the upload up to `total` bytes so far; `Err(wait)` when that would go over
    /// the user's allowance, with how long until the window ends.
    pub fn cover(&mut self, total: u64) -> Result<(), Duration> {
        if total <= self.covered {
            return Ok(());
        }
        let more = total - self.covered;
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let wait = self
            .window_length
            .saturating_sub(w.started.elapsed())
            .max(Duration::from_millis(1));
        if w.started != self.started {
            // The window rolled over mid-upload: the rest is charged to the new one.
            self.started = w.started;
            self.charged = 0;
        }
        if self.limit > 0 && w.bytes.saturating_add(more) > self.limit {
            return Err(wait);
        }
        w.bytes = w.bytes.saturating_add(more);
        self.charged += more;
        self.covered = total;
        Ok(())
    }

    /// The upload was stored: its bytes stay counted.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.kept || self.charged == 0 {
            return;
        }
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.started == self.started {
            w.bytes = w.bytes.saturating_sub(self.charged);
        }
    }
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

    /// Counts an upload starting and reserves the `announced` bytes when the client said;
    /// `Err(wait)` when it would go over either limit, with how long until the window ends.
    /// Bytes beyond the reservation are charged as they arrive ([`Charge::cover`]).
    pub fn start(&self, user: &Arc<str>, announced: Option<u64>) -> Result<Charge, Duration> {
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
        let wait = s
            .window
            .saturating_sub(now.duration_since(w.started))
            .max(Duration::from_millis(1));
        let over_requests = s.requests > 0 && w.requests >= s.requests;
        let over_bytes = s.bytes > 0 && w.bytes.saturating_add(announced.unwrap_or(0)) > s.bytes;
        // A single upload larger than the whole allowance is left to the size limit: it
        // could never pass, so waiting would not help.
        let hopeless = announced.is_some_and(|n| s.bytes > 0 && n > s.bytes);
        if over_requests || (over_bytes && !hopeless) || (s.bytes > 0 && w.bytes >= s.bytes) {
            return Err(wait);
        }
        w.requests += 1;
        let started = w.started;
        drop(w);
        let mut charge = Charge {
            window,
            started,
            charged: 0,
            covered: 0,
            limit: s.bytes,
            window_length: s.window,
            kept: false,
        };
        if let Some(n) = announced.filter(|_| !hopeless) {
            charge.cover(n)?;
        }
        Ok(charge)
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
        limiter.start(&alice, Some(10)).unwrap().keep();
        limiter.start(&alice, None).unwrap().keep();
        limiter.start(&alice, None).unwrap().keep();
        let wait = limiter.start(&alice, None).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(50));
        // Bob has his own window; what one upload reserves, another cannot take.
        let first = limiter.start(&bob, Some(60)).unwrap();
        assert!(limiter.start(&bob, Some(50)).is_err());
        let mut second = limiter.start(&bob, None).unwrap();
        assert!(second.cover(40).is_ok());
        assert!(second.cover(41).is_err(), "charged while streaming");
        // A failed upload gives its bytes back; a stored one keeps them.
        drop(second);
        first.keep();
        let mut third = limiter.start(&bob, None).unwrap();
        assert!(third.cover(40).is_ok());
        third.keep();
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
