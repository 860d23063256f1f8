//! Writes the records the gateway makes of notification bodies, for checking them with
//! other tools (tests/schemas.sh validates them against schemas/envelope.schema.json).
//!
//! cargo run --example records -- OUT_DIR BODY.json...
//!
//! Each body is split as the gateway splits it (the default topics, app `default`), once
//! in change mode and once in item mode with CloudEvents headers; the value of every
//! record that is not a dead letter is written as `OUT_DIR/<i>/<n>.json`, `<i>` being the
//! body's position on the command line (from 0). The path of each body that is not a
//! notification (kept whole as a dead letter) is printed as `deadletter <path>`, and a
//! last line gives the counts.

#![allow(clippy::print_stdout)] // printing the results is its job

use std::time::SystemTime;

use waba_gateway::config::KafkaSettings;
use waba_gateway::envelope::to_records;
use waba_gateway::routing::SplitBy;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let out = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: records OUT_DIR BODY.json..."))?,
    );
    std::fs::create_dir_all(&out)?;
    let change = KafkaSettings::default().routing();
    let item = change
        .clone()
        .with_split(SplitBy::Item)
        .with_cloudevents(true);
    let (mut bodies, mut written, mut dead) = (0, 0, 0);
    for (position, path) in args.enumerate() {
        let body = std::fs::read(&path)?;
        bodies += 1;
        let dir = out.join(position.to_string());
        // A body that is not a notification is one in either mode: said once.
        let split = to_records(&change, "default", &body, SystemTime::now());
        if split.deadletter.is_some() {
            println!("deadletter {}", path.to_string_lossy());
            dead += 1;
            continue;
        }
        let items = to_records(&item, "default", &body, SystemTime::now());
        std::fs::create_dir_all(&dir)?;
        for split in [split, items] {
            for record in split.records {
                written += 1;
                std::fs::write(dir.join(format!("{written}.json")), &record.value)?;
            }
        }
    }
    println!("bodies={bodies} records={written} deadletters={dead}");
    Ok(())
}
