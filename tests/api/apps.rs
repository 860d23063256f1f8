//! Several Meta apps on one gateway, each with a current and a previous secret: every
//! path takes exactly its own app's secrets and verify token, and says which one matched.

use crate::helpers::*;

const APPS: [(&str, &str, &str, &str, &str); 2] = [
    // name, path, current secret, previous secret, verify token
    (
        "alpha",
        "/alpha",
        "alpha-current",
        "alpha-previous",
        "alpha-token",
    ),
    (
        "beta",
        "/hooks/beta",
        "beta-current",
        "beta-previous",
        "beta-token",
    ),
];

async fn spawn_two_apps() -> TestApp {
    let mut env = Vec::new();
    for (name, path, current, previous, token) in APPS {
        let key = |setting: &str| format!("WABA_GATEWAY__APPS__{}__{setting}", name.to_uppercase());
        env.push((key("PATH"), path.to_owned()));
        env.push((key("SECRET"), current.to_owned()));
        env.push((key("PREVIOUS_SECRETS"), previous.to_owned()));
        env.push((key("VERIFY_TOKEN"), token.to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app(&env).await
}

#[tokio::test]
async fn each_path_takes_its_own_apps_current_and_previous_secret_and_no_other() {
    let app = spawn_two_apps().await;
    let body = fixture("messages_text.json");
    let mut expected_records = 0;
    for (name, path, _, _, _) in APPS {
        for (other, _, other_current, other_previous, _) in APPS {
            for (secret, which) in [(other_current, "current"), (other_previous, "previous")] {
                let answer = post_signed(&app.url(path), &body, secret).await;
                let own = other == name;
                let want = if own { 200 } else { 401 };
                assert_eq!(
                    answer.status, want,
                    "{path} signed with {other}'s {which} secret"
                );
                if own {
                    expected_records += 1;
                    let records = app.memory.as_ref().expect("memory").records();
                    assert_eq!(records.len(), expected_records);
                    let last = records.last().expect("a record");
                    assert_eq!(last.header("wa-app"), Some(name), "{path}");
                }
            }
        }
        for which in ["current", "previous"] {
            assert_eq!(
                app.metric(&format!(
                    r#"waba_gateway_signature_matches_total{{app="{name}",secret="{which}"}}"#
                ))
                .await,
                1.0,
                "{name} {which}"
            );
        }
        assert_eq!(
            app.metric(&format!(
                r#"waba_gateway_signature_failures_total{{app="{name}",reason="mismatch"}}"#
            ))
            .await,
            2.0,
            "{name}: the other app's two secrets"
        );
    }
}

#[tokio::test]
async fn each_path_verifies_with_its_own_apps_token_only() {
    let app = spawn_two_apps().await;
    for (name, path, _, _, _) in APPS {
        for (other, _, _, _, token) in APPS {
            let url = app.url(&format!(
                "{path}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
            ));
            let answer = get(&url).await;
            if other == name {
                assert_eq!(answer.status, 200, "{path} with {other}'s token");
                assert_eq!(answer.text(), "1158201444");
            } else {
                assert_eq!(answer.status, 403, "{path} with {other}'s token");
            }
        }
    }
}
