//! Records the revision the gateway is built from, for `waba_gateway_build_info{revision}`:
//! `WABA_GATEWAY_REVISION` when the build sets it (a container build without `.git`),
//! else `git rev-parse`, else "unknown".

fn main() {
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
