//! The threads client sessions run on, and the hand-over of an accepted connection to one.

use crate::DbGate;

/// The threads client sessions run on: each a single-threaded Tokio runtime that owns the
/// client's and the database's socket of its sessions. A session's bytes then go from one
/// socket to the other on one thread, with no hand-over between worker threads (which cost
/// more in wake-ups than the forwarding itself). Logins, which use the store, the identity
/// engine and the vault, still run on the server's main runtime.
pub(crate) struct SessionThreads {
    handles: Vec<tokio::runtime::Handle>,
    next: std::sync::atomic::AtomicUsize,
}

impl SessionThreads {
    /// `count` threads; `0` means one per CPU. (Half the CPUs, leaving the rest to a database
    /// and clients on the same machine, left a core idle a sixth of the time under
    /// `pgbench -S` on 2 CPUs and ran 0.77× PgBouncer against 0.94× with both: a thread with
    /// nothing to do costs nothing.)
    fn start(count: usize) -> SessionThreads {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let count = if count == 0 { cpus } else { count };
        let mut handles = Vec::new();
        for i in 0..count {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!("database gateway: no session runtime: {e}");
                    break;
                }
            };
            let handle = rt.handle().clone();
            let started = std::thread::Builder::new()
                .name(format!("haechi-dbgate-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()));
            match started {
                Ok(_) => handles.push(handle),
                Err(e) => {
                    tracing::warn!("database gateway: no session thread: {e}");
                    break;
                }
            }
        }
        SessionThreads {
            handles,
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The runtime for the next session (round robin); the caller's when none could start.
    fn pick(&self) -> tokio::runtime::Handle {
        if self.handles.is_empty() {
            return tokio::runtime::Handle::current();
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.handles[n % self.handles.len()].clone()
    }
}

/// Moves an accepted client connection to a session thread and runs `session` there with it.
pub(crate) fn spawn_session<F, Fut>(gate: &DbGate, tcp: tokio::net::TcpStream, session: F)
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let std_tcp = match tcp.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("database gateway: cannot hand a connection over: {e}");
            return;
        }
    };
    let handle = gate
        .session_threads
        .get_or_init(|| SessionThreads::start(gate.config().session_threads))
        .pick();
    handle.spawn(async move {
        match tokio::net::TcpStream::from_std(std_tcp) {
            Ok(tcp) => session(tcp).await,
            Err(e) => tracing::warn!("database gateway: cannot take a connection over: {e}"),
        }
    });
}
