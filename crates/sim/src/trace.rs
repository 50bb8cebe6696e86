//! A bounded ring buffer of one-line event descriptions.
//!
//! Every processed event (and the interesting parts of what it caused) is
//! recorded here; a violation report carries the last lines so a failure can
//! be read without replaying it. The capacity bounds memory in long soaks.

use std::collections::VecDeque;

/// Default number of lines a violation report keeps.
pub const TRACE_LINES_DEFAULT: usize = 200;

/// The ring buffer. `capacity == 0` disables tracing (no formatting cost).
#[derive(Clone, Debug)]
pub struct Trace {
    lines: VecDeque<String>,
    capacity: usize,
    /// Lines ever pushed, including evicted ones.
    total: u64,
}

impl Trace {
    /// An empty trace keeping at most `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Trace {
            lines: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            total: 0,
        }
    }

    /// True if lines are recorded at all; callers skip formatting otherwise.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Appends a line, evicting the oldest one when full.
    pub fn push(&mut self, line: String) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
        self.total += 1;
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }

    /// Number of lines ever pushed.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept lines as a vector, oldest first.
    pub fn snapshot(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_capacity_lines() {
        let mut t = Trace::new(3);
        for i in 0..5 {
            t.push(format!("e{i}"));
        }
        assert_eq!(t.lines().collect::<Vec<_>>(), vec!["e2", "e3", "e4"]);
        assert_eq!(t.total(), 5);
        assert_eq!(t.snapshot().len(), 3);
    }

    #[test]
    fn zero_capacity_records_nothing() {
        let mut t = Trace::new(0);
        assert!(!t.enabled());
        t.push("x".into());
        assert_eq!(t.lines().count(), 0);
    }
}
