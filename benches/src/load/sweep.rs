//! The search for the highest sustained rate ([`Sweep`]): a geometric ramp until a run
//! fails, then bisection between the last rate that passed and the first that failed.
//!
//! Sans-IO like the rest of quichat's logic: the sweep only proposes rates
//! ([`Sweep::next_rate`]) and is told how each did ([`Sweep::record`]); the caller runs
//! them. So the search itself is tested against a made-up threshold, without a server.

/// How the sweep searches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SweepPlan {
    /// The first rate tried, messages per second.
    pub start_rate: f64,
    /// Each ramp step multiplies (or, while failing from the start, divides) by this.
    pub factor: f64,
    /// Stop bisecting once the failing rate is within this fraction above the passing one
    /// (0.05: the answer is within 5 %).
    pub resolution: f64,
    /// Most runs in all, whatever happens.
    pub runs_max: usize,
    /// Below this rate the sweep gives up going down.
    pub rate_min: f64,
}

/// The search state: the best rate that passed and the lowest that failed so far.
#[derive(Clone, Debug)]
pub struct Sweep {
    plan: SweepPlan,
    passed: Option<f64>,
    failed: Option<f64>,
    runs: usize,
}

impl Sweep {
    /// A sweep that has run nothing yet.
    pub fn new(plan: SweepPlan) -> Self {
        Self {
            plan,
            passed: None,
            failed: None,
            runs: 0,
        }
    }

    /// The next rate to run, or `None` when the search is done.
    pub fn next_rate(&self) -> Option<f64> {
        if self.runs >= self.plan.runs_max {
            return None;
        }
        let next = match (self.passed, self.failed) {
            (None, None) => self.plan.start_rate,
            (Some(passed), None) => passed * self.plan.factor,
            (None, Some(failed)) => failed / self.plan.factor,
            (Some(passed), Some(failed)) => {
                if failed <= passed * (1.0 + self.plan.resolution) {
                    return None;
                }
                // The geometric midpoint (the ramp is geometric, so is the uncertainty),
                // rounded to three significant digits for readable tables when that
                // keeps it strictly inside the bracket.
                let mid = (passed * failed).sqrt();
                let rounded = round_significant(mid, 3);
                if passed < rounded && rounded < failed {
                    rounded
                } else {
                    mid
                }
            }
        };
        (next >= self.plan.rate_min).then_some(next)
    }

    /// Records how a run at `rate` did.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.runs += 1;
        if passed {
            self.passed = Some(self.passed.map_or(rate, |p| p.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
    }

    /// The highest rate that passed.
    pub fn best(&self) -> Option<f64> {
        self.passed
    }

    /// The lowest rate that failed.
    pub fn first_failed(&self) -> Option<f64> {
        self.failed
    }
}

/// `x` rounded to `digits` significant decimal digits.
fn round_significant(x: f64, digits: i32) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.log10().floor() as i32);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: SweepPlan = SweepPlan {
        start_rate: 1000.0,
        factor: 2.0,
        resolution: 0.05,
        runs_max: 20,
        rate_min: 1.0,
    };

    /// Runs the sweep against a system that sustains exactly `capacity`.
    fn sweep_against(plan: SweepPlan, capacity: f64) -> (Sweep, Vec<f64>) {
        let mut sweep = Sweep::new(plan);
        let mut rates = Vec::new();
        while let Some(rate) = sweep.next_rate() {
            rates.push(rate);
            sweep.record(rate, rate <= capacity);
        }
        (sweep, rates)
    }

    #[test]
    fn the_sweep_ramps_up_then_brackets_the_capacity_within_the_resolution() {
        let (sweep, rates) = sweep_against(PLAN, 11_000.0);
        // Ramp: 1000, 2000, 4000, 8000, 16000 (fails), then bisection.
        assert_eq!(&rates[..5], &[1000.0, 2000.0, 4000.0, 8000.0, 16000.0]);
        let best = sweep.best().unwrap();
        let failed = sweep.first_failed().unwrap();
        assert!(best <= 11_000.0 && failed > 11_000.0);
        assert!(failed <= best * 1.05, "{best} .. {failed}");
        assert!(rates.len() < PLAN.runs_max, "{rates:?}");
        // Bisection proposes round numbers: 8000·16000 → 11300, not 11313.7…
        assert_eq!(rates[5], 11_300.0);
    }

    #[test]
    fn a_system_failing_at_the_start_rate_is_searched_downwards() {
        let (sweep, rates) = sweep_against(PLAN, 300.0);
        assert_eq!(&rates[..3], &[1000.0, 500.0, 250.0]);
        let best = sweep.best().unwrap();
        assert!(best <= 300.0 && sweep.first_failed().unwrap() <= best * 1.05);
    }

    #[test]
    fn the_number_of_runs_is_bounded_whatever_the_results() {
        // A system that never fails must not make the sweep run for ever…
        let plan = SweepPlan {
            runs_max: 6,
            ..PLAN
        };
        let (sweep, rates) = sweep_against(plan, f64::INFINITY);
        assert_eq!(rates.len(), 6);
        assert_eq!(sweep.best(), Some(32_000.0));
        // …nor one that always fails: it stops at the minimum rate.
        let (sweep, rates) = sweep_against(PLAN, 0.0);
        assert!(sweep.best().is_none());
        assert!(rates.iter().all(|&r| r >= PLAN.rate_min));
        assert!(rates.len() <= PLAN.runs_max);
    }
}
