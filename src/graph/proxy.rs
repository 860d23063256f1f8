//! The standard proxy variables for Graph calls: `HTTPS_PROXY` (or `ALL_PROXY`, in either
//! case) tunnels `https` requests through the proxy with `CONNECT`, `NO_PROXY` exempts
//! hosts. Plain `http` goes only to loopback addresses (see `check_base_url`), so it is
//! never sent through a proxy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects directly, or through the proxy the environment names for the destination.
#[derive(Clone)]
pub struct ProxyConnector {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

impl ProxyConnector {
    /// A connector that follows the proxy variables of this process's environment.
    pub fn from_env() -> Self {
        let mut direct = HttpConnector::new();
        // The TLS layer around this connector decides the scheme.
        direct.enforce_http(false);
        Self {
            direct,
            proxies: Arc::new(Matcher::from_env()),
        }
    }
}

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let intercept = (destination.scheme_str() == Some("https"))
            .then(|| self.proxies.intercept(&destination))
            .flatten();
        match intercept {
            Some(intercept) => {
                let mut tunnel = Tunnel::new(intercept.uri().clone(), self.direct.clone());
                if let Some(credentials) = intercept.basic_auth() {
                    tunnel = tunnel.with_auth(credentials.clone());
                }
                Box::pin(async move { Ok(tunnel.call(destination).await?) })
            }
            None => {
                let connecting = self.direct.call(destination);
                Box::pin(async move { Ok(connecting.await?) })
            }
        }
    }
}
