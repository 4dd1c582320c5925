//! How much each gateway is to be trusted with the next request: a score moved by outcomes,
//! and a bench for gateways caught serving bad blocks.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Scores stay in a small band so a long-good gateway that turns bad drops within a few
/// failures.
const MAX_SCORE: i32 = 10;
const MIN_SCORE: i32 = -10;

#[derive(Debug, Default)]
pub struct Health {
    score: AtomicI32,
    benched_until: Mutex<Option<Instant>>,
}

impl Health {
    pub fn success(&self) {
        self.nudge(1);
    }

    pub fn failure(&self) {
        self.nudge(-2);
    }

    /// Caught lying: asked last for `time`, and starts over with the worst score.
    pub fn bench(&self, time: Duration) {
        self.score.store(MIN_SCORE, Ordering::Relaxed);
        *self.benched_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + time);
    }

    pub fn score(&self) -> i32 {
        self.score.load(Ordering::Relaxed)
    }

    pub fn is_benched(&self) -> bool {
        let mut until = self.benched_until.lock().unwrap_or_else(|e| e.into_inner());
        match *until {
            Some(t) if t > Instant::now() => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Sort key: healthy before benched, then higher score first.
    pub fn rank(&self) -> (bool, i32) {
        (self.is_benched(), -self.score())
    }

    fn nudge(&self, by: i32) {
        let _ = self
            .score
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((s + by).clamp(MIN_SCORE, MAX_SCORE))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_move_the_rank() {
        let good = Health::default();
        let bad = Health::default();
        good.success();
        bad.failure();
        assert!(good.rank() < bad.rank());
        let liar = Health::default();
        liar.bench(Duration::from_secs(60));
        assert!(liar.is_benched());
        assert!(
            bad.rank() < liar.rank(),
            "benched sorts after any unbenched gateway"
        );
        let served = Health::default();
        served.bench(Duration::ZERO);
        assert!(!served.is_benched(), "a bench ends");
    }
}
