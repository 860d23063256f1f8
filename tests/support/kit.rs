//! The consumer kit's programs, as `tests/run.sh` installs them and sets their variables
//! (`tests/e2e.rs`, `tests/traces.rs`).

/// A tool the consumer-kit tests need, from the variable tests/run.sh sets.
pub fn kit_tool(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set (tests/run.sh installs the consumer kit's tools and sets it)")
    })
}

/// The kit's consumers, each by name with its program and first arguments: the Rust one
/// (`WABA_GATEWAY_CONSUMER`) and the Python one (`WABA_GATEWAY_PYTHON` running
/// `examples/consumer.py`).
pub fn kit_consumers() -> Vec<(&'static str, Vec<String>)> {
    vec![
        ("rust", vec![kit_tool("WABA_GATEWAY_CONSUMER")]),
        (
            "python",
            vec![
                kit_tool("WABA_GATEWAY_PYTHON"),
                concat!(env!("CARGO_MANIFEST_DIR"), "/examples/consumer.py").to_owned(),
            ],
        ),
    ]
}
