//! `[server.tls]`: HTTPS with certificates made here, rotation without dropping open
//! connections, and Meta's mTLS client certificate (good, none, another CA, another name).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::helpers::*;

/// Meta's webhook client certificate name.
const META_CLIENT: &str = "client.webhooks.fbclientcerts.com";

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM and as rustls wants them.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("CA");
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate with `common_name` and the SAN DNS names `names`.
    pub fn leaf(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("leaf parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub fn server(&self, common_name: &str) -> Leaf {
        self.leaf(
            common_name,
            &["localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client(&self, common_name: &str, names: &[&str]) -> Leaf {
        self.leaf(common_name, names, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Writes a certificate and key where `[server.tls]` reads them, replacing files
/// atomically as cert-manager does.
pub fn install(dir: &Path, leaf: &Leaf) {
    for (name, text) in [("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)] {
        let staged = dir.join(format!(".{name}.new"));
        std::fs::write(&staged, text).expect("write");
        std::fs::rename(&staged, dir.join(name)).expect("rename");
    }
}

/// The settings of an HTTPS gateway serving the files in `dir`.
pub fn tls_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "WABA_GATEWAY__SERVER__TLS__CERT_FILE",
            dir.join("tls.crt").display().to_string(),
        ),
        (
            "WABA_GATEWAY__SERVER__TLS__KEY_FILE",
            dir.join("tls.key").display().to_string(),
        ),
    ]
}

/// An HTTPS connection that trusts `ca`, presenting `client` if given.
pub struct Https {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub server_certificate: CertificateDer<'static>,
}

impl Https {
    pub async fn connect(addr: SocketAddr, ca: &Ca, client: Option<&Leaf>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.issuer.der().clone())
            .expect("the CA is a valid root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = match client {
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![leaf.der.clone()],
                    PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("a PEM key"),
                )
                .expect("a client certificate"),
            None => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let stream: TlsStream<TcpStream> = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("a name"), tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let server_certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("the server presented a certificate")
            .clone()
            .into_owned();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            server_certificate,
        })
    }

    /// POSTs `body` to `/webhook` signed with [`SECRET`]; the status, or why none came.
    pub async fn notify(&mut self, body: &[u8]) -> Result<u16, String> {
        let request = http::Request::post("/webhook")
            .header("host", "localhost")
            .header("x-hub-signature-256", sign(SECRET, body))
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("a request");
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

/// Waits until a new connection to `addr` is served `certificate`.
async fn wait_until_served(addr: SocketAddr, ca: &Ca, certificate: &Leaf, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = Https::connect(addr, ca, None).await.expect("HTTPS");
        if fresh.server_certificate == certificate.der {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects and sends one notification: the status, or why there was none.
async fn notify_once(addr: SocketAddr, ca: &Ca, client: Option<&Leaf>) -> Result<u16, String> {
    Https::connect(addr, ca, client)
        .await?
        .notify(&fixture("messages_text.json"))
        .await
}

#[tokio::test]
async fn https_is_served_and_a_rotated_certificate_is_taken_without_dropping_connections() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Ca::new("waba-gateway test CA");
    let first = ca.server("first");
    install(dir.path(), &first);
    let mut env = tls_env(dir.path());
    env.push((
        "WABA_GATEWAY__SERVER__TLS__RELOAD_INTERVAL_MS",
        "100".to_owned(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app(&env).await;
    let body = fixture("messages_text.json");

    let mut open = Https::connect(app.addr, &ca, None).await.expect("HTTPS");
    assert_eq!(open.server_certificate, first.der);
    assert_eq!(open.notify(&body).await, Ok(200));
    // Plain HTTP on the HTTPS port gets no answer.
    assert_eq!(try_notify(&app.url("/webhook"), &body).await, None);

    // A key that is not the certificate's is refused; the certificate in use stays.
    std::fs::write(dir.path().join("tls.key"), ca.server("other").key_pem).expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    while app
        .metric(r#"waba_gateway_tls_reloads_total{outcome="error"}"#)
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the broken key was never noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = Https::connect(app.addr, &ca, None).await.expect("HTTPS");
    assert_eq!(during.server_certificate, first.der);

    let second = ca.server("second");
    install(dir.path(), &second);
    wait_until_served(
        app.addr,
        &ca,
        &second,
        "the new certificate was never served",
    )
    .await;
    assert_eq!(
        app.metric(r#"waba_gateway_tls_reloads_total{outcome="ok"}"#)
            .await,
        1.0
    );
    // The connection opened before the rotation is still served.
    assert_eq!(open.notify(&body).await, Ok(200));
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 2);
}

#[tokio::test]
async fn mtls_takes_only_metas_name_from_the_configured_ca() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server_ca = Ca::new("server CA");
    install(dir.path(), &server_ca.server("gateway"));
    let meta_ca = Ca::new("Meta outbound API CA (test)");
    std::fs::write(dir.path().join("client-ca.pem"), meta_ca.pem()).expect("write");
    let mut env = tls_env(dir.path());
    env.push((
        "WABA_GATEWAY__SERVER__TLS__CLIENT_CA_FILE",
        dir.path().join("client-ca.pem").display().to_string(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app(&env).await;

    let good = meta_ca.client(META_CLIENT, &[META_CLIENT]);
    assert_eq!(
        notify_once(app.addr, &server_ca, Some(&good)).await,
        Ok(200)
    );
    // The name may be in the SAN only, or in the CN only.
    let san_only = meta_ca.client("something else", &[META_CLIENT]);
    assert_eq!(
        notify_once(app.addr, &server_ca, Some(&san_only)).await,
        Ok(200)
    );
    let cn_only = meta_ca.client(META_CLIENT, &[]);
    assert_eq!(
        notify_once(app.addr, &server_ca, Some(&cn_only)).await,
        Ok(200)
    );

    let other_ca = Ca::new("another CA");
    let refused = [
        ("no certificate", None, "no_client_certificate"),
        (
            "another CA",
            Some(other_ca.client(META_CLIENT, &[META_CLIENT])),
            "client_certificate",
        ),
        (
            "another name",
            Some(meta_ca.client("client.example.com", &["client.example.com"])),
            "client_name",
        ),
    ];
    for (case, client, reason) in &refused {
        let outcome = notify_once(app.addr, &server_ca, client.as_ref()).await;
        assert!(outcome.is_err(), "{case}: {outcome:?}");
        assert_eq!(
            app.metric(&format!(
                r#"waba_gateway_tls_handshake_failures_total{{reason="{reason}"}}"#
            ))
            .await,
            1.0,
            "{case}"
        );
    }
    assert_eq!(app.memory.as_ref().expect("memory").records().len(), 3);
}

#[tokio::test]
async fn tls_files_that_cannot_be_used_are_configuration_errors_naming_the_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Ca::new("CA");
    let base = [
        ("WABA_GATEWAY__APPS__DEFAULT__SECRET", "s"),
        ("WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN", "t"),
    ];
    let problems = |extra: Vec<(&'static str, String)>| {
        let env = base
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let checked = waba_gateway::config::Settings::load(None, env)
            .and_then(|settings| waba_gateway::app::check(&settings));
        match checked {
            Ok(_) => String::new(),
            Err(error) => error.to_string(),
        }
    };
    let missing = problems(tls_env(dir.path()));
    assert!(missing.contains("server.tls: cert_file = "), "{missing}");
    assert!(missing.contains("cannot be read"), "{missing}");

    let leaf = ca.server("gateway");
    install(dir.path(), &leaf);
    assert_eq!(problems(tls_env(dir.path())), "");
    std::fs::write(dir.path().join("tls.key"), ca.server("x").key_pem).expect("write");
    let mismatch = problems(tls_env(dir.path()));
    assert!(
        mismatch.contains("cert_file and key_file cannot be used together"),
        "{mismatch}"
    );
    std::fs::write(dir.path().join("tls.key"), "not a key").expect("write");
    let no_key = problems(tls_env(dir.path()));
    assert!(no_key.contains("holds no PEM private key"), "{no_key}");
    install(dir.path(), &leaf);
    let mut env = tls_env(dir.path());
    env.push((
        "WABA_GATEWAY__SERVER__TLS__CLIENT_CA_FILE",
        dir.path().join("tls.key").display().to_string(),
    ));
    let bad_ca = problems(env);
    assert!(
        bad_ca.contains("client_ca_file = ") && bad_ca.contains("holds no PEM certificate"),
        "{bad_ca}"
    );
}

#[tokio::test]
async fn sighup_makes_the_running_binary_serve_the_new_certificate() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = Ca::new("CA");
    let first = ca.server("first");
    install(dir.path(), &first);
    let mut env = tls_env(dir.path());
    env.extend([
        // An hour: only SIGHUP can make the gateway look at the files during this test.
        (
            "WABA_GATEWAY__SERVER__TLS__RELOAD_INTERVAL_MS",
            "3600000".to_owned(),
        ),
        ("WABA_GATEWAY__APPS__DEFAULT__SECRET", SECRET.to_owned()),
        (
            "WABA_GATEWAY__APPS__DEFAULT__VERIFY_TOKEN",
            VERIFY_TOKEN.to_owned(),
        ),
    ]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = GatewayProcess::start(dir.path(), &env);
    serve.wait_ready().await;
    let addr: SocketAddr = serve.public.parse().expect("an address");
    let body = fixture("messages_text.json");

    let mut open = Https::connect(addr, &ca, None).await.expect("HTTPS");
    assert_eq!(open.server_certificate, first.der);
    assert_eq!(open.notify(&body).await, Ok(200));

    let second = ca.server("second");
    install(dir.path(), &second);
    let before = Https::connect(addr, &ca, None).await.expect("HTTPS");
    assert_eq!(
        before.server_certificate, first.der,
        "no reload before SIGHUP"
    );
    serve.send_signal("HUP");
    wait_until_served(addr, &ca, &second, "SIGHUP did not reload the certificate").await;
    assert_eq!(
        open.notify(&body).await,
        Ok(200),
        "the open connection survives"
    );
    assert_eq!(
        serve
            .metric(r#"waba_gateway_tls_reloads_total{outcome="ok"}"#)
            .await,
        1.0
    );
    assert_eq!(serve.signal("TERM").code(), Some(0));
}
