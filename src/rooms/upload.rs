//! Uploads written into the database as they arrive: a body is never held
//! whole in memory, only the part being received (256 KiB). Admission comes
//! first, before a byte of the body is read: the declared size against the
//! upload limit and the uploader's quota, and a turn among the uploads
//! under way (node-wide and per user; `M_LIMIT_EXCEEDED` past them).
//!
//! An upload is an unfinished row (invisible to reads, its declared size
//! counted against the quota) and its parts, each written in a transaction
//! of its own as it arrives; the last transaction makes it visible. An
//! upload that fails midway (a body cut short, a client gone, a stalled
//! sender, an error) is deleted when its [`Upload`] is dropped; one a crash
//! interrupted is deleted at the next start.
//!
//! Spec: <https://spec.matrix.org/latest/client-server-api/#post_matrixmediav3upload>.

use std::rc::Rc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use smol::future::FutureExt;
use smol::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};
use crate::rooms::Engine;
use crate::rooms::media::Slot;
use crate::storage::{NewMedia, PART_BYTES, Storage};

/// Uploads received at once on the node: each holds a part (256 KiB) and
/// writes to the one database; four keep a household's phones going
/// without letting a burst of large uploads take the board's memory or disk
/// bandwidth.
pub const MAX_UPLOADS: usize = 4;

/// Uploads one user may send at once, so one user cannot take every turn.
pub const MAX_UPLOADS_PER_USER: usize = 2;

/// The wait suggested to a client refused a turn: a large upload on a home
/// connection takes seconds.
const RETRY_UPLOAD_AFTER_MS: u64 = 5_000;

/// An upload admitted and under way; deleted when dropped unfinished.
pub struct Upload {
    app: Rc<Engine>,
    rowid: i64,
    /// The body's length, if it was declared (`Content-Length`).
    declared: Option<u64>,
    /// The most the body may bring: the upload limit, or what is left of
    /// the uploader's quota when that is less.
    allowed: u64,
    finished: bool,
    _slot: Slot,
}

/// Admits an upload of `declared` bytes (`None`: unknown until it ends) as
/// `media` (whose `content` is ignored): `check` runs first, in the same
/// transaction that reserves the row. 413 `M_TOO_LARGE` past the upload
/// limit or the quota, 429 `M_LIMIT_EXCEEDED` without a turn, 409
/// `M_CANNOT_OVERWRITE_MEDIA` when the media ID has content or an upload.
pub fn start(
    app: &Rc<Engine>,
    media: &NewMedia<'_>,
    declared: Option<u64>,
    check: impl FnOnce(&Storage) -> Result<()>,
) -> Result<Upload> {
    let uploader = media.uploader.ok_or_else(|| Error::Internal("an upload without an uploader".into()))?;
    let limit = app.config.limits.max_media_body as u64;
    if declared.is_some_and(|length| limit < length) {
        return Err(Error::TooLarge(format!("uploads are limited to {limit} bytes")));
    }
    let slot = app
        .media_uploads
        .try_take(uploader)
        .ok_or(Error::LimitExceeded { retry_after_ms: RETRY_UPLOAD_AFTER_MS })?;
    let quota = app.config.limits.media_quota_per_user;
    let (rowid, allowed) = app.in_transaction(|| {
        let storage = app.storage();
        check(&storage)?;
        let left = quota.saturating_sub(storage.media_used_by(uploader)?);
        if declared.unwrap_or(1) > left {
            return Err(Error::TooLarge(format!(
                "this upload would take you past your storage quota of {quota} bytes"
            )));
        }
        let rowid = storage.begin_media_upload(media, declared.unwrap_or(0))?.ok_or_else(|| {
            Error::matrix(409, "M_CANNOT_OVERWRITE_MEDIA", "this media already has content")
        })?;
        Ok((rowid, limit.min(left)))
    })?;
    Ok(Upload { app: app.clone(), rowid, declared, allowed, finished: false, _slot: slot })
}

impl Upload {
    /// Receives the body from `reader` and stores it part by part, then
    /// makes it visible in one transaction with `finish`; fails when the
    /// body ends short of its declared length, brings more than allowed, or
    /// brings nothing for `stall`.
    pub async fn receive(
        mut self,
        mut reader: impl AsyncRead + Unpin,
        stall: Duration,
        finish: impl FnOnce(&Storage) -> Result<()>,
    ) -> Result<()> {
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut part = vec![0u8; PART_BYTES];
        let mut seq = 0i64;
        loop {
            let mut filled = 0;
            while filled < PART_BYTES {
                let Some(space) = part.get_mut(filled..) else {
                    break;
                };
                let read = async { reader.read(space).await.map_err(cut_short) }
                    .or(async {
                        smol::Timer::after(stall).await;
                        Err(Error::matrix(408, "M_UNKNOWN", "the upload stalled"))
                    })
                    .await?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
            received += filled as u64;
            if self.allowed < received {
                return Err(Error::TooLarge(format!(
                    "the upload is larger than the {} bytes the upload limit and your quota allow",
                    self.allowed
                )));
            }
            if 0 < filled {
                let bytes = part.get(..filled).unwrap_or_default();
                hasher.update(bytes);
                let (app, rowid) = (&self.app, self.rowid);
                app.in_transaction(|| {
                    let storage = app.storage();
                    storage.insert_media_part(rowid, seq, bytes)?;
                    if self.declared.is_none() {
                        // Counted against the quota as it arrives.
                        storage.reserve_media(rowid, received)?;
                    }
                    Ok(())
                })?;
                // Each part is committed before the next is read: the WAL
                // holds a part, not an upload, and the loop turns to other
                // requests (a body always ready to read would never yield).
                self.app.durable().await?;
                seq += 1;
            }
            if filled < PART_BYTES {
                break;
            }
        }
        if self.declared.is_some_and(|declared| declared != received) {
            return Err(cut_short("the body ended before its Content-Length"));
        }
        let digest = hasher.finalize();
        let (app, rowid) = (&self.app, self.rowid);
        app.in_transaction(|| {
            let storage = app.storage();
            storage.finish_media_upload(rowid, received, &digest)?;
            finish(&storage)
        })?;
        self.finished = true;
        Ok(())
    }
}

/// A body that could not be read whole (the client is usually gone).
fn cut_short(error: impl std::fmt::Display) -> Error {
    Error::matrix(400, "M_UNKNOWN", format!("the body could not be read whole: {error}"))
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let (app, rowid) = (&self.app, self.rowid);
        if let Err(error) = app.in_transaction(|| app.storage().delete_media(rowid)) {
            log::error!("deleting the unfinished upload in media row {rowid} failed: {error}");
        }
    }
}
