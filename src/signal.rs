//! Signals: the first SIGTERM/SIGINT starts a graceful shutdown, the second ends the process.

use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM/SIGINT; on the second runs `before_exit` (e.g. kill a
/// throwaway redis-server) and exits at once with status 130.
pub async fn stop_on_signal(token: CancellationToken, before_exit: impl FnOnce()) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received: stopping (send it again to exit at once)");
    token.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    before_exit();
    // _exit, not exit: libtorch's static destructors would run under the inference thread's
    // feet and crash the process instead of ending it.
    // SAFETY: ends the process at once; nothing runs after it.
    unsafe { libc::_exit(130) };
}
