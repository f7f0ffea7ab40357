//! Parsing a generated 10,000-instruction Dockerfile (target: under 50 ms).
//!
//! `cargo bench -p lade-parser --bench parse` (release profile); numbers go in BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use divan::counter::BytesCount;
use divan::{black_box, Bencher};

mod common;
use common::dockerfile;

fn main() {
    divan::main();
}

#[divan::bench(args = [10_000])]
fn full(bencher: Bencher, n: usize) {
    let text = dockerfile(n);
    let check = lade_parser::parse(&text);
    assert!(check.errors.is_empty(), "{:?}", &check.errors[..1]);
    assert_eq!(check.value.ast.nodes.len(), n);
    bencher
        .counter(BytesCount::of_str(&text))
        .bench(|| lade_parser::parse(black_box(&text)));
}

#[divan::bench(args = [10_000])]
fn raw_nodes_only(bencher: Bencher, n: usize) {
    let text = dockerfile(n);
    bencher
        .counter(BytesCount::of_str(&text))
        .bench(|| lade_parser::parse_ast(black_box(&text)));
}

#[divan::bench(args = [10_000])]
fn dump(bencher: Bencher, n: usize) {
    let ast = lade_parser::parse_ast(&dockerfile(n)).value;
    bencher.bench(|| black_box(&ast).dump());
}
