//! Every command that reads the configuration loads and checks it the way `check-config`
//! does (DESIGN §2): for each bad configuration of a table, every subcommand exits 78
//! naming the problem, and no marked secret appears anywhere in what it prints.

use crate::binary::run_bounded;

/// Written into every secret of every configuration below: it must never be printed.
const MARK: &str = "MARKED-SECRET-7f3c";

/// What every configuration holds besides its fault: an app, a Graph token, real brokers.
fn base() -> String {
    format!(
        "[apps.default]\nsecret = \"{MARK}-app\"\nverify_token = \"{MARK}-verify\"\n\
         [graph]\naccess_token = \"{MARK}-graph\"\n"
    )
}

/// A bad configuration: its name, the TOML that follows [`base`], files beside it, and
/// what `check-config` says of it.
struct Bad {
    name: &'static str,
    toml: String,
    files: Vec<(&'static str, String)>,
    says: &'static str,
}

fn table() -> Vec<Bad> {
    let kafka = "[kafka]\nbrokers = \"127.0.0.1:9\"\n";
    vec![
        Bad {
            name: "a Java JAAS line with a password",
            toml: format!(
                "{kafka}[kafka.librdkafka]\n\"security.protocol\" = \"SASL_SSL\"\n\
                 \"sasl.jaas.config\" = \"org.apache.kafka.common.security.plain.PlainLoginModule \
                 required username=\\\"u\\\" password=\\\"{MARK}\\\";\"\n"
            ),
            files: vec![],
            says: "kafka.librdkafka.\"sasl.jaas.config\" has a value that is not valid",
        },
        Bad {
            name: "the JAAS line read from a file",
            toml: format!("{kafka}[kafka.librdkafka_files]\n\"sasl.jaas.config\" = \"jaas\"\n"),
            files: vec![("jaas", format!("password=\"{MARK}\";"))],
            says: "kafka.librdkafka.\"sasl.jaas.config\" has a value that is not valid",
        },
        Bad {
            name: "an OAUTHBEARER client secret",
            toml: format!(
                "{kafka}[kafka.librdkafka]\n\"security.protocol\" = \"SASL_SSL\"\n\
                 \"sasl.mechanisms\" = \"OAUTHBEARER\"\n\"sasl.oauthbearer.method\" = \"oidc\"\n\
                 \"sasl.oauthbearer.client.secret\" = \"{MARK}\"\n"
            ),
            files: vec![],
            says: "kafka.librdkafka.\"sasl.oauthbearer.client.secret\" has a value",
        },
        Bad {
            name: "an invalid value read from a file",
            toml: format!("{kafka}[kafka.librdkafka_files]\n\"linger.ms\" = \"linger\"\n"),
            files: vec![("linger", MARK.to_owned())],
            says: "kafka.librdkafka.\"linger.ms\" has a value that is not valid",
        },
        Bad {
            name: "a TOML syntax error on a secret's line",
            toml: format!("{kafka}[kafka.librdkafka]\n\"sasl.password\" = \"{MARK}\n"),
            files: vec![],
            says: "line 9, column 38, in kafka.librdkafka.\"sasl.password\" is not valid TOML",
        },
        Bad {
            name: "SSL with a CA file that is not there",
            toml: format!(
                "{kafka}[kafka.librdkafka]\n\"security.protocol\" = \"SSL\"\n\
                 \"ssl.ca.location\" = \"/nonexistent/ca.pem\"\n\"ssl.key.password\" = \"{MARK}\"\n"
            ),
            files: vec![],
            says: "kafka.librdkafka.\"ssl.ca.location\" = \"/nonexistent/ca.pem\" cannot be read",
        },
        Bad {
            name: "SSL with a certificate this client cannot load",
            toml: format!(
                "{kafka}[kafka.librdkafka]\n\"security.protocol\" = \"SSL\"\n\
                 \"ssl.certificate.location\" = \"cert.pem\"\n\"ssl.key.location\" = \"cert.pem\"\n\
                 \"ssl.key.password\" = \"{MARK}\"\n"
            ),
            files: vec![("cert.pem", format!("not a certificate {MARK}"))],
            says: "librdkafka cannot create a client with these properties",
        },
        Bad {
            name: "a SASL mechanism this build lacks",
            toml: format!(
                "{kafka}[kafka.librdkafka]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\
                 \"sasl.mechanisms\" = \"GSSAPI\"\n\"sasl.password\" = \"{MARK}\"\n"
            ),
            files: vec![],
            says: "No provider for SASL mechanism GSSAPI",
        },
        Bad {
            name: "plain http to a Graph that is not on loopback",
            // Still in base()'s [graph].
            toml: format!("base_url = \"http://graph.example.com\"\n{kafka}"),
            files: vec![],
            says: "graph.base_url = \"http://graph.example.com\" must be https://",
        },
        Bad {
            name: "values of lax types",
            toml: format!(
                "{kafka}cloudevents = \"off\"\n[server]\nmax_connections = 6.5\n\
                 [kafka.librdkafka]\n\"sasl.password\" = \"{MARK}\"\n"
            ),
            files: vec![],
            says: "gateway.toml line 10) is 6.5: write a whole number",
        },
    ]
}

/// Every subcommand that reads the configuration, with the arguments it needs.
const COMMANDS: &[&[&str]] = &[
    &["check-config"],
    &["serve"],
    &["tail", "--exit"],
    &["tail", "--field", "messages", "--max-records", "1"],
    &["replay", "--from", "deadletter", "--dry-run"],
    &["replay", "--from", "deadletter"],
    &["spool", "status"],
    &["spool", "drain", "--dir", "old-spool"],
    &["topics", "check"],
    &["topics", "apply"],
    &["topics", "apply", "--dry-run"],
    &["topics", "asyncapi"],
    &["subscriptions", "list", "--waba-id", "102290129340398"],
    &["subscriptions", "add", "--waba-id", "102290129340398"],
    &[
        "subscriptions",
        "remove",
        "--waba-id",
        "102290129340398",
        "--yes",
    ],
    &["subscriptions", "doctor", "--waba-id", "102290129340398"],
];

#[test]
fn every_command_refuses_every_bad_configuration_with_78_and_no_secret() {
    let mut runs = 0;
    let table = table();
    for bad in &table {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, format!("{}{}", base(), bad.toml)).expect("write");
        for (name, content) in &bad.files {
            std::fs::write(dir.path().join(name), content).expect("write");
        }
        for command in COMMANDS {
            let mut args: Vec<&std::ffi::OsStr> = command.iter().map(|arg| arg.as_ref()).collect();
            args.extend(["--config".as_ref(), config.as_os_str()]);
            let (code, printed) = run_bounded(&args, dir.path(), &[]);
            let line = format!("{} with {}", command.join(" "), bad.name);
            assert_eq!(code, Some(78), "{line}: {printed}");
            assert!(
                printed.contains(bad.says),
                "{line} names the problem: {printed}"
            );
            assert!(
                !printed.contains("MARKED"),
                "{line} shows a secret: {printed}"
            );
            runs += 1;
        }
        assert!(
            !dir.path().join("old-spool").exists() && !dir.path().join("data").exists(),
            "{}: nothing was created",
            bad.name
        );
    }
    assert_eq!(runs, table.len() * COMMANDS.len());
    eprintln!(
        "secret sweep: {runs} runs ({} configurations × {} commands), each exit 78 naming its \
         problem, no marked secret printed",
        table.len(),
        COMMANDS.len()
    );
}
