//! Logging to stderr. In a runner, warnings become `::warning::` annotations and debug
//! lines `::debug::` (shown when the workflow runs with debug logging); info lines are
//! plain text, since the runner adds its own timestamps.

use std::fmt;

use ecr_build_push::env::Environment;
use ecr_build_push::runner::format_command;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Crates whose debug output carries request and response bodies: the SDK logs the
/// `GetAuthorizationToken` answer (the registry password, base64-encoded) before the
/// action can mask it, and HTTP clients log headers. They never log below `info`, whatever
/// `ECR_BUILD_PUSH_LOG` asks for.
const SECRET_BEARING_TARGETS: &[&str] = &[
    "aws_config",
    "aws_runtime",
    "aws_sdk_ecr",
    "aws_sdk_sts",
    "aws_sigv4",
    "aws_smithy_http_client",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "bollard",
    "h2",
    "hyper",
    "hyper_util",
    "rustls",
];

pub fn init(env: &Environment) {
    let default = if env.runner_debug { "debug" } else { "info" };
    // The libraries' own output is noise in a CI log; ECR_BUILD_PUSH_LOG opts in (e.g.
    // `debug`), short of the secret-bearing targets above.
    let directive = env
        .log_filter
        .clone()
        .unwrap_or_else(|| format!("warn,ecr_build_push={default}"));
    let mut filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    for target in SECRET_BEARING_TARGETS {
        if let Ok(cap) = format!("{target}=info").parse() {
            filter = filter.add_directive(cap);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(Format {
            in_actions: env.in_actions,
        })
        .init();
}

struct Format {
    in_actions: bool,
}

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut message = String::new();
        ctx.format_fields(Writer::new(&mut message), event)?;
        let level = *event.metadata().level();
        let line = match (self.in_actions, level) {
            (true, Level::ERROR) => format_command("error", &[], &message),
            (true, Level::WARN) => format_command("warning", &[], &message),
            (true, Level::DEBUG | Level::TRACE) => format_command("debug", &[], &message),
            (false, Level::ERROR) => format!("error: {message}"),
            (false, Level::WARN) => format!("warning: {message}"),
            (false, Level::DEBUG | Level::TRACE) => format!("debug: {message}"),
            (_, Level::INFO) => message,
        };
        writeln!(writer, "{line}")
    }
}
