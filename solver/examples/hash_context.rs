//! Hashes a whole build context the way `COPY . /` would, for benchmarks:
//!
//! ```sh
//! cargo run --release -p lade-solver --example hash_context -- DIR [--stat-cache FILE]
//! ```
//!
//! Reads `DIR/.dockerignore`, selects `.`, prints the digest and the work counters, and writes
//! the stat cache back when one is given.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use lade_solver::context::{read_dockerignore, Context};

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: hash_context DIR [--stat-cache FILE]");
        return ExitCode::from(2);
    };
    let stat_cache = match (args.next(), args.next()) {
        (Some(flag), Some(file)) if flag == "--stat-cache" => Some(PathBuf::from(file)),
        (None, _) => None,
        _ => {
            eprintln!("usage: hash_context DIR [--stat-cache FILE]");
            return ExitCode::from(2);
        }
    };
    let run = || -> Result<(), lade_solver::context::Error> {
        let ignore = read_dockerignore(&dir.join(".dockerignore"))?;
        let ctx = Context::open(&dir, &ignore, stat_cache.as_deref())?;
        let sel = ctx.select(&["."])?;
        ctx.save_stat_cache()?;
        let s = ctx.stats();
        println!(
            "{} entries={} files_read={} bytes_read={} files_reused={} stat_cache={:?}",
            sel.digest,
            s.entries,
            s.files_read,
            s.bytes_read,
            s.files_reused,
            ctx.stat_cache_status()
        );
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
