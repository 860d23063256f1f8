//! Certificate rotation: the files are checked every `reload_interval_ms`, and SIGHUP
//! reloads them at once. A reload that fails keeps the certificate in use.

use std::sync::Arc;

use super::Tls;
use crate::metrics::Metrics;

/// Reloads the TLS certificate on SIGHUP, and when its files change. Without TLS, SIGHUP
/// is only logged (it would otherwise end the process).
pub async fn reload(tls: Option<Arc<Tls>>, metrics: Arc<Metrics>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; TLS files are still checked for changes");
            None
        }
    };
    let Some(tls) = tls else {
        while let Some(hangup) = hangup.as_mut() {
            if hangup.recv().await.is_none() {
                return;
            }
            tracing::info!("SIGHUP: nothing to reload without [server.tls]");
        }
        return;
    };
    let mut interval = tokio::time::interval(tls.reload_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        let (trigger, reloaded) = tokio::select! {
            _ = interval.tick() => ("file change", tls.reload_if_changed()),
            Some(()) = async { match hangup.as_mut() { Some(hangup) => hangup.recv().await, None => std::future::pending().await } } => {
                ("SIGHUP", tls.reload().map(|()| true))
            }
        };
        match reloaded {
            Ok(false) => {}
            Ok(true) => {
                metrics.tls_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(
                    trigger,
                    "TLS certificate and key reloaded; new connections use them"
                );
            }
            Err(error) => {
                metrics.tls_reloads.with_label_values(&["error"]).inc();
                tracing::warn!(trigger, %error, "TLS files not reloaded; the certificate in use stays");
            }
        }
    }
}
