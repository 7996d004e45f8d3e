//! `warren-perf`: an AMQP 0-9-1 load generator in the spirit of RabbitMQ PerfTest and
//! lavinmqperf.
//!
//! Owns: a small purpose-built client ([`client`], [`parser`]) fast enough never to be the
//! bottleneck, the producer and consumer tasks ([`worker`]), the run's life cycle
//! ([`scenario`]), and its measurements and output ([`stats`], [`report`]).
//!
//! Must not know: the broker's internals. It is a client like any other and speaks only AMQP,
//! so it measures RabbitMQ and Warren alike.
//!
//! Invariants: every run ends within its hard limit (duration + 30 s, or `--max-time`), with a
//! report and a non-zero exit code if anything went wrong; no allocation per message on the
//! data path.

mod cli;
mod client;
mod parser;
mod report;
mod scenario;
mod stats;
mod sys;
mod uri;
mod worker;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Options;
use crate::report::Printer;
use crate::uri::AmqpUri;

/// Exit code for a run that failed (connection refused, broker closed a channel, ...).
const EXIT_FAILED: u8 = 1;
/// Exit code for a run cut off by its hard time limit (2 is clap's, for usage errors).
const EXIT_TIMED_OUT: u8 = 3;

fn main() -> ExitCode {
    let opts = Options::parse();
    if let Err(e) = opts.validate() {
        eprintln!("warren-perf: {e}");
        return ExitCode::from(EXIT_FAILED);
    }
    let uri = match AmqpUri::parse(&opts.uri) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("warren-perf: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warren-perf: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = runtime.block_on(run(opts, uri));
    // Tasks cut off by the hard limit may still hold sockets: don't wait for them.
    runtime.shutdown_background();
    code
}

async fn run(opts: Options, uri: AmqpUri) -> ExitCode {
    let printer = Printer {
        json: opts.json,
        quiet: opts.quiet,
    };
    let hard_limit = opts.hard_limit();

    if opts.idle_connections.is_some() {
        let report =
            match tokio::time::timeout(hard_limit, scenario::idle(&opts, &uri, printer)).await {
                Ok(r) => r,
                Err(_) => {
                    eprintln!(
                        "warren-perf: hard time limit of {:.0}s exceeded",
                        hard_limit.as_secs_f64()
                    );
                    return ExitCode::from(EXIT_TIMED_OUT);
                }
            };
        printer.text(&report.summary());
        if let Some(e) = &report.error {
            eprintln!("warren-perf: {e}");
        }
        printer.json_line(&report);
        return if report.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_FAILED)
        };
    }

    let state = scenario::Run::new();
    let finished =
        tokio::time::timeout(hard_limit, scenario::run(&opts, &uri, &state, printer)).await;
    let (report, code) = match finished {
        Ok(()) => {
            let report = state.report(&opts, None);
            let code = if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            };
            (report, code)
        }
        Err(_) => {
            state.shared.stop();
            let msg = format!(
                "hard time limit of {:.0}s exceeded",
                hard_limit.as_secs_f64()
            );
            (
                state.report(&opts, Some(msg)),
                ExitCode::from(EXIT_TIMED_OUT),
            )
        }
    };
    printer.text(&report.summary());
    if let Some(e) = &report.error {
        eprintln!("warren-perf: {e}");
    }
    printer.json_line(&report);
    code
}
