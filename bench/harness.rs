//! The micro-benchmarks' harness, shared by `crates/*/benches/*.rs` (each includes this file
//! with `#[path]`). Plain `fn main`, no dependencies.
//!
//! A case is a setup, a body run `n` times, and an optional finish. What matters is the
//! *instruction count* per iteration, which `bench/instructions.sh` measures with callgrind by
//! running a case at two iteration counts and taking the difference (so setup cost cancels
//! out). Wall time on a shared 2-core machine is noise; it is printed only as information.
//!
//! Arguments (cargo passes everything after `--` to every bench target):
//!
//! - `--bench` (added by `cargo bench`): time each case with its fixed `n`, print
//!   `name: X ns/iter`.
//! - `--test`, or no `--bench` (as under `cargo test --all-targets`): run each case once with a
//!   tiny `n` and small fixtures, print `name: ok`; this is what keeps them working in CI.
//! - `--list`: print `name n` for each case (nothing is run).
//! - `--iters N`: run each selected case with exactly `N` iterations (0 runs only setup and
//!   finish); used by `bench/instructions.sh`.
//! - `--exact`: filters must equal a case name rather than be a substring of it.
//! - anything else not starting with `-`: a filter on case names.

#![allow(dead_code)]

use std::time::Instant;

pub use std::hint::black_box;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quick,
    Time,
    List,
}

pub struct Bench {
    group: &'static str,
    mode: Mode,
    filters: Vec<String>,
    exact: bool,
    iters: Option<u64>,
    ran: usize,
}

impl Bench {
    /// Reads the process arguments. Exits with status 2 on a malformed `--iters`.
    pub fn from_args(group: &'static str) -> Self {
        let mut bench = false;
        let mut test = false;
        let mut list = false;
        let mut exact = false;
        let mut iters = None;
        let mut filters = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--bench" => bench = true,
                "--test" => test = true,
                "--list" => list = true,
                "--exact" => exact = true,
                "--iters" => match args.next().and_then(|v| v.parse().ok()) {
                    Some(n) => iters = Some(n),
                    None => {
                        eprintln!("{group}: --iters needs a number");
                        std::process::exit(2);
                    }
                },
                // Flags meant for libtest harnesses (e.g. `--nocapture`) are not ours to refuse.
                s if s.starts_with('-') => {}
                _ => filters.push(a),
            }
        }
        let mode = if list {
            Mode::List
        } else if bench && !test {
            Mode::Time
        } else {
            Mode::Quick
        };
        Bench {
            group,
            mode,
            filters,
            exact,
            iters,
            ran: 0,
        }
    }

    /// True when cases should run once on small fixtures (`--test`, or `cargo test`).
    pub fn quick(&self) -> bool {
        self.mode == Mode::Quick
    }

    /// `full` normally, `small` in quick mode: for fixture sizes.
    pub fn size(&self, full: usize, small: usize) -> usize {
        if self.quick() {
            small
        } else {
            full
        }
    }

    fn selected(&self, name: &str) -> bool {
        self.filters.is_empty()
            || self.filters.iter().any(|f| {
                if self.exact {
                    f == name
                } else {
                    name.contains(f.as_str())
                }
            })
    }

    /// Runs `body(&mut state, i)` for `i` in `0..n` after `setup`.
    pub fn case<S>(
        &mut self,
        name: &str,
        n: u64,
        setup: impl FnOnce() -> S,
        body: impl FnMut(&mut S, u64),
    ) {
        self.case_with_finish(name, n, setup, body, drop);
    }

    /// Like [`Bench::case`], then `finish(state)`, timed with the body: for work that the body
    /// only starts (e.g. records handed to a writer thread).
    pub fn case_with_finish<S>(
        &mut self,
        name: &str,
        n: u64,
        setup: impl FnOnce() -> S,
        mut body: impl FnMut(&mut S, u64),
        finish: impl FnOnce(S),
    ) {
        if !self.selected(name) {
            return;
        }
        if self.mode == Mode::List {
            println!("{name} {n}");
            return;
        }
        let n = self
            .iters
            .unwrap_or(if self.mode == Mode::Quick { 1 } else { n });
        let mut state = setup();
        let start = Instant::now();
        for i in 0..n {
            body(&mut state, i);
        }
        finish(state);
        let elapsed = start.elapsed();
        self.ran += 1;
        match self.mode {
            Mode::Time if n > 0 => println!(
                "{name}: {:.1} ns/iter ({n} iterations)",
                elapsed.as_nanos() as f64 / n as f64
            ),
            Mode::Time => println!("{name}: 0 iterations"),
            _ => println!("{name}: ok"),
        }
    }

    /// Reports what ran. Filters that match nothing are not an error: cargo passes them to
    /// every bench target, and most cases live in one of them only.
    pub fn done(self) {
        if self.mode == Mode::Quick {
            println!("{}: {} passed, 0 failed", self.group, self.ran);
        }
    }
}
