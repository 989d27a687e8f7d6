//! The `ecr-build-push` binary: logging, inputs, run, and a failure turned into one
//! `::error::` line and a non-zero exit.

mod log;

use std::process::ExitCode;

use ecr_build_push::engine::build::BuildError;
use ecr_build_push::env::Environment;
use ecr_build_push::inputs::cli::{self, Command};
use ecr_build_push::inputs::{ActionSpec, InputError, Inputs};
use ecr_build_push::metadata::Context;
use ecr_build_push::runner::Runner;

fn main() -> ExitCode {
    let env = Environment::from_process();
    log::init(&env);
    let workdir = std::env::current_dir().unwrap_or_default();
    let runner = Runner::new(
        env.in_actions,
        env.output_file.clone(),
        env.summary_file.clone(),
        workdir.clone(),
    );
    // A variable set to what cannot be used fails now, not where it would be used.
    if let Err(err) = env.check() {
        return fail(&runner, &anyhow::Error::new(err));
    }
    let spec = ActionSpec::embedded();
    let args: Vec<String> = std::env::args().skip(1).collect();

    let mut values = env.inputs.clone();
    match cli::parse_args(&spec, &args) {
        Ok(Command::Help) => {
            print!("{}", cli::help(&spec));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("ecr-build-push {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        // Flags override INPUT_* variables of the same name.
        Ok(Command::Run(flags)) => values.extend(flags),
        Err(err) => return fail(&runner, &anyhow::Error::new(err)),
    }
    // The event payload is read here, once, for the tag templates and labels.
    let context = match Context::load(&env.github) {
        Ok(context) => context,
        Err(err) => return fail(&runner, &err),
    };
    let inputs = match Inputs::parse_in(&spec, &values, &workdir, &context) {
        Ok(inputs) => inputs,
        Err(err) => return fail(&runner, &anyhow::Error::new(err)),
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return fail(
                &runner,
                &anyhow::Error::new(err).context("cannot start the async runtime"),
            )
        }
    };
    let result = runtime.block_on(async {
        // Boxed: the whole run is one large future, kept off the stack.
        let report = Box::pin(ecr_build_push::run(&inputs, &env, &runner)).await?;
        runner.write_outputs(&report.outputs())?;
        runner.write_summary(&report.summary_markdown())?;
        // A registry of `also-push-to` that failed fails the step once the outputs name
        // the ones that have the image.
        if let Some(err) = report.targets_error() {
            return Err(err);
        }
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&runner, &err),
    }
}

/// Prints the one error annotation of a failed run: a bad input names the input, a
/// Dockerfile problem points at the file and line, anything else gives its cause chain.
fn fail(runner: &Runner, err: &anyhow::Error) -> ExitCode {
    let chain = format!("{err:#}");
    if let Some(input) = err.downcast_ref::<InputError>() {
        runner.error(&format!("Invalid input `{}`", input.input()), &chain);
    } else if let Some(BuildError::Dockerfile {
        dockerfile, line, ..
    }) = err.downcast_ref::<BuildError>()
    {
        runner.error_at(dockerfile, *line, "Build failed", &chain);
    } else {
        runner.error("ecr-build-push failed", &chain);
    }
    ExitCode::FAILURE
}
