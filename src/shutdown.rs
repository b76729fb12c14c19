//! A cloneable shutdown signal: stages `select!` on [`Shutdown::wait`] and finish their
//! current unit of work when it fires.

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

/// Fires the signal for every clone of the paired [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger {
    sender: watch::Sender<bool>,
}

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (ShutdownTrigger { sender }, Shutdown { receiver })
    }

    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves when shutdown is triggered (or the trigger is dropped).
    pub async fn wait(&mut self) {
        let _ = self.receiver.wait_for(|stop| *stop).await;
    }

    /// A signal that fires with this one, or earlier through its own trigger: for work that
    /// must be told to stop before the whole process stops (a writer's tasks when their
    /// session dies). Dropping the child trigger does not fire it; call `trigger`.
    pub fn child(&self) -> (ShutdownTrigger, Shutdown) {
        let (trigger, child) = Shutdown::new();
        let forward = trigger.sender.clone();
        let mut parent = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = parent.wait() => {
                    forward.send_replace(true);
                }
                // Every child receiver is gone: nothing left to tell.
                _ = forward.closed() => {}
            }
        });
        (trigger, child)
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn os_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_fires_with_its_parent_or_on_its_own() {
        let (parent_trigger, parent) = Shutdown::new();
        let (own_trigger, mut own) = parent.child();
        let (_kept, mut with_parent) = parent.child();
        own_trigger.trigger();
        own.wait().await;
        assert!(own.is_triggered());
        assert!(!parent.is_triggered(), "a child never fires its parent");
        assert!(!with_parent.is_triggered(), "nor its siblings");
        parent_trigger.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(5), with_parent.wait())
            .await
            .expect("the parent's signal reaches the child");
        assert!(with_parent.is_triggered());
    }
}
