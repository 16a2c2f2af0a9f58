//! Reconnect delays: exponential, capped, jittered, reset only by `identified`.

use std::time::Duration;

/// The reconnect schedule's tunables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffSettings {
    /// The first nominal delay (`reconnect_initial_ms`).
    pub initial: Duration,
    /// The cap on the nominal delay (`reconnect_max_ms`).
    pub max: Duration,
    /// Fraction of the nominal delay that may be shaved off at random (`reconnect_jitter`, 0..=1).
    pub jitter: f64,
}

/// Exponential backoff: nominal delays initial, 2x, 4x ... capped at max; each actual delay is
/// drawn uniformly from `[nominal * (1 - jitter), nominal]` so a fleet does not reconnect in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    settings: BackoffSettings,
    failures: u32,
}

impl Backoff {
    /// A schedule at its start.
    pub fn new(settings: BackoffSettings) -> Backoff {
        Backoff {
            settings,
            failures: 0,
        }
    }

    /// How many delays have been drawn since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The nominal (un-jittered) delay the next draw will use.
    pub fn nominal(&self) -> Duration {
        let factor = 1u64.checked_shl(self.failures.min(40)).unwrap_or(u64::MAX);
        let initial = self.settings.initial.as_millis() as u64;
        Duration::from_millis(initial.saturating_mul(factor)).min(self.settings.max)
    }

    /// Draw the next delay, using `unit` (a sample from 0.0..1.0), and step the schedule.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let nominal = self.nominal();
        self.failures = self.failures.saturating_add(1);
        self.jittered(nominal, unit)
    }

    /// Draw a delay at the cap (after an auth failure: a token is not fixed in seconds).
    pub fn capped_delay(&mut self, unit: f64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.jittered(self.settings.max, unit)
    }

    /// Back to the first delay: called only once the hub has answered `identified`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    fn jittered(&self, nominal: Duration, unit: f64) -> Duration {
        let jitter = self.settings.jitter.clamp(0.0, 1.0);
        let unit = unit.clamp(0.0, 1.0);
        // unit 0 -> nominal * (1 - jitter), unit 1 -> nominal.
        nominal.mul_f64(1.0 - jitter + jitter * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(jitter: f64) -> BackoffSettings {
        BackoffSettings {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter,
        }
    }

    #[test]
    fn nominal_sequence_doubles_to_the_cap() {
        let mut b = Backoff::new(settings(0.0));
        let got: Vec<u64> = (0..9).map(|_| b.next_delay(0.5).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut b = Backoff::new(settings(0.5));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(500));
        assert_eq!(b.next_delay(1.0), Duration::from_secs(2));
        assert_eq!(b.next_delay(0.5), Duration::from_secs(3));
    }

    #[test]
    fn reset_starts_over_and_capped_uses_max() {
        let mut b = Backoff::new(settings(0.5));
        for _ in 0..5 {
            b.next_delay(1.0);
        }
        b.reset();
        assert_eq!(b.next_delay(1.0), Duration::from_secs(1));
        assert_eq!(b.capped_delay(0.0), Duration::from_secs(30));
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let mut b = Backoff::new(settings(0.0));
        for _ in 0..1000 {
            assert!(b.next_delay(0.3) <= Duration::from_secs(60));
        }
    }
}
