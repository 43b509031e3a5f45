//! Exponential backoff between delivery attempts, with jitter so that a fleet of daemons does not
//! retry against a recovering Alertmanager in lockstep.

use std::time::{Duration, SystemTime};

/// The first pause.
const FIRST: Duration = Duration::from_millis(250);
/// No pause is longer.
const CAP: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Backoff {
    /// The pause before the next attempt: the nominal pause (doubling each time, up to 30 s)
    /// scaled by a factor between 0.75 and 1.25.
    pub fn next_pause(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(CAP);
        nominal.mul_f64(0.75 + 0.5 * jitter())
    }
}

/// A number in [0, 1) that differs between hosts and attempts; not a secure random number,
/// which spreading retries does not need.
fn jitter() -> f64 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.subsec_nanos());
    // A multiplicative hash spreads the clock's low-entropy bits over the whole range.
    f64::from(nanos.wrapping_mul(0x9E37_79B9)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_within_the_jitter() {
        let mut backoff = Backoff::default();
        let mut nominal = FIRST;
        for _ in 0..12 {
            let pause = backoff.next_pause();
            assert!(pause >= nominal.mul_f64(0.75) && pause <= nominal.mul_f64(1.25), "{pause:?} vs {nominal:?}");
            nominal = (nominal * 2).min(CAP);
        }
        assert_eq!(nominal, CAP);
    }
}
