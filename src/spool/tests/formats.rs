//! Spools written by earlier releases: the on-disk format is a contract between them.

use super::*;

/// A copy of the spool `tests/fixtures/<name>`, opened.
fn open_fixture(name: &str) -> (tempfile::TempDir, Arc<Spool>, Recovery) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let dir = tempfile::tempdir().expect("dir");
    for file in std::fs::read_dir(fixture).expect("fixture") {
        let file = file.expect("entry");
        std::fs::copy(file.path(), dir.path().join(file.file_name())).expect("copy");
    }
    let metrics = Arc::new(Metrics::new(Vec::new()));
    let (spool, recovery) = Spool::open(dir.path(), 1 << 20, metrics).expect("opens");
    (dir, spool, recovery)
}

/// The on-disk format is a contract between releases: replicas are upgraded in place, and
/// a spool written by one release is replayed by the next. `tests/fixtures/spool-v1` was
/// written by the first release (five entries, the first two released and checkpointed, a
/// torn frame at the end); a change to the format keeps this test passing or adds a
/// tested migration.
mod format_v1 {
    use super::*;
    use crate::envelope;

    fn fixture(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[tokio::test]
    async fn a_spool_written_by_the_first_release_replays_the_same_records() {
        let (_dir, spool, recovery) = open_fixture("spool-v1");
        assert_eq!(
            recovery,
            Recovery {
                replayed: 3,
                torn_bytes: 75,
                // The torn frame, copied before the cut.
                quarantined: 1
            }
        );

        let routing = crate::config::KafkaSettings::default().routing();
        let expected_bodies = [
            (2, "shop", "multi_two_entries_three_fields_each.json"),
            (
                3,
                "default",
                "messages_image_escaped_unicode_and_slashes.json",
            ),
            (4, "default", "entry_without_changes.json"),
        ];
        let mut records = Vec::new();
        let mut next = 0;
        for (seq, app, name) in expected_bodies {
            assert_eq!(spool.next_at_or_after(next), Some(seq));
            let entry = spool.read(seq).expect("reads").expect("unreleased");
            assert_eq!(&*entry.app, app);
            assert_eq!(entry.received_at_ms, 1_795_000_000_000 + seq * 1000);
            let body = std::fs::read(fixture("tests/fixtures").join(name)).expect("body");
            assert_eq!(entry.body, body, "entry {seq} is {name} byte for byte");
            let received_at = crate::epoch::at(entry.received_at_ms);
            let split = envelope::to_records(&routing, &entry.app, &entry.body, received_at);
            assert_eq!(split.deadletter, None);
            for record in split.records {
                records.push((
                    seq,
                    record.topic.clone(),
                    record.key.clone().unwrap_or_default(),
                    record.header("wa-event-id").unwrap_or_default().to_owned(),
                ));
            }
            next = seq + 1;
        }
        assert_eq!(spool.next_at_or_after(next), None);
        let expected = [
            (
                2,
                "whatsapp.messages",
                "420123456789002:4915112345678",
                "125ada5cae02a1e14bfea76691624814",
            ),
            (
                2,
                "whatsapp.phone_number_quality_update",
                "310987654321001",
                "14d7ea759173852bc7571cb3a49d1019",
            ),
            (
                2,
                "whatsapp.message_template_status_update",
                "310987654321001",
                "ea761e9db2eb506d1df350a9dfd9c812",
            ),
            (
                2,
                "whatsapp.messages",
                "420123456789002:4915112345678",
                "af815028d2b95a78f07600f31078aa26",
            ),
            (
                2,
                "whatsapp.account_review_update",
                "310987654321002",
                "d0a68013b89a4f7d2fa36b82abdfabf0",
            ),
            (
                2,
                "whatsapp.template_category_update",
                "310987654321002",
                "6f75f7295a68b13cf172495e3ef7b445",
            ),
            (
                3,
                "whatsapp.messages",
                "420123456789002:4915112345678",
                "1f3b496a09e94ac68f9338525d514b80",
            ),
            (
                4,
                "whatsapp.unrouted",
                "310987654321001",
                "dfe17cec19ea87c6463c28e459d2084a",
            ),
        ]
        .map(|(seq, topic, key, id)| (seq, topic.to_owned(), key.to_owned(), id.to_owned()));
        assert_eq!(records, expected);

        // Released, the replayed entries leave an empty spool that takes new entries after
        // the fixture's last sequence number.
        for seq in 2..=4 {
            spool.release(seq);
        }
        assert_eq!(spool.unreleased(), 0);
        let appended = spool
            .append(Entry {
                app: "default".into(),
                received_at_ms: 1,
                body: bytes::Bytes::from_static(b"{}"),
                trace: None,
            })
            .await
            .expect("appended");
        assert_eq!(appended, 5);
    }
}

/// `tests/fixtures/spool-traced` was written by the first release with traces: a v2
/// checkpoint (entry 0 released), two entries written without a trace (`WABA` frames,
/// as with tracing off) and two with one (`WABT` frames), one of them with a
/// `tracestate` and one not sampled. Every later release reads it the same way.
mod format_traced {
    use super::*;
    use crate::trace::SpanContext;

    #[tokio::test]
    async fn a_spool_with_traced_entries_replays_each_entry_with_its_trace() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (_dir, spool, recovery) = super::open_fixture("spool-traced");
        assert_eq!(
            recovery,
            Recovery {
                replayed: 3,
                torn_bytes: 0,
                quarantined: 0
            }
        );
        let trace = |parent: &str, state: Option<&str>| {
            SpanContext::from_headers(parent.as_bytes(), state.map(str::as_bytes))
        };
        let expected = [
            (
                1,
                "default",
                "messages_image_escaped_unicode_and_slashes.json",
                None,
            ),
            (
                2,
                "shop",
                "multi_two_entries_three_fields_each.json",
                trace(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    Some("congo=t61rcWkgMzE"),
                ),
            ),
            (
                3,
                "default",
                "messages_status_sent.json",
                trace(
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                    None,
                ),
            ),
        ];
        let mut next = 0;
        for (seq, app, name, trace) in expected {
            assert_eq!(spool.next_at_or_after(next), Some(seq));
            let entry = spool.read(seq).expect("reads").expect("unreleased");
            assert_eq!(&*entry.app, app);
            assert_eq!(entry.received_at_ms, 1_796_000_000_000 + seq * 1000);
            let body = std::fs::read(root.join("tests/fixtures").join(name)).expect("body");
            assert_eq!(entry.body, body, "entry {seq} is {name} byte for byte");
            assert!(trace.is_none() || entry.trace.is_some(), "entry {seq}");
            assert_eq!(entry.trace, trace, "entry {seq}");
            next = seq + 1;
        }
        assert_eq!(spool.next_at_or_after(next), None);
    }
}
