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

pub fn init(env: &Environment) {
    let default = if env.runner_debug { "debug" } else { "info" };
    // The libraries' own debug output (HTTP, SDK internals) is noise in a CI log; opt in
    // with ECR_BUILD_PUSH_LOG, e.g. `debug,aws_smithy_runtime=trace`.
    let directive = env
        .log_filter
        .clone()
        .unwrap_or_else(|| format!("warn,ecr_build_push={default}"));
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
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
