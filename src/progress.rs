//! Where the engine layer's progress goes: the build's output and the daemon's push
//! lines, in sections. The engine neither prints nor knows the runner protocol; it is
//! given a [`Progress`], which in a run is the [`crate::runner::Runner`] (collapsible
//! groups, workflow commands stopped around untrusted build output), and in a test
//! anything that records.

/// A sink for progress lines and the sections they go in.
pub trait Progress: Sync {
    /// One line of output.
    fn line(&self, line: &str);

    /// Opens a section titled `title` (a collapsible group of the log), until the guard
    /// is dropped.
    fn group(&self, title: &str) -> Guard;

    /// Marks the lines that follow, until the guard is dropped, as untrusted text (build
    /// output): a line that looks like a workflow command must not act as one.
    fn untrusted(&self) -> Guard;

    /// A warning the reader must see (an annotation in a run).
    fn warning(&self, message: &str);
}

/// Ends what a [`Progress`] opened when it is dropped, so an early return cannot leave a
/// section open.
#[must_use = "the section ends when this is dropped"]
pub struct Guard {
    _end: Box<dyn Send>,
}

impl Guard {
    /// A guard that drops `end` (whose `Drop` ends the section) when it is dropped.
    pub fn new(end: impl Send + 'static) -> Self {
        Self {
            _end: Box::new(end),
        }
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Guard")
    }
}

/// A [`Progress`] that keeps what it is given, for tests: lines as they are, sections as
/// `group <title>` … `end group`, untrusted text as `untrusted` … `end untrusted`.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[cfg(test)]
impl Recorder {
    /// Everything recorded so far, in order.
    pub fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }

    fn record(&self, event: String) {
        self.events.lock().unwrap().push(event);
    }

    fn guard(&self, end: &str) -> Guard {
        /// Records `end` when dropped.
        struct End(Recorder, String);
        impl Drop for End {
            fn drop(&mut self) {
                self.0.record(std::mem::take(&mut self.1));
            }
        }
        Guard::new(End(self.clone(), end.to_string()))
    }
}

#[cfg(test)]
impl Progress for Recorder {
    fn line(&self, line: &str) {
        self.record(line.to_string());
    }

    fn group(&self, title: &str) -> Guard {
        self.record(format!("group {title}"));
        self.guard("end group")
    }

    fn untrusted(&self) -> Guard {
        self.record("untrusted".into());
        self.guard("end untrusted")
    }

    fn warning(&self, message: &str) {
        self.record(format!("warning {message}"));
    }
}
