//! Tests of the generated code: round trips, wire layout, error paths, random input, and the
//! `amq-protocol` crate as an oracle. The generated proptest strategies
//! (`crate::generated::arbitrary`) build on the primitives in [`strategies`].

mod fuzz;
mod methods;
mod oracle;
mod properties;
pub(crate) mod strategies;
