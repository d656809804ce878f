//! Putting files on the server so that a reader never sees half of one, and a retry overwrites
//! cleanly: each file is written to a hidden `.<name>.<delivery id>.part` beside its target, flushed,
//! and renamed over the target. The part name carries the delivery id, so two deliveries writing the
//! same target never share a part file, while a retry of one delivery truncates its own leftover.
//!
//! Writes are pipelined (`writes_in_flight` requests before waiting for an acknowledgement) and read
//! from the source a chunk at a time, so a large report is never held in memory whole.
//!
//! SFTP status codes are classified here: permission denied, no such file and unsupported operations
//! are permanent (the same request meets the same answer); a generic failure (disk full, quota, an I/O
//! error on the server), a lost connection or an unanswered request is transient.

use std::sync::Arc;

use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinSet;

use crate::SinkError;

/// OpenSSH's rename that replaces an existing target atomically (`rename(2)` semantics). The plain
/// SFTP v3 rename refuses an existing target.
const POSIX_RENAME: &str = "posix-rename@openssh.com";
const FSYNC: &str = "fsync@openssh.com";
const LIMITS: &str = "limits@openssh.com";

/// The remote side of one delivery: an SFTP session and what its server supports.
pub(crate) struct Remote<'a> {
    pub sftp: Arc<RawSftpSession>,
    pub endpoint: &'a str,
    pub chunk_size: usize,
    pub writes_in_flight: usize,
    posix_rename: bool,
    fsync: bool,
}

impl<'a> Remote<'a> {
    /// Reads what the server announced and lowers the chunk size to the server's write limit.
    pub async fn new(
        sftp: Arc<RawSftpSession>,
        extensions: &std::collections::HashMap<String, String>,
        endpoint: &'a str,
        chunk_size: usize,
        writes_in_flight: usize,
    ) -> Remote<'a> {
        let has = |name: &str| extensions.get(name).is_some_and(|version| version == "1");
        let mut chunk_size = chunk_size;
        if has(LIMITS) {
            // A server that cannot answer its own extension just keeps the configured size.
            if let Ok(limits) = sftp.limits().await {
                if limits.max_write_len > 0 {
                    chunk_size = chunk_size.min(usize::try_from(limits.max_write_len).unwrap_or(usize::MAX));
                }
            }
        }
        Remote {
            sftp,
            endpoint,
            chunk_size: chunk_size.max(1),
            writes_in_flight,
            posix_rename: has(POSIX_RENAME),
            fsync: has(FSYNC),
        }
    }

    /// Makes sure `directory` exists, creating it and its missing parents. `""` is the login directory.
    pub async fn ensure_directory(&self, directory: &str) -> Result<(), SinkError> {
        let directory = directory.trim_end_matches('/');
        if directory.is_empty() || self.is_directory(directory).await? {
            return Ok(());
        }
        // Create from the top: `a`, `a/b`, `a/b/c` (or `/a`, ... for an absolute path).
        let mut prefix = String::new();
        for component in directory.split('/') {
            if !prefix.is_empty() || directory.starts_with('/') {
                prefix.push('/');
            }
            prefix.push_str(component);
            if component.is_empty() || self.is_directory(&prefix).await? {
                continue;
            }
            if let Err(error) = self.sftp.mkdir(prefix.as_str(), FileAttributes::empty()).await {
                // Another delivery may have created it in between; only a missing directory is an error.
                if !self.is_directory(&prefix).await? {
                    return Err(self.classify(error, "create directory", &prefix));
                }
            }
        }
        Ok(())
    }

    /// Whether `path` is a directory; `false` when it does not exist, an error when it is something else.
    async fn is_directory(&self, path: &str) -> Result<bool, SinkError> {
        match self.sftp.stat(path).await {
            Ok(attrs) if attrs.attrs.file_type().is_dir() => Ok(true),
            Ok(_) => Err(SinkError::permanent(format!("{path} on {} exists and is not a directory", self.endpoint))),
            Err(SftpError::Status(status)) if status.status_code == StatusCode::NoSuchFile => Ok(false),
            Err(error) => Err(self.classify(error, "stat", path)),
        }
    }

    /// Uploads everything `source` yields to `directory/name`, through a part file named after
    /// `delivery`. Returns the bytes written. A failure leaves no part file behind when the session
    /// still allows removing it.
    pub async fn put(
        &self,
        source: impl AsyncRead + Unpin,
        directory: &str,
        name: &str,
        delivery: &str,
    ) -> Result<u64, SinkError> {
        let target = join(directory, name);
        let part = join(directory, &format!(".{name}.{delivery}.part"));
        match self.write_and_publish(source, &part, &target).await {
            Ok(written) => Ok(written),
            Err(error) => {
                let _ = self.sftp.remove(part.as_str()).await;
                Err(error)
            }
        }
    }

    async fn write_and_publish(
        &self,
        source: impl AsyncRead + Unpin,
        part: &str,
        target: &str,
    ) -> Result<u64, SinkError> {
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        let handle = self
            .sftp
            .open(part, flags, FileAttributes::empty())
            .await
            .map_err(|e| self.classify(e, "create", part))?
            .handle;
        let written = self.write_all(source, &handle, part).await;
        let written = match written {
            Ok(written) => written,
            Err(error) => {
                let _ = self.sftp.close(handle.as_str()).await;
                return Err(error);
            }
        };
        if self.fsync {
            // The rename below publishes the file; make its bytes durable first.
            self.sftp.fsync(handle.as_str()).await.map_err(|e| self.classify(e, "fsync", part))?;
        }
        self.sftp.close(handle.as_str()).await.map_err(|e| self.classify(e, "close", part))?;
        self.rename_over(part, target).await?;
        Ok(written)
    }

    /// Streams `source` into the open `handle`, `writes_in_flight` chunks at a time.
    async fn write_all(&self, mut source: impl AsyncRead + Unpin, handle: &str, part: &str) -> Result<u64, SinkError> {
        let mut in_flight = JoinSet::new();
        let mut offset = 0u64;
        loop {
            let chunk = read_chunk(&mut source, self.chunk_size)
                .await
                .map_err(|e| SinkError::transient(format!("reading the local report failed: {e}")))?;
            if chunk.is_empty() {
                break;
            }
            let length = chunk.len() as u64;
            let (sftp, handle) = (self.sftp.clone(), handle.to_string());
            in_flight.spawn(async move { sftp.write(handle, offset, chunk).await });
            offset += length;
            if in_flight.len() >= self.writes_in_flight {
                self.acknowledged(&mut in_flight, part).await?;
            }
        }
        while !in_flight.is_empty() {
            self.acknowledged(&mut in_flight, part).await?;
        }
        Ok(offset)
    }

    /// Waits for one write's acknowledgement. On an error the remaining writes are aborted when the
    /// set is dropped.
    async fn acknowledged(
        &self,
        in_flight: &mut JoinSet<Result<russh_sftp::protocol::Status, SftpError>>,
        part: &str,
    ) -> Result<(), SinkError> {
        match in_flight.join_next().await {
            Some(Ok(Ok(_))) | None => Ok(()),
            Some(Ok(Err(error))) => Err(self.classify(error, "write", part)),
            Some(Err(join)) => Err(SinkError::transient(format!("write to {part} was interrupted: {join}"))),
        }
    }

    /// Renames `part` over `target`, replacing an existing target.
    async fn rename_over(&self, part: &str, target: &str) -> Result<(), SinkError> {
        if self.posix_rename {
            let mut request = Vec::with_capacity(8 + part.len() + target.len());
            for path in [part, target] {
                request.extend_from_slice(&(path.len() as u32).to_be_bytes());
                request.extend_from_slice(path.as_bytes());
            }
            match self.sftp.extended(POSIX_RENAME, request).await {
                Ok(Packet::Status(status)) if status.status_code == StatusCode::Ok => return Ok(()),
                // Announced but refused (a server can deny requests, e.g. `sftp-server -P posix-rename`):
                // the plain rename below either works or fails with the server's real reason.
                Ok(Packet::Status(_)) => {}
                Ok(_) => return Err(self.classify(SftpError::UnexpectedPacket, "rename", part)),
                Err(error) => return Err(self.classify(error, "rename", part)),
            }
        }
        match self.sftp.rename(part, target).await {
            Ok(_) => Ok(()),
            // SFTP v3 leaves renaming over an existing file undefined and OpenSSH refuses it with a
            // generic failure: remove the old target and try once more. Between the two a reader sees
            // no file, never a partial one.
            Err(SftpError::Status(status)) if status.status_code == StatusCode::Failure => {
                match self.sftp.remove(target).await {
                    Ok(_) => {}
                    Err(SftpError::Status(status)) if status.status_code == StatusCode::NoSuchFile => {}
                    Err(error) => return Err(self.classify(error, "replace", target)),
                }
                self.sftp.rename(part, target).await.map(|_| ()).map_err(|e| self.classify(e, "rename", part))
            }
            Err(error) => Err(self.classify(error, "rename", part)),
        }
    }

    /// Classifies a failed SFTP operation on `path`. The server's message is quoted: it describes the
    /// file system, never the credentials.
    fn classify(&self, error: SftpError, action: &str, path: &str) -> SinkError {
        let endpoint = self.endpoint;
        match error {
            SftpError::Status(status) => {
                let code = status.status_code.to_string();
                let message = status.error_message.trim();
                let mut reason = format!("sftp {action} {path} on {endpoint} failed: {code}");
                if !message.is_empty() && !message.eq_ignore_ascii_case(&code) {
                    reason.push_str(&format!(" ({})", message.chars().take(200).collect::<String>()));
                }
                match status.status_code {
                    StatusCode::PermissionDenied
                    | StatusCode::NoSuchFile
                    | StatusCode::OpUnsupported
                    | StatusCode::BadMessage => SinkError::permanent(reason),
                    _ => SinkError::transient(reason),
                }
            }
            SftpError::Timeout => {
                SinkError::transient(format!("sftp {action} {path} on {endpoint}: no answer in time"))
            }
            other => SinkError::transient(format!("sftp {action} {path} on {endpoint} failed: {other}")),
        }
    }
}

/// Reads up to `size` bytes, fewer only at the end of the source.
async fn read_chunk(source: &mut (impl AsyncRead + Unpin), size: usize) -> std::io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(size);
    while chunk.len() < size {
        let read = (&mut *source).take((size - chunk.len()) as u64).read_to_end(&mut chunk).await?;
        if read == 0 {
            break;
        }
    }
    Ok(chunk)
}

/// `directory/name`; `name` alone for the login directory.
pub(crate) fn join(directory: &str, name: &str) -> String {
    let trimmed = directory.trim_end_matches('/');
    match (trimmed.is_empty(), directory.starts_with('/')) {
        (true, true) => format!("/{name}"),
        (true, false) => name.to_string(),
        (false, _) => format!("{trimmed}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_with_one_slash() {
        assert_eq!(join("/upload/reports", "q2.pdf"), "/upload/reports/q2.pdf");
        assert_eq!(join("/upload/reports/", "q2.pdf"), "/upload/reports/q2.pdf");
        assert_eq!(join("inbox", "q2.pdf"), "inbox/q2.pdf");
        assert_eq!(join("", "q2.pdf"), "q2.pdf");
        assert_eq!(join("/", "q2.pdf"), "/q2.pdf");
    }

    #[tokio::test]
    async fn chunks_are_full_until_the_end() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut source = &data[..];
        let mut sizes = Vec::new();
        loop {
            let chunk = read_chunk(&mut source, 4096).await.expect("in memory");
            if chunk.is_empty() {
                break;
            }
            sizes.push(chunk.len());
        }
        assert_eq!(sizes, vec![4096, 4096, 1808]);
    }
}
