//! run: one worker's life on this node, as one task: wait for the previous copy to be gone,
//! install once per key, start, wait for ready, restart by policy with backoff, and stop
//! (gracefully, or at once after `kill_all`).

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::backoff::Backoff;
use super::process::{self, describe_exit, kill_group, Spawner, Started};
use super::redact::Redactor;
use super::{env, install, ProcessState, SupervisorSettings, Worker};
use crate::auth::local::LocalToken;

/// How long orphans of a released group are reaped for (see `process::reap_group`).
const ORPHAN_REAP_WINDOW: Duration = Duration::from_secs(5);

/// How often a stop looks whether the rest of a group ended after its leader.
const GROUP_POLL: Duration = Duration::from_millis(20);

/// Drives `worker` until it is stopped or its policy ends it; `after` is the previous copy
/// of the same name, which must be gone before this one starts.
pub(super) async fn run(
    worker: Arc<Worker>,
    settings: SupervisorSettings,
    spawner: Spawner,
    after: Option<CancellationToken>,
) {
    let _finished = worker.finished.clone().drop_guard();
    if let Some(previous) = after {
        previous.cancelled().await;
    }
    // The previous copy is gone: nothing left for `kill_all` to reach through this one.
    *worker.replaces.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let runner = Runner {
        data: settings.data_dir.join("workers").join(&worker.plan.name),
        worker,
        settings,
        spawner,
    };
    runner.lifecycle().await;
    if runner.worker.status().state != ProcessState::Exited {
        runner.worker.update(|s| {
            s.state = ProcessState::Stopped;
            s.pid = None;
            s.retry_in_ms = None;
        });
        runner.worker.log.note("stopped");
    }
}

/// What one run of a script came to.
enum Ended {
    /// The process exited by itself.
    Exited(ExitStatus),
    /// It overran its limit (not ready within the ready timeout, an install past its time)
    /// and was killed.
    NotReady,
    /// `stop` or `kill_all` ended it.
    Stopped,
    /// It could no longer be waited for; its group was killed.
    Lost(io::Error),
}

/// What ends a supervised process besides its own exit and a stop.
#[derive(Clone, Copy, Debug)]
enum Limit {
    /// A worker: killed once it has gone the ready timeout without being ready.
    Readiness,
    /// An install: killed once it has run this long.
    Runtime(Duration),
}

/// What one start needs: its directory, its environment and the local token in its
/// `III_URL` (valid until this is dropped, after the process is gone).
struct Prepared {
    dir: PathBuf,
    env: Vec<(String, String)>,
    token: Option<LocalToken>,
}

impl Prepared {
    fn secret(&self) -> Option<&str> {
        self.token.as_ref().map(LocalToken::secret)
    }
}

struct Runner {
    worker: Arc<Worker>,
    settings: SupervisorSettings,
    spawner: Spawner,
    /// This worker's own directory under the supervisor's data directory.
    data: PathBuf,
}

impl Runner {
    fn name(&self) -> &str {
        &self.worker.plan.name
    }

    async fn lifecycle(&self) {
        let plan = &self.worker.plan;
        let mut backoff = Backoff::new(self.settings.backoff);
        loop {
            if self.worker.stop.is_cancelled() {
                return;
            }
            let prepared = match self.prepare_and_install().await {
                Ok(Some(prepared)) => prepared,
                Ok(None) => return,
                Err(error) => {
                    if !self
                        .retry_later(&mut backoff, Duration::ZERO, error, false)
                        .await
                    {
                        return;
                    }
                    continue;
                }
            };
            let started_at = Instant::now();
            let clean = match self.start(&prepared).await {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Exited(status)) => {
                    let exit = describe_exit(status);
                    info!(worker_name = %self.name(), exit = %exit, "managed worker exited");
                    self.worker.log.note(&format!("exited: {exit}"));
                    self.worker.update(|s| s.last_exit = Some(exit));
                    status.success()
                }
                Ok(Ended::NotReady) => {
                    let error = format!(
                        "not ready within {}s: no connection announced `{}`; killed",
                        self.settings.ready_timeout.as_secs_f64(),
                        self.name()
                    );
                    warn!(worker_name = %self.name(), "managed worker never became ready");
                    self.worker.log.note(&error);
                    self.worker.update(|s| {
                        s.last_error = Some(error);
                        s.last_exit = Some("signal 9".into());
                    });
                    false
                }
                Ok(Ended::Lost(error)) => {
                    let error =
                        format!("cannot wait for the process: {error}; its group was killed");
                    warn!(worker_name = %self.name(), error = %error, "managed worker lost");
                    self.worker.log.note(&error);
                    self.worker.update(|s| s.last_error = Some(error));
                    false
                }
                Err(error) => {
                    let error = format!("cannot start: {error}");
                    if !self
                        .retry_later(&mut backoff, Duration::ZERO, error, true)
                        .await
                    {
                        return;
                    }
                    continue;
                }
            };
            if !plan.restart.restarts_after(clean) {
                self.worker.update(|s| {
                    s.state = ProcessState::Exited;
                    s.pid = None;
                });
                self.worker.log.note(&format!(
                    "not started again (restart policy {})",
                    plan.restart
                ));
                return;
            }
            if !self
                .back_off(&mut backoff, started_at.elapsed(), true)
                .await
            {
                return;
            }
        }
    }

    /// Records `error`, then waits out the backoff; false when stopped meanwhile.
    async fn retry_later(
        &self,
        backoff: &mut Backoff,
        uptime: Duration,
        error: String,
        counts_as_restart: bool,
    ) -> bool {
        warn!(worker_name = %self.name(), error = %error, "managed worker failed");
        self.worker.log.note(&error);
        self.worker.update(|s| s.last_error = Some(error));
        self.back_off(backoff, uptime, counts_as_restart).await
    }

    /// Waits before the next attempt; false when stopped meanwhile.
    async fn back_off(&self, backoff: &mut Backoff, uptime: Duration, restart: bool) -> bool {
        let delay = backoff.next_delay(uptime);
        self.worker.update(|s| {
            s.state = ProcessState::BackingOff;
            s.pid = None;
            s.retry_in_ms = Some(delay.as_millis() as u64);
            if restart {
                s.restarts = s.restarts.saturating_add(1);
            }
        });
        self.worker
            .log
            .note(&format!("next attempt in {:.1}s", delay.as_secs_f64()));
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.worker.stop.cancelled() => false,
        }
    }

    /// The worker's directory and config, then its install when the plan has one; `None` when
    /// the worker was stopped during the install. One error path for both, retried alike.
    async fn prepare_and_install(&self) -> Result<Option<Prepared>, String> {
        let prepared = self.prepare().await?;
        if let Some(script) = &self.worker.plan.install {
            if !self.install(script, &prepared).await? {
                return Ok(None);
            }
        }
        Ok(Some(prepared))
    }

    /// The worker's directory, its config file and its environment.
    async fn prepare(&self) -> Result<Prepared, String> {
        tokio::fs::create_dir_all(&self.data)
            .await
            .map_err(|e| format!("cannot create {}: {e}", self.data.display()))?;
        let plan = &self.worker.plan;
        let dir = if plan.dir.as_os_str().is_empty() {
            let own = self.data.join("work");
            tokio::fs::create_dir_all(&own)
                .await
                .map_err(|e| format!("cannot create {}: {e}", own.display()))?;
            own
        } else {
            plan.dir.clone()
        };
        match tokio::fs::metadata(&dir).await {
            Ok(meta) if meta.is_dir() => {}
            _ => {
                return Err(format!(
                    "the worker directory {} does not exist on this node",
                    dir.display()
                ))
            }
        }
        let config_file = match &plan.config {
            Some(config) => {
                let path = self.data.join("config.yaml");
                let text = serde_yaml::to_string(config)
                    .map_err(|e| format!("cannot write the worker's config: {e}"))?;
                tokio::fs::write(&path, text)
                    .await
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Some(path)
            }
            None => None,
        };
        let token = match &self.settings.local_tokens {
            Some(tokens) => Some(
                tokens
                    .issue(&plan.name)
                    .map_err(|e| format!("cannot make the worker's local token: {e}"))?,
            ),
            None => None,
        };
        let url = match &token {
            Some(token) => format!("{}/?token={}", self.settings.worker_url, token.secret()),
            None => self.settings.worker_url.clone(),
        };
        let env = env::child_env(plan, &url, config_file.as_deref());
        Ok(Prepared { dir, env, token })
    }

    /// Runs `scripts.install` unless this key is installed. Ok(false) when stopped.
    async fn install(&self, script: &str, prepared: &Prepared) -> Result<bool, String> {
        let key = &self.worker.plan.install_key;
        let marker = install::marker_path(&self.data);
        if install::is_installed(&marker, key).await {
            return Ok(true);
        }
        info!(worker_name = %self.name(), "installing managed worker");
        self.worker.log.note(&format!("install: {script}"));
        let mut started = self
            .spawn(script, prepared)
            .await
            .map_err(|e| format!("cannot start the install: {e}"))?;
        self.worker.update(|s| {
            s.state = ProcessState::Installing;
            s.pid = started.child.id();
            s.retry_in_ms = None;
        });
        let limit = self.settings.install_timeout;
        match self.supervise(&mut started, Limit::Runtime(limit)).await {
            Ended::Stopped => {
                self.release(started);
                Ok(false)
            }
            Ended::Exited(status) if status.success() => {
                self.release(started);
                install::record_installed(&marker, key).await.map_err(|e| {
                    format!("cannot record the install in {}: {e}", marker.display())
                })?;
                self.worker.log.note("install done");
                Ok(true)
            }
            Ended::Exited(status) => {
                self.release(started);
                Err(format!("install failed: {}", describe_exit(status)))
            }
            Ended::NotReady => {
                self.release(started);
                warn!(worker_name = %self.name(), limit = ?limit, "install overran its time; killed");
                self.worker.log.note("install overran its time: SIGKILL");
                Err(format!(
                    "install failed: still running after {limit:?}; killed"
                ))
            }
            Ended::Lost(error) => {
                self.release(started);
                Err(format!("install failed: cannot wait for it: {error}"))
            }
        }
    }

    /// Starts the worker and supervises it until it ends.
    async fn start(&self, prepared: &Prepared) -> io::Result<Ended> {
        let plan = &self.worker.plan;
        self.worker.ready.send_replace(false);
        self.worker.log.note(&format!("start: {}", plan.start));
        let mut started = self.spawn(&plan.start, prepared).await?;
        let pid = started.child.id();
        info!(worker_name = %self.name(), pid = ?pid, "managed worker started");
        self.worker.update(|s| {
            s.state = ProcessState::Starting;
            s.pid = pid;
            s.retry_in_ms = None;
        });
        let ended = self.supervise(&mut started, Limit::Readiness).await;
        self.release(started);
        Ok(ended)
    }

    /// Starts a script in its own group, records the group for `kill_all`, and pumps its
    /// output into the log.
    async fn spawn(&self, script: &str, prepared: &Prepared) -> io::Result<Started> {
        let (dir, env) = (&prepared.dir, &prepared.env);
        let mut started = process::start(&self.spawner, script, dir, env).await?;
        *self.worker.group.lock().unwrap_or_else(|p| p.into_inner()) = Some(started.group);
        if self.worker.halted() {
            // kill_all ran while we were spawning: it could not see this group.
            kill_group(started.group, libc::SIGKILL);
        }
        if let Some(out) = started.child.stdout.take() {
            pump(self.worker.clone(), out, prepared.secret());
        }
        if let Some(err) = started.child.stderr.take() {
            pump(self.worker.clone(), err, prepared.secret());
        }
        Ok(started)
    }

    /// Waits for the process to exit, to be stopped, or to overrun its `limit`, tracking
    /// ready/unready on the way for a worker.
    async fn supervise(&self, started: &mut Started, limit: Limit) -> Ended {
        let mut ready = self.worker.ready.subscribe();
        let mut was_ready = false;
        let mut unready_since = Instant::now();
        let runs_until = match limit {
            Limit::Runtime(limit) => Some(Instant::now() + limit),
            Limit::Readiness => None,
        };
        let mut watching = runs_until.is_none();
        loop {
            let now_ready = watching && *ready.borrow_and_update();
            if watching && now_ready != was_ready {
                was_ready = now_ready;
                if now_ready {
                    info!(worker_name = %self.name(), "managed worker ready");
                    self.worker.update(|s| s.state = ProcessState::Ready);
                } else {
                    unready_since = Instant::now();
                    self.worker.update(|s| s.state = ProcessState::Starting);
                }
            }
            let deadline = runs_until.unwrap_or(unready_since + self.settings.ready_timeout);
            let timed = runs_until.is_some() || (watching && !now_ready);
            tokio::select! {
                status = started.child.wait() => {
                    return match status {
                        Ok(status) => Ended::Exited(status),
                        Err(error) => {
                            kill_group(started.group, libc::SIGKILL);
                            Ended::Lost(error)
                        }
                    };
                }
                _ = self.worker.stop.cancelled() => {
                    self.stop_group(started).await;
                    return Ended::Stopped;
                }
                changed = ready.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                    }
                }
                _ = tokio::time::sleep_until(deadline), if timed => {
                    kill_group(started.group, libc::SIGKILL);
                    let _ = started.child.wait().await;
                    return Ended::NotReady;
                }
            }
        }
    }

    /// SIGTERM to the whole group, then SIGKILL after the grace (at once after `kill_all`);
    /// returns once the leader has been reaped and the rest of the group has ended (or the
    /// grace is over: the leader may be a shell that died of the SIGTERM at once while the
    /// worker it started still shuts down).
    async fn stop_group(&self, started: &mut Started) {
        if !self.worker.halted() {
            self.worker.update(|s| s.state = ProcessState::Stopping);
            self.worker.log.note("stopping: SIGTERM");
            kill_group(started.group, libc::SIGTERM);
            let deadline = Instant::now() + self.settings.stop_grace;
            if let Ok(Ok(status)) = tokio::time::timeout_at(deadline, started.child.wait()).await {
                let exit = describe_exit(status);
                self.worker.update(|s| s.last_exit = Some(exit));
                if self.rest_of_group_ends(started, deadline).await {
                    return;
                }
            }
            self.worker.log.note("stop grace over: SIGKILL");
        }
        kill_group(started.group, libc::SIGKILL);
        if let Ok(status) = started.child.wait().await {
            let exit = describe_exit(status);
            self.worker.update(|s| s.last_exit = Some(exit));
        }
    }

    /// After the leader exited in a stop: waits until no other member of its group but the
    /// watcher runs, by `deadline`; false if one still does then (or `kill_all` came first).
    async fn rest_of_group_ends(&self, started: &Started, deadline: Instant) -> bool {
        let group = started.group;
        let pipe = process::lifeline_pipe(&started.lifeline);
        loop {
            if self.worker.halted() {
                return false;
            }
            let pipe = pipe.clone();
            let running = tokio::task::spawn_blocking(move || {
                process::group_has_workers(group, pipe.as_deref())
            })
            .await
            .unwrap_or(false);
            if !running {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(GROUP_POLL.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    /// After the leader is gone: kills what is left of its group (a process with a pending
    /// SIGKILL runs no more code of its own) and lets the lifeline go.
    fn release(&self, started: Started) {
        kill_group(started.group, libc::SIGKILL);
        *self.worker.group.lock().unwrap_or_else(|p| p.into_inner()) = None;
        drop(started.lifeline);
        self.worker.update(|s| s.pid = None);
        let group = started.group;
        tokio::spawn(async move {
            let deadline = Instant::now() + ORPHAN_REAP_WINDOW;
            while !process::reap_group(group) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
}

/// Copies a child's output into its worker's log until the pipe closes, with its local
/// token (`secret`) hidden.
fn pump(
    worker: Arc<Worker>,
    mut out: impl AsyncRead + Unpin + Send + 'static,
    secret: Option<&str>,
) {
    let mut redactor = Redactor::new(secret);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => worker.log.push(&redactor.feed(&buf[..n])),
            }
        }
        worker.log.push(&redactor.finish());
    });
}
