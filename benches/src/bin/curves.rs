//! Cost curves (issue 29): how the cost of a unit of work grows with the data behind it. Prints
//! the table (name, size, cost, ratio to the smallest size, target, pass/miss), draws the chart
//! into an SVG and, with `--markdown PATH`, writes the table with the machine and server it
//! was measured on.
//!
//! `cargo run --release -p neo-benches --bin curves [-- --quick] [--sizes 10000,100000]
//! [--svg PATH] [--markdown PATH] [FILTER]`
//!
//! Sizes default to 10k, 100k and 1M rows (`--quick`: 1k, 10k, 100k); the chart goes to
//! `docs/curves.svg`. A server from `NEO_BENCH_DATABASE_URL`, or one started for the run.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a report prints")]

use neo_benches::curves::{self, Environment, Options};

fn usage(problem: &str) -> ! {
    eprintln!(
        "curves: {problem}\nusage: curves [--quick] [--sizes N,N,...] [--svg PATH] \
         [--markdown PATH] [FILTER]"
    );
    std::process::exit(2);
}

fn sizes(list: &str) -> Vec<u64> {
    let mut sizes: Vec<u64> = list
        .split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse()
                .ok()
                .filter(|&n: &u64| n >= 2)
                .unwrap_or_else(|| usage(&format!("{s:?} is not a size of at least 2 rows")))
        })
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

fn main() {
    let mut options = Options::full();
    let mut given_sizes = None;
    let mut svg = "docs/curves.svg".to_owned();
    let mut markdown = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options = Options::quick(),
            "--sizes" => {
                given_sizes = Some(sizes(
                    &args.next().unwrap_or_else(|| usage("--sizes needs a list")),
                ));
            }
            "--svg" => svg = args.next().unwrap_or_else(|| usage("--svg needs a path")),
            "--markdown" => {
                markdown = Some(
                    args.next()
                        .unwrap_or_else(|| usage("--markdown needs a path")),
                );
            }
            flag if flag.starts_with("--") => usage(&format!("unknown option {flag}")),
            other => options.filter = Some(other.to_owned()),
        }
    }
    if let Some(sizes) = given_sizes {
        options.sizes = sizes;
    }
    let url = neo_benches::db::bench_database_url();
    let started = std::time::Instant::now();
    let measured = curves::run(&url, &options);
    let rt = neo_benches::runtime();
    let environment = rt.block_on(Environment::read(&url));
    print!("{}", curves::table(&measured));
    println!("{}", environment.describe());
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    if let Err(e) = std::fs::write(&svg, curves::chart::svg(&measured, &environment)) {
        usage(&format!("cannot write {svg}: {e}"));
    }
    println!("chart: {svg}");
    if let Some(path) = markdown {
        if let Err(e) = std::fs::write(&path, curves::markdown(&measured, &environment)) {
            usage(&format!("cannot write {path}: {e}"));
        }
        println!("table: {path}");
    }
}
