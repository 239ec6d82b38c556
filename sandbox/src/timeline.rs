//! Where a run's time goes: named marks on CLOCK_MONOTONIC from the moment a run was asked
//! for, logged at debug level (`SANDPIT_LOG=sandbox=debug`) when the sandbox ends. Costs a
//! clock read per mark.

use crate::sys::monotonic_ns;

#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    /// When the sandbox was asked for: the origin of every mark.
    pub origin: i64,
    /// When the run was asked for: the origin of `setup_s` (later than `origin` for a
    /// sandbox prepared ahead).
    pub asked: i64,
    marks: Vec<(&'static str, i64)>,
}

impl Timeline {
    pub fn start() -> Timeline {
        let now = monotonic_ns();
        Timeline {
            origin: now,
            asked: now,
            marks: Vec::with_capacity(16),
        }
    }

    pub fn mark(&mut self, what: &'static str) {
        self.marks.push((what, monotonic_ns()));
    }

    /// The run is asked for now, in a sandbox prepared ahead.
    pub fn asked_now(&mut self) {
        self.mark("taken from the pool");
        self.asked = monotonic_ns();
    }

    /// A mark whose time another clock read gave (init's, on the same CLOCK_MONOTONIC).
    pub fn mark_at(&mut self, what: &'static str, at: i64) {
        self.marks.push((what, at));
    }

    /// "what +µs" for each mark, the time since the previous one.
    pub fn describe(&self) -> String {
        let mut previous = self.origin;
        let mut out = String::new();
        for (what, at) in &self.marks {
            out.push_str(&format!("{what} +{}µs; ", (at - previous) / 1000));
            previous = *at;
        }
        out.push_str(&format!("total {}µs", (previous - self.origin) / 1000));
        out
    }
}
