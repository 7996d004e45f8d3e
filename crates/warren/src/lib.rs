//! The `warren` binary's parts that other code reads too: the configuration file parser
//! (`config`), which the fuzz checks (crates/warren-fuzz) feed arbitrary files.

pub mod config;
