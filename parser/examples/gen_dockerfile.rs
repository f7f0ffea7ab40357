//! Prints the benchmark's generated Dockerfile, so that peers can parse the same input:
//! `cargo run -q --release -p lade-parser --example gen_dockerfile -- 10000 > big.Dockerfile`.
#![allow(clippy::print_stdout)]

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    print!("{}", common::dockerfile(n));
}
