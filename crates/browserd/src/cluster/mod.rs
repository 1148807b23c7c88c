//! Several browserd nodes sharing one PostgreSQL database: any node answers for any session.
//!
//! There is no cluster protocol of browserd's own. The database holds a lease per node
//! (`nodes`), renewed by a heartbeat; a node whose lease runs out is declared lost by a
//! sweeper on any other node, in the same transaction that ends its sessions as ERROR. A
//! browser lives and dies with its node: nothing is moved. Requests and websockets for a
//! session whose browser runs elsewhere are forwarded to its node as bytes
//! ([`forward`]). With the embedded database there is one node and none of this runs.

pub(crate) mod forward;

use crate::model::{Ending, Node, NodeState, SessionStatus};
use crate::sessions::SessionManager;
use crate::store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// The end reason of a lost node's sessions; the node's name follows.
pub(crate) const NODE_LOST: &str = "the browserd node running this session stopped answering (its lease in the database ran out), so its browser is gone: node ";

/// How this node takes part.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: String,
    /// Where other nodes reach this one.
    pub url: String,
    pub public_url: Option<String>,
    /// How long a heartbeat keeps this node alive in others' eyes.
    pub lease: Duration,
}

impl NodeSettings {
    /// Heartbeats and sweeps run five times per lease: a node is declared lost at most a
    /// fifth of a lease after its lease runs out.
    pub fn beat(&self) -> Duration {
        self.lease / 5
    }
}

/// This node's membership.
#[derive(Debug)]
pub struct Cluster {
    store: Store,
    settings: NodeSettings,
    /// The epoch of this node's registration; a heartbeat under it that updates nothing
    /// means the cluster gave this node up for dead.
    epoch: AtomicI64,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "node {name} is already live at {url}: give each node its own --node-name (or wait for that node's lease to run out if it is gone)"
    )]
    NameTaken { name: String, url: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Where a request for a session is served.
#[derive(Debug)]
pub enum Owner {
    /// Here (or nowhere: the local handlers give their answer).
    Here,
    /// On that live node.
    Elsewhere(Node),
    /// On a node that is not live (stopped, or lost and not yet swept): nobody can serve it
    /// now.
    Down(String),
}

impl Cluster {
    /// Registers this node under a new epoch.
    pub async fn join(
        store: Store,
        settings: NodeSettings,
        max_sessions: usize,
    ) -> Result<Arc<Self>, JoinError> {
        // Two live processes under one name would take each other's epoch in turns, each
        // ending the other's sessions: the second is refused. The same address within its
        // lease is this node restarting, which is fine.
        if store.is_shared()
            && let Some(node) = store.nodes.get_node(&settings.name).await?
            && node.state == NodeState::Live
            && node.url != settings.url
            && node.lease_expires_at > crate::model::now()
        {
            return Err(JoinError::NameTaken {
                name: node.name,
                url: node.url,
            });
        }
        let epoch = store
            .nodes
            .register_node(
                &settings.name,
                &settings.url,
                settings.public_url.as_deref(),
                u32::try_from(max_sessions).unwrap_or(u32::MAX),
                settings.lease,
            )
            .await?;
        Ok(Arc::new(Self {
            store,
            settings,
            epoch: AtomicI64::new(epoch),
        }))
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// Who serves requests for session `id`: its node, if that is another live one.
    pub async fn owner(&self, id: Uuid) -> crate::store::Result<Owner> {
        if !self.is_shared() {
            return Ok(Owner::Here);
        }
        let Some(session) = self.store.sessions.get_session(id).await? else {
            return Ok(Owner::Here);
        };
        let Some(node) = session.node else {
            return Ok(Owner::Here);
        };
        if node == self.settings.name {
            return Ok(Owner::Here);
        }
        Ok(match self.store.nodes.get_node(&node).await? {
            Some(node) if node.state == NodeState::Live => Owner::Elsewhere(node),
            // An ended session's answers (410, its row) are any node's to give.
            _ if session.status.is_ended() => Owner::Here,
            _ => Owner::Down(node),
        })
    }

    /// What a client tunnelled to `session`'s node is told if that node vanishes: the
    /// recorded end, waited for as long as a sweep takes.
    pub fn lost_notice(&self, session: Uuid) -> forward::LostNotice {
        forward::LostNotice {
            store: self.store.clone(),
            session,
            wait: self.settings.lease + self.settings.beat() * 3,
        }
    }

    /// Another live node with room, least loaded first, for a create this node has no
    /// room for.
    pub async fn place_elsewhere(&self) -> crate::store::Result<Option<Node>> {
        if !self.is_shared() {
            return Ok(None);
        }
        let mut nodes: Vec<Node> = self
            .store
            .nodes
            .list_nodes()
            .await?
            .into_iter()
            .filter(|n| n.name != self.settings.name && n.has_room())
            .collect();
        nodes.sort_by_key(|n| (n.live_sessions * 1000) / n.max_sessions.max(1));
        Ok(nodes.into_iter().next())
    }

    /// Heartbeats (its load, for `nodes list` and the dashboard), and with a shared store
    /// sweeps for lost nodes, until `stop` turns true; then leaves the cluster.
    pub async fn run(
        self: Arc<Self>,
        sessions: Arc<SessionManager>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut every = tokio::time::interval(self.settings.beat());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Since when the database has answered without a break. A sweeper that was cut off
        // from it (or the database itself was down) waits a whole lease before declaring
        // anyone lost: the others need that long to renew leases that ran out meanwhile.
        let mut reachable_since: Option<Instant> = None;
        // A drain is told at once (a heartbeat then), not at the next beat: until the others
        // know, they may still place creates here.
        let mut drain_told = false;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = sessions.drain_started(), if !drain_told => drain_told = true,
                _ = stop.wait_for(|s| *s) => break,
            }
            let epoch = self.epoch.load(Ordering::SeqCst);
            let load = u32::try_from(sessions.live_count()).unwrap_or(u32::MAX);
            match self
                .store
                .nodes
                .heartbeat(
                    &self.settings.name,
                    epoch,
                    load,
                    sessions.is_draining(),
                    self.settings.lease,
                )
                .await
            {
                Ok(true) => {
                    reachable_since.get_or_insert_with(Instant::now);
                }
                Ok(false) => {
                    reachable_since.get_or_insert_with(Instant::now);
                    self.rejoin(&sessions).await;
                    continue;
                }
                Err(e) => {
                    if reachable_since.take().is_some() {
                        tracing::warn!(error = %e, "the database does not answer: sessions go on, creates wait");
                    }
                    continue;
                }
            }
            if self.is_shared()
                && reachable_since.is_some_and(|t| t.elapsed() >= self.settings.lease)
            {
                self.sweep(&sessions).await;
            }
        }
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Err(e) = self
            .store
            .nodes
            .leave_node(&self.settings.name, epoch)
            .await
        {
            tracing::warn!(error = %e, "could not record that this node left");
        }
    }

    /// This node was declared lost while it was silent (stopped, cut off): its sessions
    /// are recorded as ended, so their browsers stop here too; then it registers anew.
    async fn rejoin(&self, sessions: &SessionManager) {
        tracing::error!(
            node = %self.settings.name,
            "this node's lease ran out and the cluster ended its sessions; stopping their browsers and joining again"
        );
        sessions
            .end_all(Ending {
                status: SessionStatus::Error,
                reason: format!("{NODE_LOST}{}", self.settings.name),
            })
            .await;
        match self
            .store
            .nodes
            .register_node(
                &self.settings.name,
                &self.settings.url,
                self.settings.public_url.as_deref(),
                u32::try_from(sessions.limits().max_sessions).unwrap_or(u32::MAX),
                self.settings.lease,
            )
            .await
        {
            Ok(epoch) => self.epoch.store(epoch, Ordering::SeqCst),
            Err(e) => tracing::warn!(error = %e, "could not join the cluster again; will retry"),
        }
    }

    /// Ends the sessions of nodes whose leases ran out, and those long past their timeout.
    async fn sweep(&self, sessions: &SessionManager) {
        match self
            .store
            .nodes
            .sweep(NODE_LOST, self.settings.lease * 2)
            .await
        {
            Ok(ended) if !ended.is_empty() => {
                tracing::warn!(
                    count = ended.len(),
                    "ended the sessions of lost nodes or past their timeout"
                );
                // One of them may run here (this node past a timeout by two leases, or
                // declared lost itself after a stall): its browser stops with the end the
                // cluster recorded.
                for id in ended.into_iter().filter(|id| sessions.is_live(*id)) {
                    let recorded = self.store.sessions.get_session(id).await.ok().flatten();
                    let ending = match recorded {
                        Some(s) if s.status.is_ended() => Ending {
                            status: s.status,
                            reason: s.end_reason.unwrap_or_default(),
                        },
                        _ => continue,
                    };
                    sessions.end(id, ending).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep for lost nodes failed"),
        }
    }
}
