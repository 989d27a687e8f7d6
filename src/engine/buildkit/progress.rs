//! BuildKit's progress, as the daemon streams it for `POST /build?version=2`: JSON
//! messages whose `aux`, under `"id":"moby.buildkit.trace"`, is a base64 protobuf
//! `moby.buildkit.v1.StatusResponse`. Rendered as `docker build --progress=plain` does:
//!
//! ```text
//! #5 [build 2/4] RUN make
//! #5 0.512 compiling...
//! #5 DONE 1.3s
//! #6 [build 3/4] COPY . .
//! #6 CACHED
//! ```

use std::collections::HashMap;

use base64::Engine as _;
use bollard_buildkit_proto::google::protobuf::Timestamp;
use bollard_buildkit_proto::moby::buildkit::v1::{StatusResponse, Vertex, VertexLog, VertexStatus};
use prost::Message as _;
use serde::Deserialize;

use super::dockerfile::{parse_step_name, DockerfileMap};

/// One message of the build's JSON stream.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct JsonMessage {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub aux: Option<serde_json::Value>,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default, rename = "errorDetail")]
    pub error_detail: Option<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub message: Option<String>,
}

/// A warning BuildKit reported, with its Dockerfile line when it gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildWarning {
    pub message: String,
    pub line: Option<u32>,
}

/// The step that failed, as the progress showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedStep {
    /// The vertex name, e.g. `[build 3/4] RUN make`.
    pub name: String,
    /// BuildKit's error for the vertex.
    pub error: String,
    /// The Dockerfile line of the step, when it can be told.
    pub line: Option<u32>,
}

#[derive(Debug, Default)]
struct VertexState {
    /// Given when the vertex is first shown, so numbers go up in the log.
    number: usize,
    name: String,
    started: Option<Timestamp>,
    announced: bool,
    finished: bool,
    /// Partial log lines per stream (1 stdout, 2 stderr).
    partial: HashMap<i64, Vec<u8>>,
    /// Status ids already reported complete.
    statuses_done: Vec<String>,
}

/// Turns `StatusResponse`s into plain lines and keeps count of steps.
#[derive(Debug, Default)]
pub struct ProgressRenderer {
    vertices: HashMap<String, VertexState>,
    next_number: usize,
    dockerfile: Option<DockerfileMap>,
    /// Values never to be shown (secrets): replaced by `***` in every line.
    masks: Vec<String>,
    steps: usize,
    cached_steps: usize,
    failed: Option<FailedStep>,
    warnings: Vec<BuildWarning>,
}

impl ProgressRenderer {
    /// `dockerfile`: the Dockerfile's text, to find the line of a failed step.
    pub fn new(dockerfile: Option<&str>) -> Self {
        Self {
            dockerfile: dockerfile.map(DockerfileMap::parse),
            next_number: 1,
            ..Self::default()
        }
    }

    /// Adds a value that must never appear in a rendered line.
    pub fn mask(&mut self, value: &str) {
        if !value.trim().is_empty() {
            self.masks.push(value.to_string());
        }
    }

    /// Dockerfile steps (`[stage n/total]` vertices) that finished, cached or not.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Dockerfile steps that BuildKit took from its cache.
    pub fn cached_steps(&self) -> usize {
        self.cached_steps
    }

    /// The first step that failed, if any.
    pub fn failed(&self) -> Option<&FailedStep> {
        self.failed.as_ref()
    }

    pub fn warnings(&self) -> &[BuildWarning] {
        &self.warnings
    }

    /// The base images of the `FROM` steps, as BuildKit names them
    /// (`[1/3] FROM docker.io/library/alpine:3.20@sha256:…`): the reference, and the
    /// digest it resolved to when the name carries one (an image pulled from a registry;
    /// one from the daemon's own store has none). Sorted, each once.
    pub fn bases(&self) -> Vec<(String, Option<String>)> {
        let mut bases: Vec<(String, Option<String>)> = self
            .vertices
            .values()
            .filter_map(|state| {
                let (_, step) = state.name.split_once("] FROM ")?;
                let reference = step.split_whitespace().next()?;
                Some(match reference.split_once('@') {
                    Some((name, digest)) if digest.starts_with("sha256:") => {
                        (name.to_string(), Some(digest.to_string()))
                    }
                    _ => (reference.to_string(), None),
                })
            })
            .collect();
        bases.sort();
        bases.dedup();
        bases
    }

    /// Decodes one base64 `moby.buildkit.trace` payload and renders it.
    pub fn push_trace(&mut self, base64_payload: &str, out: &mut dyn FnMut(&str)) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(base64_payload)
            .ok()
            .and_then(|bytes| StatusResponse::decode(bytes.as_slice()).ok());
        if let Some(status) = decoded {
            self.push(&status, out);
        } else {
            tracing::debug!("undecodable BuildKit trace message");
        }
    }

    /// Renders one `StatusResponse`.
    pub fn push(&mut self, status: &StatusResponse, out: &mut dyn FnMut(&str)) {
        let mut lines = Vec::new();
        for vertex in &status.vertexes {
            self.vertex(vertex, &mut lines);
        }
        for st in &status.statuses {
            self.status(st, &mut lines);
        }
        for log in &status.logs {
            self.log(log, &mut lines);
        }
        for warning in &status.warnings {
            let mut next = self.next_number;
            let state = self.vertices.entry(warning.vertex.clone()).or_default();
            Self::announce(state, &mut next, &mut lines);
            let number = state.number;
            self.next_number = next;
            let message = String::from_utf8_lossy(&warning.short).trim().to_string();
            let line = warning
                .ranges
                .first()
                .and_then(|r| r.start.as_ref())
                .and_then(|p| u32::try_from(p.line).ok())
                .filter(|l| *l > 0);
            lines.push(format!("#{number} WARN: {message}"));
            for detail in &warning.detail {
                lines.push(format!(
                    "#{number} {}",
                    String::from_utf8_lossy(detail).trim_end()
                ));
            }
            self.warnings.push(BuildWarning { message, line });
        }
        // Completions come after the logs of the same message.
        for vertex in &status.vertexes {
            self.complete(vertex, &mut lines);
        }
        for line in lines {
            out(&self.masked(line));
        }
    }

    fn masked(&self, mut line: String) -> String {
        for mask in &self.masks {
            if line.contains(mask.as_str()) {
                line = line.replace(mask.as_str(), "***");
            }
        }
        line
    }

    fn announce(state: &mut VertexState, next_number: &mut usize, lines: &mut Vec<String>) {
        if !state.announced {
            state.announced = true;
            state.number = *next_number;
            *next_number += 1;
            lines.push(format!("#{} {}", state.number, state.name));
        }
    }

    fn vertex(&mut self, vertex: &Vertex, lines: &mut Vec<String>) {
        let next = &mut self.next_number;
        let state = self.vertices.entry(vertex.digest.clone()).or_default();
        if !vertex.name.is_empty() {
            state.name.clone_from(&vertex.name);
        }
        if vertex.started.is_some() {
            state.started = vertex.started;
        }
        if vertex.started.is_some() || vertex.cached || vertex.completed.is_some() {
            Self::announce(state, next, lines);
        }
    }

    fn complete(&mut self, vertex: &Vertex, lines: &mut Vec<String>) {
        if vertex.completed.is_none() && !vertex.cached {
            return;
        }
        let next = &mut self.next_number;
        let state = self.vertices.entry(vertex.digest.clone()).or_default();
        if state.finished {
            return;
        }
        Self::announce(state, next, lines);
        state.finished = true;
        let number = state.number;
        let mut partial: Vec<(i64, Vec<u8>)> = state.partial.drain().collect();
        partial.sort_by_key(|(stream, _)| *stream);
        let started = state.started;
        for (_, rest) in partial {
            if !rest.is_empty() {
                let elapsed = seconds_between(started.as_ref(), vertex.completed.as_ref());
                lines.push(format!(
                    "#{number} {elapsed:.3} {}",
                    String::from_utf8_lossy(&rest)
                ));
            }
        }
        let name = state.name.clone();
        if !vertex.error.is_empty() {
            if vertex.error.contains("context canceled") {
                lines.push(format!("#{number} CANCELED"));
            } else {
                lines.push(format!("#{number} ERROR: {}", vertex.error));
                if self.failed.is_none() {
                    let line = self.dockerfile.as_ref().and_then(|d| d.line_of(&name));
                    self.failed = Some(FailedStep {
                        name: name.clone(),
                        error: vertex.error.clone(),
                        line,
                    });
                }
            }
        } else if vertex.cached {
            lines.push(format!("#{number} CACHED"));
        } else {
            let secs = seconds_between(started.as_ref(), vertex.completed.as_ref());
            lines.push(format!("#{number} DONE {secs:.1}s"));
        }
        if parse_step_name(&name).is_some() && vertex.error.is_empty() {
            self.steps += 1;
            if vertex.cached {
                self.cached_steps += 1;
            }
        }
    }

    fn status(&mut self, st: &VertexStatus, lines: &mut Vec<String>) {
        // Only finished statuses: intermediate byte counts would flood the log.
        if st.completed.is_none() {
            return;
        }
        let next = &mut self.next_number;
        let state = self.vertices.entry(st.vertex.clone()).or_default();
        if state.statuses_done.iter().any(|id| id == &st.id) {
            return;
        }
        state.statuses_done.push(st.id.clone());
        Self::announce(state, next, lines);
        let label = if st.name.is_empty() { &st.id } else { &st.name };
        let amount = match (st.current, st.total) {
            (0, 0) => String::new(),
            (current, 0) => format!(" {}", human_size(current)),
            (current, total) => format!(" {} / {}", human_size(current), human_size(total)),
        };
        let secs = seconds_between(st.started.as_ref(), st.completed.as_ref());
        lines.push(format!("#{} {label}{amount} done {secs:.1}s", state.number));
    }

    fn log(&mut self, log: &VertexLog, lines: &mut Vec<String>) {
        let next = &mut self.next_number;
        let state = self.vertices.entry(log.vertex.clone()).or_default();
        Self::announce(state, next, lines);
        let elapsed = seconds_between(state.started.as_ref(), log.timestamp.as_ref());
        let number = state.number;
        let buffer = state.partial.entry(log.stream).or_default();
        buffer.extend_from_slice(&log.msg);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            lines.push(format!("#{number} {elapsed:.3} {text}"));
        }
    }
}

fn seconds_between(start: Option<&Timestamp>, end: Option<&Timestamp>) -> f64 {
    match (start, end) {
        (Some(a), Some(b)) => {
            #[allow(clippy::cast_precision_loss)]
            let secs = (b.seconds - a.seconds) as f64 + f64::from(b.nanos - a.nanos) / 1e9;
            secs.max(0.0)
        }
        _ => 0.0,
    }
}

/// `1.2kB`, as Docker's `units.HumanSize` (decimal units).
fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::unnecessary_wraps)]
    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn render(renderer: &mut ProgressRenderer, status: &StatusResponse) -> Vec<String> {
        let mut lines = Vec::new();
        renderer.push(status, &mut |l| lines.push(l.to_string()));
        lines
    }

    #[test]
    fn renders_like_plain_progress_and_counts_steps() {
        let dockerfile = "FROM local/busybox\nRUN echo hi\nRUN false\n";
        let mut r = ProgressRenderer::new(Some(dockerfile));
        r.mask("hunter2");
        let from = Vertex {
            digest: "sha256:a".into(),
            name: "[1/3] FROM docker.io/local/busybox:latest".into(),
            cached: true,
            completed: ts(10, 0),
            ..Vertex::default()
        };
        let run = Vertex {
            digest: "sha256:b".into(),
            name: "[2/3] RUN echo hi".into(),
            started: ts(10, 0),
            ..Vertex::default()
        };
        let lines = render(
            &mut r,
            &StatusResponse {
                vertexes: vec![from, run.clone()],
                logs: vec![VertexLog {
                    vertex: "sha256:b".into(),
                    timestamp: ts(10, 250_000_000),
                    stream: 1,
                    msg: b"hi hunter2\npart".to_vec(),
                }],
                ..StatusResponse::default()
            },
        );
        assert_eq!(
            lines,
            [
                "#1 [1/3] FROM docker.io/local/busybox:latest",
                "#2 [2/3] RUN echo hi",
                "#2 0.250 hi ***",
                "#1 CACHED",
            ]
        );
        let lines = render(
            &mut r,
            &StatusResponse {
                vertexes: vec![Vertex {
                    completed: ts(11, 500_000_000),
                    ..run
                }],
                ..StatusResponse::default()
            },
        );
        assert_eq!(lines, ["#2 1.500 part", "#2 DONE 1.5s"]);
        let lines = render(
            &mut r,
            &StatusResponse {
                vertexes: vec![Vertex {
                    digest: "sha256:c".into(),
                    name: "[3/3] RUN false".into(),
                    started: ts(12, 0),
                    completed: ts(12, 100_000_000),
                    error:
                        "process \"/bin/sh -c false\" did not complete successfully: exit code: 1"
                            .into(),
                    ..Vertex::default()
                }],
                ..StatusResponse::default()
            },
        );
        assert_eq!(lines[0], "#3 [3/3] RUN false");
        assert!(lines[1].starts_with("#3 ERROR: process"), "{lines:?}");
        let failed = r.failed().unwrap();
        assert_eq!(failed.line, Some(3));
        assert_eq!((r.steps(), r.cached_steps()), (2, 1));
    }

    #[test]
    fn trace_payloads_decode() {
        let status = StatusResponse {
            vertexes: vec![Vertex {
                digest: "d".into(),
                name: "[internal] load build definition from Dockerfile".into(),
                started: ts(1, 0),
                completed: ts(1, 0),
                ..Vertex::default()
            }],
            ..StatusResponse::default()
        };
        let payload = base64::engine::general_purpose::STANDARD.encode(status.encode_to_vec());
        let mut r = ProgressRenderer::new(None);
        let mut lines = Vec::new();
        r.push_trace(&payload, &mut |l| lines.push(l.to_string()));
        assert_eq!(
            lines,
            [
                "#1 [internal] load build definition from Dockerfile",
                "#1 DONE 0.0s"
            ]
        );
        assert_eq!(r.steps(), 0);
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_234), "1.23kB");
        assert_eq!(human_size(5_000_000), "5.00MB");
    }
}
