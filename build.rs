//! Records the revision the gateway is built from, for `waba_gateway_build_info{revision}`:
//! `WABA_GATEWAY_REVISION` when the build sets it (a container build without `.git`),
//! else `git rev-parse`, else "unknown".
//!
//! And says which prerequisites of the test suite this machine lacks, as `missing_*` cfg
//! flags: a test that needs one carries `#[cfg_attr(missing_x, ignore = "needs …")]`, so that `cargo test`
//! lists it as not run. Under `CI=true` no flag is set: every test runs, and one whose
//! prerequisite is missing fails.

fn main() {
    revision();
    missing_prerequisites();
}

fn missing_prerequisites() {
    let env = |name: &str| {
        println!("cargo:rerun-if-env-changed={name}");
        std::env::var_os(name).filter(|value| !value.is_empty())
    };
    let ci = env("CI").is_some_and(|value| value == "true");
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    });
    let on_path = |program: &str| {
        env("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    };
    let meta_payloads = std::path::Path::new("../shared/fixtures/meta-payloads");
    if meta_payloads.is_dir() {
        println!("cargo:rerun-if-changed={}", meta_payloads.display());
    }
    let checks = [
        (
            "missing_tansu",
            env("WABA_GATEWAY_TANSU").is_some_and(|path| std::path::Path::new(&path).is_file()),
        ),
        ("missing_haproxy", on_path("haproxy")),
        ("missing_kafkajs", env("WABA_GATEWAY_KAFKAJS").is_some()),
        ("missing_python_kit", env("WABA_GATEWAY_PYTHON").is_some()),
        ("missing_consumer", env("WABA_GATEWAY_CONSUMER").is_some()),
        ("missing_meta_payloads", meta_payloads.is_dir()),
        ("missing_root", root),
        (
            "missing_memory_cgroup",
            root && std::path::Path::new("/sys/fs/cgroup/memory").is_dir(),
        ),
    ];
    for (flag, present) in checks {
        println!("cargo:rustc-check-cfg=cfg({flag})");
        if !present && !ci {
            println!("cargo:rustc-cfg={flag}");
        }
    }
}

fn revision() {
    println!("cargo:rerun-if-env-changed=WABA_GATEWAY_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    let revision = std::env::var("WABA_GATEWAY_REVISION")
        .ok()
        .filter(|revision| !revision.is_empty())
        .or_else(|| {
            let output = std::process::Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WABA_GATEWAY_REVISION={revision}");
}
