//! `holdfast-bench`: see `holdfast-bench --help` and bench/README.md.

use anyhow::Result;
use clap::Parser;
use holdfast_bench::cli::{Cli, Command, RunArgs};
use holdfast_bench::msg::{WorkerPlan, Workload};
use holdfast_bench::{compare, coordinator, plot, worker};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes: 0 success, 1 the run failed (an error above says why), 2 usage (clap),
/// 3 the run finished but requests are unaccounted for or replies mismatched (push: deliveries
/// differ from expected, or gaps, duplicates, failed publishes).
const EXIT_COUNTS_DO_NOT_ADD_UP: i32 = 3;

fn run_workload(workload: Workload, args: &RunArgs) -> Result<i32> {
    let mut report = coordinator::run(workload, args)?;
    report.write_files(&args.out)?;
    report.print_table();
    let broken = report.requests_unaccounted != 0
        || report.counters.replies_mismatched > 0
        || report.push.as_ref().is_some_and(|p| !p.clean);
    Ok(if broken { EXIT_COUNTS_DO_NOT_ADD_UP } else { 0 })
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Worker { plan_json } => serde_json::from_str::<WorkerPlan>(&plan_json)
            .map_err(anyhow::Error::from)
            .and_then(worker::run)
            .map(|()| 0),
        Command::ResumeWorker { plan_json } => serde_json::from_str(&plan_json)
            .map_err(anyhow::Error::from)
            .and_then(|plan| holdfast_bench::resume_worker::run(&plan))
            .map(|()| 0),
        Command::Connect(args) => run_workload(Workload::Connect, &args),
        Command::Echo(args) => run_workload(Workload::Echo, &args),
        Command::Rate(args) => run_workload(Workload::Rate, &args),
        Command::Request(args) => run_workload(Workload::Request, &args),
        Command::Storm(args) if args.resume => holdfast_bench::resume_storm::run(&args),
        Command::Storm(args) => run_workload(Workload::Storm, &args),
        Command::Push(args) => run_workload(Workload::Push, &args),
        Command::Events(args) => run_workload(Workload::Events, &args),
        Command::Plot(args) => plot::run(&args).map(|()| 0),
        Command::Compare(args) => compare::run(&args).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("holdfast-bench: {e:#}");
            std::process::exit(1);
        }
    }
}
