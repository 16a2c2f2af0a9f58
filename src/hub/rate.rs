//! Per-agent token buckets of the hub's WebSocket rate limiter (§2.5).

use std::time::Duration;
use tokio::time::Instant;

/// A rate-limit tier; each has its own bucket per agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// `ping`, `list_agents`, `list_channels`, `status`, `channel_history`: 120/min.
    Light,
    /// Every other type except identify: 60/min.
    Normal,
    /// Re-identify on an identified socket: 10/min.
    Heavy,
}

impl Tier {
    /// The tier of a (valid) message type.
    pub fn of(msg_type: &str) -> Tier {
        match msg_type {
            "ping" | "list_agents" | "list_channels" | "status" | "channel_history" => Tier::Light,
            "identify" => Tier::Heavy,
            _ => Tier::Normal,
        }
    }

    /// Bucket capacity, also the refill per minute.
    pub fn capacity(self) -> u32 {
        match self {
            Tier::Light => 120,
            Tier::Normal => 60,
            Tier::Heavy => 10,
        }
    }

    /// The name used in `rate_limit_warning` and `rate_limited` frames.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Light => "light",
            Tier::Normal => "normal",
            Tier::Heavy => "heavy",
        }
    }
}

/// What the limiter decided for one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed, with plenty left.
    Allow,
    /// Allowed, but fewer than 20 % of tokens remain (`remaining` after this message).
    Warn { remaining: u32 },
    /// Denied; one token will be back in `retry_after_ms` (rounded up to the second).
    Deny { retry_after_ms: u64 },
}

/// A lazily refilled token bucket.
#[derive(Debug)]
pub struct Bucket {
    tier: Tier,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket for `tier`.
    pub fn new(tier: Tier, now: Instant) -> Bucket {
        Bucket {
            tier,
            tokens: f64::from(tier.capacity()),
            last: now,
        }
    }

    /// Takes one token if there is one, and says how that went.
    pub fn take(&mut self, now: Instant) -> Verdict {
        let cap = f64::from(self.tier.capacity());
        let per_ms = cap / 60_000.0;
        let elapsed = now.saturating_duration_since(self.last);
        self.tokens = (self.tokens + elapsed.as_millis() as f64 * per_ms).min(cap);
        self.last = now;
        if self.tokens < 1.0 {
            let wait_ms = ((1.0 - self.tokens) / per_ms).ceil();
            let secs = Duration::from_millis(wait_ms as u64).as_secs_f64().ceil() as u64;
            return Verdict::Deny {
                retry_after_ms: secs.max(1) * 1000,
            };
        }
        self.tokens -= 1.0;
        let remaining = self.tokens.floor() as u32;
        if f64::from(remaining) < cap * 0.2 {
            Verdict::Warn { remaining }
        } else {
            Verdict::Allow
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_bucket_matches_the_transcript() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Tier::Normal, t0);
        let verdicts: Vec<Verdict> = (0..70).map(|_| b.take(t0)).collect();
        assert!(verdicts[..48].iter().all(|v| *v == Verdict::Allow));
        assert_eq!(verdicts[48], Verdict::Warn { remaining: 11 });
        assert_eq!(verdicts[59], Verdict::Warn { remaining: 0 });
        assert!(verdicts[60..]
            .iter()
            .all(|v| *v == Verdict::Deny { retry_after_ms: 1000 }));
        let later = t0 + Duration::from_millis(3300);
        assert_eq!(b.take(later), Verdict::Warn { remaining: 2 });
    }
}
