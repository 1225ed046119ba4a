//! Group commit: concurrent requests hand their writes to one queue, and
//! whichever takes the commit next writes every waiting one in one
//! transaction (one fsync for all) and answers each. Used for single
//! issuances (`grouped.rs`), audit entries of signatures (`custody.rs`) and
//! ACME writes (`acme.rs`). No caller is answered before the transaction
//! holding its write has committed.

use tokio::sync::oneshot;

/// One write waiting for the commit, and where its outcome goes.
pub(crate) type Pending<W, R> = (W, oneshot::Sender<R>);

/// A queue of writes of type `W`, each answered with an `R`.
pub(crate) struct GroupCommit<W, R> {
    ready: std::sync::Mutex<Vec<Pending<W, R>>>,
    commit: tokio::sync::Mutex<()>,
}

impl<W, R> Default for GroupCommit<W, R> {
    fn default() -> Self {
        GroupCommit { ready: std::sync::Mutex::new(Vec::new()), commit: tokio::sync::Mutex::new(()) }
    }
}

impl<W: Send + 'static, R: Send + 'static> GroupCommit<W, R> {
    /// Queues `w` and waits for its outcome. If this caller takes the
    /// commit, `commit` writes every waiting write and must answer each; it
    /// runs in its own task, so a caller that goes away mid-commit stops
    /// neither the commit nor the other callers' answers. `None` if the queue
    /// is poisoned or the commit stopped before it answered.
    pub(crate) async fn submit<F, Fut>(&self, w: W, commit: F) -> Option<R>
    where
        F: FnOnce(Vec<Pending<W, R>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (reply, mut answer) = oneshot::channel();
        self.ready.lock().ok()?.push((w, reply));
        let turn = self.commit.lock().await;
        if let Ok(done) = answer.try_recv() {
            return Some(done);
        }
        let group = std::mem::take(&mut *self.ready.lock().ok()?);
        if !group.is_empty() {
            let _ = tokio::spawn(commit(group)).await;
        }
        drop(turn);
        answer.await.ok()
    }
}
