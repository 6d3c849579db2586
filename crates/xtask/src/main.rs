//! `cargo xtask`: the project's developer tasks. `ci` runs what CI runs (fmt, clippy, tests,
//! tidy) and stops at the first failure; `tidy` checks the habits no compiler checks. Std only,
//! so it builds in a second.

mod layers;
mod tidy;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci     fmt --check, clippy -D warnings on all targets, every test, the nvml and no-etcd builds, tidy
  tidy   every .rs file under crates/ opens with a //! paragraph; the crates keep their layers";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if args.len() > 1 {
        eprintln!("unexpected arguments {:?}\n\n{USAGE}", &args[1..]);
        return ExitCode::from(2);
    }
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("tidy") => tidy_task(),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("unknown task {other:?}\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn ci() -> ExitCode {
    let steps: [(&str, &[&str]); 5] = [
        ("fmt", &["fmt", "--all", "--", "--check"]),
        (
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ("test", &["test", "--workspace", "--locked"]),
        // the README offers GPUs through NVML: that build must keep compiling
        (
            "nvml",
            &["check", "-p", "qm", "--features", "nvml", "--locked"],
        ),
        // and so must the daemon without etcd (no protoc needed)
        (
            "no-etcd",
            &["check", "-p", "qm", "--no-default-features", "--locked"],
        ),
    ];
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    for (name, args) in steps {
        println!("==> {name}: cargo {}", args.join(" "));
        let status = Command::new(&cargo).args(args).current_dir(root()).status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("xtask ci: step {name:?} failed ({s})");
                return exit_code_of(s);
            }
            Err(e) => {
                eprintln!("xtask ci: cannot run cargo for step {name:?}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("==> tidy");
    tidy_task()
}

/// The child's exit code, passed on; a child killed by a signal (no code) is a plain failure.
fn exit_code_of(status: ExitStatus) -> ExitCode {
    status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .filter(|&c| c != 0)
        .map_or(ExitCode::FAILURE, ExitCode::from)
}

fn tidy_task() -> ExitCode {
    match layers::check(&root().join("crates")) {
        Ok(broken) if broken.is_empty() => {
            println!("layers: {} rules kept", layers::RULES.len());
        }
        Ok(broken) => {
            for b in &broken {
                eprintln!("layers: {b}");
            }
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("layers: {e}");
            return ExitCode::FAILURE;
        }
    }
    match tidy::check(&root().join("crates")) {
        Ok(report) if report.offenders.is_empty() => {
            println!("tidy: {} files ok", report.n_files);
            ExitCode::SUCCESS
        }
        Ok(report) => {
            for path in &report.offenders {
                eprintln!("{}: does not open with a //! paragraph", path.display());
            }
            eprintln!(
                "tidy: {} of {} files lack a //! paragraph",
                report.offenders.len(),
                report.n_files
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tidy: {e}");
            ExitCode::FAILURE
        }
    }
}
