//! Whether Chromium really starts here: `/readyz` is not ready until a browser has started
//! and answered CDP, and not again after a launch failed for Chromium's own reasons, until
//! one succeeds. A broken Chromium (a bad image, a missing library, a sandbox the container
//! forbids) is then a failed rollout, not a fleet of nodes that fail every create while
//! their health checks stay green.
//!
//! [`Proving`] wraps the real launcher, so every launch (the warm pool's, a create's, the
//! probe's) reports; a [`Prober`] launches a throw-away browser when readiness is asked and
//! nothing else would prove Chromium (no warm pool, no creates: a node taken out of rotation
//! must still find its way back).

use super::{BrowserInstance, BrowserRecord, LaunchError, LaunchSpec, Launcher};
use crate::fault::Failure;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the launches so far say about Chromium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Proof {
    /// No browser has started yet.
    Unproven,
    /// The last launch that tells (see [`says_chromium_is_broken`]) succeeded.
    Proven,
    /// The last such launch failed, with this reason.
    Failed(String),
}

/// The launches' verdict, shared by the launcher that records it and `/readyz`.
#[derive(Debug)]
pub(crate) struct LaunchProof {
    // A std Mutex: read and written in single statements, never across an await.
    state: Mutex<Proof>,
}

impl Default for LaunchProof {
    fn default() -> Self {
        Self {
            state: Mutex::new(Proof::Unproven),
        }
    }
}

impl LaunchProof {
    pub(crate) fn get(&self) -> Proof {
        self.state.lock().unwrap().clone()
    }

    /// For `/readyz`: `Err` says why no browser is known to start.
    pub(crate) fn readiness(&self) -> Result<(), Failure> {
        match self.get() {
            Proof::Proven => Ok(()),
            Proof::Unproven => Err(Failure::browser(
                "no browser has started here yet (the first launch proves Chromium)",
            )),
            Proof::Failed(why) => Err(Failure::browser(format!(
                "the last browser launch failed: {why}"
            ))),
        }
    }

    fn record(&self, spec: &LaunchSpec, result: &Result<Box<dyn BrowserInstance>, LaunchError>) {
        let new = match result {
            Ok(_) => Proof::Proven,
            // Only a plain launch tells: one with a tenant's extension, profile or
            // certificates may fail for those, and one tenant must not take a node out of
            // rotation (the probe, asked by /readyz, makes a plain one).
            Err(e) if says_chromium_is_broken(e) && is_plain(spec) => Proof::Failed(e.to_string()),
            // A session's own inputs or a full machine: nothing about Chromium.
            Err(_) => return,
        };
        *self.state.lock().unwrap() = new;
    }
}

/// Whether a launch carries nothing of a tenant's: no extension, no saved profile, no CA
/// certificates.
fn is_plain(spec: &LaunchSpec) -> bool {
    spec.extension.is_none() && spec.context.is_none() && spec.ca_certificates.is_empty()
}

/// Whether a launch failure is Chromium's (or its sandbox's), not the session's.
pub(crate) fn says_chromium_is_broken(e: &LaunchError) -> bool {
    matches!(
        e,
        LaunchError::Spawn { .. }
            | LaunchError::EarlyExit { .. }
            | LaunchError::NotReady(_)
            | LaunchError::Sandbox(_)
    )
}

/// A launcher that records every launch's outcome in a [`LaunchProof`].
pub(crate) struct Proving {
    inner: Arc<dyn Launcher>,
    proof: Arc<LaunchProof>,
}

impl Proving {
    pub(crate) fn new(inner: Arc<dyn Launcher>, proof: Arc<LaunchProof>) -> Self {
        Self { inner, proof }
    }
}

#[async_trait::async_trait]
impl Launcher for Proving {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Box<dyn BrowserInstance>, LaunchError> {
        let result = self.inner.launch(spec).await;
        self.proof.record(spec, &result);
        result
    }

    async fn adopt(&self, record: BrowserRecord) -> Option<Box<dyn BrowserInstance>> {
        self.inner.adopt(record).await
    }

    fn readiness(&self) -> Result<(), Failure> {
        self.inner.readiness()
    }

    fn dialer(&self) -> crate::netns::Dialer {
        self.inner.dialer()
    }

    fn enforces_egress(&self) -> bool {
        self.inner.enforces_egress()
    }
}

/// Starts at most one throw-away browser at a time to prove Chromium, when asked (by
/// `/readyz`) and Chromium is not proven: a node without a warm pool (whose refills prove it
/// otherwise) would else never know before its first create. Failed probes back off from
/// 2 s to a minute. Nothing is started unless someone asks for readiness.
#[derive(Debug)]
pub(crate) struct Prober {
    // A std Mutex: checked and set in one short section, never across an await.
    state: Mutex<ProbeState>,
}

#[derive(Debug)]
struct ProbeState {
    running: bool,
    not_before: std::time::Instant,
    backoff: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const LAST_BACKOFF: Duration = Duration::from_secs(60);

impl Default for Prober {
    fn default() -> Self {
        Self {
            state: Mutex::new(ProbeState {
                running: false,
                not_before: std::time::Instant::now(),
                backoff: FIRST_BACKOFF,
            }),
        }
    }
}

impl Prober {
    /// Whether a probe may start now; if so, it counts as running until [`Self::done`].
    pub(crate) fn begin(&self) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.running || std::time::Instant::now() < state.not_before {
            return false;
        }
        state.running = true;
        true
    }

    pub(crate) fn done(&self, succeeded: bool) {
        let mut state = self.state.lock().unwrap();
        state.running = false;
        if succeeded {
            state.backoff = FIRST_BACKOFF;
        } else {
            state.not_before = std::time::Instant::now() + state.backoff;
            state.backoff = (state.backoff * 2).min(LAST_BACKOFF);
        }
    }
}

/// One probe: a browser started through `launcher` (which records the outcome) and
/// stopped at once, its folder removed.
pub(crate) async fn probe_once(launcher: Arc<dyn Launcher>, prober: Arc<Prober>) {
    let spec = LaunchSpec {
        background: true,
        ..LaunchSpec::new(super::pool::POOL_VIEWPORT)
    };
    let succeeded = match launcher.launch(&spec).await {
        Ok(mut browser) => {
            browser.shutdown().await;
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "the launch probe could not start a browser");
            false
        }
    };
    prober.done(succeeded);
}
