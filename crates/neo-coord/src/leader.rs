//! Leader election on a Redis lease, with epochs.

use crate::lock::{EXTEND, RELEASE};
use crate::{Coordinator, Result, millis};
use rand::RngExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// This candidate's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not the leader.
    Follower,
    /// The leader of this epoch: pass the epoch to what the leader writes, so a deposed
    /// leader's late writes can be refused.
    Leader {
        /// Increases with every election; never shared by two leaders.
        epoch: u64,
    },
}

/// A candidacy: watch [`role`](Leadership::role) / [`changed`](Leadership::changed), and
/// [`resign`](Leadership::resign) on shutdown. Dropping it stops campaigning (the lease then
/// expires).
#[derive(Debug)]
pub struct Leadership {
    role: watch::Receiver<Role>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// The role now.
    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Waits for the next change of role and returns it (elected, or leadership lost).
    pub async fn changed(&mut self) -> Role {
        if self.role.changed().await.is_err() {
            return Role::Follower;
        }
        *self.role.borrow_and_update()
    }

    /// A receiver of role changes, for other tasks.
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Steps down (releasing the lease at once, so another candidate takes over without
    /// waiting for it to expire) and stops campaigning.
    pub async fn resign(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Coordinator {
    /// Campaigns for leadership of `name` until resigned.
    ///
    /// The lease lasts `leader_ttl` and is renewed every third of it. A leader that cannot
    /// renew (Redis unreachable) steps down after two thirds of the TTL, before the lease can
    /// expire and another candidate be elected, so two leaders never overlap by this
    /// process's clock. The epoch is taken in the same script as the lease.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) for a bad name.
    pub fn campaign(&self, name: &str) -> Result<Leadership> {
        let (key, epoch_key) = self.key_pair("leader", name, "epoch")?;
        let (role_tx, role) = watch::channel(Role::Follower);
        let (stop, mut stopped) = watch::channel(false);
        let coord = self.clone();
        let name = name.to_owned();
        let token = uuid::Uuid::now_v7().to_string();
        let task = tokio::spawn(async move {
            let ttl = coord.shared.config.leader_ttl;
            let ttl_ms = millis(ttl);
            let mut renewed_at = Instant::now();
            loop {
                let leader = matches!(*role_tx.borrow(), Role::Leader { .. });
                if leader {
                    match coord
                        .script::<i64>(&EXTEND, &[&key], &[&token, &ttl_ms])
                        .await
                    {
                        Ok(1) => renewed_at = Instant::now(),
                        Ok(_) => {
                            tracing::warn!(leader = %name, "leadership lost: the lease was taken over or expired");
                            role_tx.send_replace(Role::Follower);
                        }
                        Err(error) => {
                            if renewed_at.elapsed() >= ttl * 2 / 3 {
                                tracing::warn!(leader = %name, %error, "cannot renew the lease; stepping down");
                                role_tx.send_replace(Role::Follower);
                            }
                        }
                    }
                } else {
                    match coord
                        .script::<u64>(coord.acquire(), &[&key, &epoch_key], &[&token, &ttl_ms])
                        .await
                    {
                        Ok(0) => {}
                        Ok(epoch) => {
                            renewed_at = Instant::now();
                            tracing::info!(leader = %name, epoch, "elected");
                            metrics::counter!(crate::metric_names::ELECTIONS_TOTAL).increment(1);
                            role_tx.send_replace(Role::Leader { epoch });
                        }
                        Err(error) => {
                            tracing::debug!(leader = %name, %error, "campaign attempt failed");
                        }
                    }
                }
                let pause = (ttl / 3).mul_f64(rand::rng().random_range(0.8..=1.0));
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            if matches!(*role_tx.borrow(), Role::Leader { .. }) {
                let _ = coord.script::<i64>(&RELEASE, &[&key], &[&token]).await;
                role_tx.send_replace(Role::Follower);
                tracing::info!(leader = %name, "stepped down");
            }
        });
        Ok(Leadership {
            role,
            stop,
            task: Some(task),
        })
    }
}
