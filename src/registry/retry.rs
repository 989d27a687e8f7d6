//! How often, and after how long, a failed request to a registry is tried again: the
//! registry client's and the daemon's pusher's retries share this policy.

use std::time::Duration;

/// Retry policy for pushes: attempts and the first delay, doubled each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub const DEFAULT: Self = Self {
        attempts: 4,
        first_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(20),
    };

    /// The same attempts without waiting (the `ECR_BUILD_PUSH_NO_RETRY_DELAY` test switch).
    #[must_use]
    pub fn without_delays(self) -> Self {
        Self {
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..self
        }
    }

    /// The wait before attempt `attempt + 1`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.first_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay)
    }

    /// [`RetryPolicy::delay`], 50 to 100 % of it at random, so that requests failing
    /// together (throttled uploads) do not retry together.
    pub fn jittered_delay(&self, attempt: u32) -> Duration {
        #[allow(clippy::cast_precision_loss)]
        let factor = 0.5 + (crate::random::u64() % 1024) as f64 / 2048.0;
        self.delay(attempt).mul_f64(factor)
    }

    /// How many attempts a request gets: more when the registry throttles it.
    pub fn attempts_for(&self, throttled: bool) -> u32 {
        if throttled {
            self.attempts
                .max(crate::registry::rules::THROTTLED_ATTEMPTS)
        } else {
            self.attempts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backoff doubles from the first delay and stops at the cap; the test switch removes it.
    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::DEFAULT;
        assert_eq!(policy.delay(1), Duration::from_secs(2));
        assert_eq!(policy.delay(2), Duration::from_secs(4));
        assert_eq!(policy.delay(10), Duration::from_secs(20));
        assert_eq!(policy.without_delays().delay(3), Duration::ZERO);
    }
}
