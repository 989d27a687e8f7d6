//! The GitHub runner protocol: workflow commands (masks, groups, annotations), the
//! outputs file and the job summary. Outside a runner the same calls degrade to plain
//! text: outputs go to stdout as `name=value` lines and annotations become messages.
//!
//! Workflow commands and logs go to stderr: the runner (and act) read commands from both
//! streams, and keeping stdout for data means `ecr-build-push ... > outputs.env` works
//! by hand.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

/// Where the runner protocol writes.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    pub in_actions: bool,
    pub output_file: Option<PathBuf>,
    pub summary_file: Option<PathBuf>,
    /// Warnings given while workflow commands are stopped ([`Runner::untrusted`]): the
    /// runner would not turn them into annotations then, so they wait for the end of it.
    stopped: std::sync::Arc<std::sync::Mutex<Stopped>>,
    /// The workspace: annotations name files relative to it, as the repository does.
    workspace: PathBuf,
}

impl Runner {
    /// A runner (`in_actions`: GitHub's runner protocol, else plain lines) writing the
    /// outputs and the job summary to these files, in `workspace`.
    pub fn new(
        in_actions: bool,
        output_file: Option<PathBuf>,
        summary_file: Option<PathBuf>,
        workspace: PathBuf,
    ) -> Self {
        Self {
            in_actions,
            output_file,
            summary_file,
            stopped: std::sync::Arc::default(),
            workspace,
        }
    }

    /// `file` as an annotation names it: relative to the workspace, without `./`.
    /// `file` relative to the workspace (as annotations and the provenance name it).
    pub fn annotated(&self, file: &std::path::Path) -> String {
        let relative: PathBuf = file
            .strip_prefix(&self.workspace)
            .unwrap_or(file)
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        relative.display().to_string()
    }
}

/// How many untrusted sections are open, and the warnings that wait for them to end.
#[derive(Debug, Default)]
struct Stopped {
    open: usize,
    warnings: Vec<Warning>,
}

/// A warning annotation: its message, and the file and line it points at, if any.
#[derive(Debug, Clone)]
struct Warning {
    file: Option<String>,
    line: Option<u32>,
    message: String,
}

impl Runner {
    /// Hides `secret` in every later log line. Must be called before the value could be
    /// printed anywhere.
    pub fn add_mask(&self, secret: &str) {
        if self.in_actions && !secret.is_empty() {
            command("add-mask", &[], secret);
        }
    }

    /// Starts a collapsible section of the log.
    pub fn group(&self, title: &str) -> Group {
        if self.in_actions {
            command("group", &[], title);
        } else {
            eprintln!("==> {title}");
        }
        Group {
            in_actions: self.in_actions,
        }
    }

    /// Prints untrusted text (build output) so the runner does not act on workflow
    /// commands inside it: `::stop-commands::<token>` turns command processing off until
    /// the token is echoed back.
    pub fn untrusted(&self) -> Untrusted {
        let token = self.in_actions.then(|| {
            let token = crate::random::token();
            command("stop-commands", &[], &token);
            token
        });
        self.stopped_state().open += 1;
        Untrusted {
            token,
            runner: self.clone(),
        }
    }

    fn stopped_state(&self) -> std::sync::MutexGuard<'_, Stopped> {
        self.stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The one error annotation of a failed run.
    pub fn error(&self, title: &str, message: &str) {
        if self.in_actions {
            command("error", &[("title", title)], message);
        } else {
            eprintln!("error: {message}");
        }
    }

    /// An error annotation pointing at a line of a file (a Dockerfile).
    pub fn error_at(&self, file: &std::path::Path, line: Option<u32>, title: &str, message: &str) {
        let file = self.annotated(file);
        let file = file.as_str();
        if self.in_actions {
            let line = line.map(|l| l.to_string());
            let mut props = vec![("file", file), ("title", title)];
            if let Some(line) = &line {
                props.push(("line", line));
            }
            command("error", &props, message);
        } else {
            match line {
                Some(line) => eprintln!("error: {file}:{line}: {message}"),
                None => eprintln!("error: {file}: {message}"),
            }
        }
    }

    /// A warning annotation; while workflow commands are stopped, it is given when the
    /// last untrusted section ends.
    pub fn warning(&self, message: &str) {
        self.give(Warning {
            file: None,
            line: None,
            message: message.to_string(),
        });
    }

    /// A warning annotation pointing at a line of a file (a Dockerfile).
    pub fn warning_at(&self, file: &std::path::Path, line: Option<u32>, message: &str) {
        self.give(Warning {
            file: Some(self.annotated(file)),
            line,
            message: message.to_string(),
        });
    }

    fn give(&self, warning: Warning) {
        if !self.in_actions {
            match (&warning.file, warning.line) {
                (Some(file), Some(line)) => {
                    eprintln!("warning: {file}:{line}: {}", warning.message);
                }
                (Some(file), None) => eprintln!("warning: {file}: {}", warning.message),
                _ => eprintln!("warning: {}", warning.message),
            }
            return;
        }
        let mut stopped = self.stopped_state();
        if stopped.open > 0 {
            stopped.warnings.push(warning);
            return;
        }
        drop(stopped);
        let line = warning.line.map(|l| l.to_string());
        let mut props = Vec::new();
        if let Some(file) = &warning.file {
            props.push(("file", file.as_str()));
        }
        if let Some(line) = &line {
            props.push(("line", line.as_str()));
        }
        command("warning", &props, &warning.message);
    }

    /// Writes all outputs at once, in the runner's multiline-safe `name<<delimiter`
    /// format, or as `name=value` lines on stdout outside a runner.
    pub fn write_outputs(&self, outputs: &[(&str, String)]) -> anyhow::Result<()> {
        if let Some(path) = &self.output_file {
            let text = format_outputs(outputs);
            return append(path, &text)
                .with_context(|| format!("cannot write outputs to {}", path.display()));
        }
        let mut stdout = std::io::stdout().lock();
        for (name, value) in outputs {
            writeln!(stdout, "{name}={value}")?;
        }
        Ok(())
    }

    /// Appends Markdown to the job summary, when there is one.
    pub fn write_summary(&self, markdown: &str) -> anyhow::Result<()> {
        if let Some(path) = &self.summary_file {
            append(path, markdown)
                .with_context(|| format!("cannot write the job summary to {}", path.display()))?;
        }
        Ok(())
    }
}

/// The engine layer's progress goes to the log: lines to stderr (as every log line),
/// sections as the runner's groups, build output with workflow commands stopped.
impl crate::progress::Progress for Runner {
    fn line(&self, line: &str) {
        eprintln!("{line}");
    }

    fn group(&self, title: &str) -> crate::progress::Guard {
        crate::progress::Guard::new(Runner::group(self, title))
    }

    fn untrusted(&self) -> crate::progress::Guard {
        crate::progress::Guard::new(Runner::untrusted(self))
    }

    fn warning(&self, message: &str) {
        Runner::warning(self, message);
    }
}

/// Closes its log group when dropped, so an early return cannot leave a group open.
#[derive(Debug)]
#[must_use = "the group ends when this is dropped"]
pub struct Group {
    in_actions: bool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.in_actions {
            eprintln!("::endgroup::");
        }
    }
}

/// Turns workflow commands back on when dropped.
#[derive(Debug)]
#[must_use = "commands resume when this is dropped"]
pub struct Untrusted {
    token: Option<String>,
    runner: Runner,
}

impl Drop for Untrusted {
    fn drop(&mut self) {
        if let Some(token) = &self.token {
            eprintln!("::{token}::");
        }
        let waiting = {
            let mut stopped = self.runner.stopped_state();
            stopped.open = stopped.open.saturating_sub(1);
            if stopped.open == 0 {
                std::mem::take(&mut stopped.warnings)
            } else {
                Vec::new()
            }
        };
        for warning in waiting {
            self.runner.give(warning);
        }
    }
}

fn command(name: &str, properties: &[(&str, &str)], message: &str) {
    eprintln!("{}", format_command(name, properties, message));
}

/// `::name key=value,key=value::message`, escaped as the runner's toolkit does.
pub fn format_command(name: &str, properties: &[(&str, &str)], message: &str) -> String {
    let mut line = format!("::{name}");
    for (i, (key, value)) in properties.iter().enumerate() {
        line.push(if i == 0 { ' ' } else { ',' });
        let _ = write!(line, "{key}={}", escape_property(value));
    }
    let _ = write!(line, "::{}", escape_data(message));
    line
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Formats outputs for `GITHUB_OUTPUT`. The delimiter is random and checked against the
/// values, so a value cannot end the block early and inject another output.
pub fn format_outputs(outputs: &[(&str, String)]) -> String {
    let mut text = String::new();
    for (name, value) in outputs {
        let delimiter = loop {
            let candidate = format!("ghadelimiter_{}", crate::random::token());
            if !value.contains(&candidate) && !name.contains(&candidate) {
                break candidate;
            }
        };
        let _ = write!(text, "{name}<<{delimiter}\n{value}\n{delimiter}\n");
    }
    text
}

fn append(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commands escape `%`, newlines, and `:`/`,` in properties, as the toolkit does.
    #[test]
    fn commands_are_escaped_like_the_toolkit() {
        assert_eq!(
            format_command(
                "error",
                &[("file", "a:b,c"), ("line", "3")],
                "50% done\nnext"
            ),
            "::error file=a%3Ab%2Cc,line=3::50%25 done%0Anext"
        );
        assert_eq!(format_command("group", &[], "Build"), "::group::Build");
    }

    /// Outputs use the heredoc format, so a value with newlines (or one that tries to
    /// fake a second output) stays one value.
    #[test]
    fn outputs_survive_multiline_and_injection_attempts() {
        let text = format_outputs(&[
            ("a", "x".to_string()),
            ("b", "line1\nline2\nc<<EOF\nevil\nEOF".to_string()),
        ]);
        let mut lines = text.lines();
        let first = lines.next().unwrap();
        let delimiter = first.strip_prefix("a<<").unwrap();
        assert_eq!(lines.next(), Some("x"));
        assert_eq!(lines.next(), Some(delimiter));
        let second = lines.next().unwrap();
        let delimiter2 = second.strip_prefix("b<<").unwrap();
        assert_ne!(delimiter, delimiter2, "delimiters are random per output");
        let body: Vec<_> = lines.by_ref().take_while(|l| *l != delimiter2).collect();
        assert_eq!(body, ["line1", "line2", "c<<EOF", "evil", "EOF"]);
        assert_eq!(lines.next(), None);
    }

    /// Regression: "warnings vanish". A warning given while workflow commands are stopped
    /// (the build's output) waits for the last untrusted section to end, then is given.
    #[test]
    fn warnings_wait_for_workflow_commands_to_resume() {
        let runner = Runner {
            in_actions: true,
            ..Runner::default()
        };
        let outer = runner.untrusted();
        let inner = runner.untrusted();
        runner.warning("during the build");
        runner.warning_at(
            std::path::Path::new("Dockerfile"),
            Some(3),
            "a lint warning",
        );
        assert_eq!(runner.stopped_state().warnings.len(), 2);
        drop(inner);
        assert_eq!(
            runner.stopped_state().warnings.len(),
            2,
            "one section still open"
        );
        drop(outer);
        assert!(
            runner.stopped_state().warnings.is_empty(),
            "given at the end"
        );
        assert_eq!(runner.stopped_state().open, 0);
    }

    /// Outputs append to the file, keeping what earlier steps wrote.
    #[test]
    fn outputs_append_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, "earlier<<X\n1\nX\n").unwrap();
        let runner = Runner {
            in_actions: true,
            output_file: Some(path.clone()),
            summary_file: None,
            ..Runner::default()
        };
        runner
            .write_outputs(&[("image-uri", "r/a:b".into())])
            .unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.starts_with("earlier<<X\n1\nX\nimage-uri<<ghadelimiter_"),
            "{text}"
        );
        assert!(text.contains("\nr/a:b\n"));
    }
}
