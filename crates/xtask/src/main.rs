//! Repository tasks.
//!
//! `cargo run -p xtask -- codegen` reads the AMQP 0-9-1 spec XML (RabbitMQ's edition, at
//! `<workspace>/../shared/spec/amqp0-9-1-rabbit.xml`, or wherever `WARREN_SPEC` points) and
//! writes `crates/warren-codec/src/generated.rs`: constants, one struct per method, the `Method`
//! enum and `BasicProperties`. `codegen --check` regenerates in memory and fails if the committed
//! file differs; CI runs it.
//!
//! The output goes through `rustfmt --edition 2021` (run from the workspace root, so it sees the
//! same configuration as `cargo fmt`), which keeps `cargo fmt --check` happy.

mod emit;
mod spec;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "usage: cargo run -p xtask -- codegen [--check]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["codegen"] => codegen(false),
        ["codegen", "--check"] => codegen(true),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // crates/xtask -> crates -> workspace root.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

fn spec_path(root: &Path) -> PathBuf {
    match std::env::var_os("WARREN_SPEC") {
        Some(p) => PathBuf::from(p),
        None => root.join("../shared/spec/amqp0-9-1-rabbit.xml"),
    }
}

fn codegen(check: bool) -> Result<(), String> {
    let root = workspace_root();
    let spec_file = spec_path(&root);
    let xml = std::fs::read_to_string(&spec_file)
        .map_err(|e| format!("reading {}: {e}", spec_file.display()))?;
    let spec = spec::Spec::parse(&xml)?;
    let source = emit::generate(&spec)?;
    let formatted = rustfmt(&root, &source)?;

    let out = root.join("crates/warren-codec/src/generated.rs");
    if check {
        let current = std::fs::read_to_string(&out).unwrap_or_default();
        if current != formatted {
            return Err(format!(
                "{} is out of date with {}; run `cargo run -p xtask -- codegen`",
                out.display(),
                spec_file.display()
            ));
        }
        println!("{} is up to date", out.display());
    } else {
        std::fs::write(&out, formatted).map_err(|e| format!("writing {}: {e}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn rustfmt(root: &Path, source: &str) -> Result<String, String> {
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting rustfmt: {e}"))?;
    // Feed stdin from a thread so a large output cannot deadlock against a full stdout pipe.
    let mut stdin = child.stdin.take().ok_or("rustfmt has no stdin")?;
    let input = source.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("running rustfmt: {e}"))?;
    writer
        .join()
        .map_err(|_| "rustfmt writer thread panicked".to_owned())?
        .map_err(|e| format!("writing to rustfmt: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "rustfmt failed on the generated code:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| format!("rustfmt output: {e}"))
}
