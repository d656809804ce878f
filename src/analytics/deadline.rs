//! A time limit for a blocking DuckDB call: a watchdog interrupts the connection when the limit
//! passes, and the call's error is then reported as a timeout rather than as DuckDB's
//! "interrupted".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::analytics::AnalyticsError;

pub fn with_deadline<T>(
    limit: Duration,
    interrupt: impl FnOnce() + Send + 'static,
    call: impl FnOnce() -> Result<T, AnalyticsError>,
) -> Result<T, AnalyticsError> {
    let (done, finished) = mpsc::channel::<()>();
    let expired = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let expired = expired.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
                expired.store(true, Ordering::SeqCst);
                interrupt();
            }
        })
    };
    let result = call();
    drop(done);
    let _ = watchdog.join();
    match result {
        Err(_) if expired.load(Ordering::SeqCst) => Err(AnalyticsError::Timeout(limit)),
        other => other,
    }
}
