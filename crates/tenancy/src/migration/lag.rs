//! Lag, throughput, trend and ETA from periodic samples.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A sample of progress.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    lag_keys: u64,
    shipped_keys: u64,
}

/// Keeps the last ~30 s of samples to derive rates and a trend.
#[derive(Debug, Default)]
pub struct LagTracker {
    samples: VecDeque<Sample>,
}

/// Direction of the lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trend {
    Increasing,
    Decreasing,
    Stable,
}

impl Trend {
    pub fn name(self) -> &'static str {
        match self {
            Trend::Increasing => "increasing",
            Trend::Decreasing => "decreasing",
            Trend::Stable => "stable",
        }
    }
}

const WINDOW: Duration = Duration::from_secs(30);

impl LagTracker {
    /// Records a sample (at most one per 100 ms is kept).
    pub fn sample(&mut self, lag_keys: u64, shipped_keys: u64) {
        let now = Instant::now();
        if let Some(last) = self.samples.back()
            && now.duration_since(last.at) < Duration::from_millis(100)
        {
            return;
        }
        self.samples.push_back(Sample {
            at: now,
            lag_keys,
            shipped_keys,
        });
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The sample closest to `ago` before the newest one.
    fn back_by(&self, ago: Duration) -> Option<(&Sample, &Sample)> {
        let last = self.samples.back()?;
        let old = self
            .samples
            .iter()
            .find(|s| last.at.duration_since(s.at) <= ago)?;
        (last.at.duration_since(old.at) > Duration::from_millis(200)).then_some((old, last))
    }

    /// Keys shipped per second over the last few seconds.
    pub fn keys_per_sec(&self) -> f64 {
        match self.back_by(Duration::from_secs(5)) {
            Some((old, last)) => {
                let dt = last.at.duration_since(old.at).as_secs_f64();
                (last.shipped_keys.saturating_sub(old.shipped_keys)) as f64 / dt
            }
            None => 0.0,
        }
    }

    /// Lag keys per second of change (negative = shrinking).
    pub fn lag_rate(&self) -> f64 {
        match self.back_by(Duration::from_secs(10)) {
            Some((old, last)) => {
                let dt = last.at.duration_since(old.at).as_secs_f64();
                (last.lag_keys as f64 - old.lag_keys as f64) / dt
            }
            None => 0.0,
        }
    }

    pub fn trend(&self) -> Trend {
        let Some((old, last)) = self.back_by(Duration::from_secs(10)) else {
            return Trend::Stable;
        };
        // Small absolute changes are noise, not a trend.
        let delta = last.lag_keys as f64 - old.lag_keys as f64;
        let base = (old.lag_keys.max(last.lag_keys) as f64).max(10.0);
        if delta > 0.1 * base {
            Trend::Increasing
        } else if delta < -0.1 * base {
            Trend::Decreasing
        } else {
            Trend::Stable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_tracker_is_neutral() {
        let t = LagTracker::default();
        assert_eq!(t.keys_per_sec(), 0.0);
        assert_eq!(t.trend(), Trend::Stable);
    }
}
