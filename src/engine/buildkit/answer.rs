//! The answer to `POST /build?version=2`: JSON messages, one a line, carrying
//! BuildKit's progress (rendered as they come), its errors, and the image ID; or an HTTP
//! error before the build started.

use http_body_util::BodyExt as _;
use hyper::{Request, StatusCode};

use super::daemon::{self, DaemonAddress};
use super::progress::{self, ProgressRenderer};
use super::BuildkitError;
use crate::engine::LineBuffer;
use crate::network::stall::Watchdog;

/// What the build's answer said, read to its end.
#[derive(Debug, Default)]
pub(super) struct Streamed {
    image_id: Option<String>,
    /// The error BuildKit reported in the stream (a failed step).
    stream_error: Option<String>,
    /// Why the stream could not be read to its end.
    read_error: Option<String>,
}

/// Sends the build request on its own connection (opened within `control`) and reads
/// the answer, each piece counted as progress by `watchdog`.
pub(super) async fn run_build(
    address: &DaemonAddress,
    http_request: Request<daemon::Body>,
    control: std::time::Duration,
    watchdog: &Watchdog,
    renderer: &mut ProgressRenderer,
    on_line: &mut dyn FnMut(&str),
) -> Result<Streamed, BuildkitError> {
    let mut sender = daemon::connect_within(address, control)
        .await
        .map_err(|e| BuildkitError::Daemon(format!("cannot connect to the daemon: {e}")))?;
    let response = sender
        .send_request(http_request)
        .await
        .map_err(|err| BuildkitError::Daemon(format!("the build request failed: {err}")))?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        let message = daemon::body_text(response.into_body()).await;
        return Err(classify_http_error(status, message));
    }

    let mut body = watchdog.incoming_body(response.into_body());
    let mut lines = LineBuffer::default();
    let mut streamed = Streamed::default();
    let mut handle = |line: &[u8], streamed: &mut Streamed| {
        handle_message(
            line,
            renderer,
            &mut streamed.image_id,
            &mut streamed.stream_error,
            on_line,
        );
    };
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(err)) => {
                streamed.read_error = Some(err.to_string());
                break;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for line in lines.push(&data) {
            handle(&line, &mut streamed);
        }
    }
    if let Some(line) = lines.finish() {
        handle(&line, &mut streamed);
    }
    Ok(streamed)
}

impl Streamed {
    /// The image ID, or why the build failed: the failed step (with its Dockerfile line
    /// when the renderer or the message tells it), a stream that broke off, or no ID.
    pub(super) fn image_id(self, renderer: &ProgressRenderer) -> Result<String, BuildkitError> {
        if let Some(message) = self.stream_error {
            let failed = renderer.failed().cloned();
            let line = failed
                .as_ref()
                .and_then(|f| f.line)
                .or_else(|| crate::engine::dockerfile_line(&message));
            return Err(BuildkitError::Failed {
                message,
                step: failed.map(|f| f.name),
                line,
            });
        }
        if let Some(err) = self.read_error {
            return Err(BuildkitError::Daemon(format!(
                "the build's progress stream broke off: {err}"
            )));
        }
        self.image_id.ok_or_else(|| {
            BuildkitError::Daemon("the daemon finished the build without an image ID".into())
        })
    }
}

/// One JSON line of the build's answer.
fn handle_message(
    line: &[u8],
    renderer: &mut ProgressRenderer,
    image_id: &mut Option<String>,
    stream_error: &mut Option<String>,
    emit: &mut dyn FnMut(&str),
) {
    let line = line.trim_ascii();
    if line.is_empty() {
        return;
    }
    let Ok(message) = serde_json::from_slice::<progress::JsonMessage>(line) else {
        tracing::debug!("unreadable message in the build stream");
        return;
    };
    if let Some(error) = message
        .error_detail
        .and_then(|d| d.message)
        .or(message.error)
    {
        stream_error.get_or_insert(error);
        return;
    }
    match (message.id.as_deref(), message.aux) {
        (Some("moby.buildkit.trace"), Some(serde_json::Value::String(payload))) => {
            renderer.push_trace(&payload, emit);
        }
        (Some("moby.image.id"), Some(aux)) => {
            if let Some(id) = aux.get("ID").and_then(|v| v.as_str()) {
                *image_id = Some(id.to_string());
            }
        }
        _ => {
            // Rare plain messages (e.g. from the classic code paths of the daemon).
            for text in [message.stream, message.status].into_iter().flatten() {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    emit(line);
                }
            }
        }
    }
}

/// An HTTP error before the build started: a bad option or an unparsable Dockerfile.
fn classify_http_error(status: StatusCode, message: String) -> BuildkitError {
    let line = crate::engine::dockerfile_line(&message);
    if status.is_client_error()
        || line.is_some()
        || message.to_ascii_lowercase().contains("dockerfile")
    {
        BuildkitError::Failed {
            message,
            step: None,
            line,
        }
    } else {
        BuildkitError::Daemon(format!(
            "the daemon refused the build ({status}): {message}"
        ))
    }
}
