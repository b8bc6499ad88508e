//! Storage layout (SPEC section 2): `files/<chat_type>/<YYYYMMDD>/<HH>[.<n>]/<resource>`.
//!
//! Owns chat types, resource names, hour-directory rollover (at most [`FILES_PER_HOUR_DIR`] per
//! directory, recovered from the file server after a restart), the injectable clock, and the
//! parsing of download URL paths back into store paths. Nothing a user sends reaches a path
//! without passing through [`StoredPath::parse_segments`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::store::{FileStore, StoreError};

/// Most files in one hour directory.
pub const FILES_PER_HOUR_DIR: u32 = 1000;

/// Random bytes in a resource name: 144 bits, 24 URL-safe characters.
const RESOURCE_RANDOM_BYTES: usize = 18;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChatType {
    Im,
    Groupchat,
    Persistent,
}

impl ChatType {
    pub const ALL: [ChatType; 3] = [ChatType::Im, ChatType::Groupchat, ChatType::Persistent];

    pub fn as_str(self) -> &'static str {
        match self {
            ChatType::Im => "im",
            ChatType::Groupchat => "groupchat",
            ChatType::Persistent => "persistent",
        }
    }
}

impl fmt::Display for ChatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a chat type (im, groupchat, persistent)")]
pub struct BadChatType(String);

impl FromStr for ChatType {
    type Err = BadChatType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "im" => Ok(ChatType::Im),
            "groupchat" => Ok(ChatType::Groupchat),
            "persistent" => Ok(ChatType::Persistent),
            other => Err(BadChatType(other.to_string())),
        }
    }
}

/// A fresh unguessable resource name.
pub fn new_resource() -> String {
    let bytes: [u8; RESOURCE_RANDOM_BYTES] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn is_resource(s: &str) -> bool {
    s.len() == RESOURCE_RANDOM_BYTES * 4 / 3
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An hour directory name: `HH` or `HH.n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HourDir {
    pub hour: u32,
    pub seq: u32,
}

impl HourDir {
    pub fn parse(s: &str) -> Option<HourDir> {
        let (hh, seq) = match s.split_once('.') {
            Some((hh, n)) => {
                // `HH.0` is never produced, and leading zeros would alias names.
                if n.is_empty() || n.starts_with('0') || n.len() > 9 {
                    return None;
                }
                (hh, n.parse::<u32>().ok()?)
            }
            None => (s, 0),
        };
        if hh.len() != 2 || !hh.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hour: u32 = hh.parse().ok()?;
        (hour < 24).then_some(HourDir { hour, seq })
    }
}

impl fmt::Display for HourDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.seq == 0 {
            write!(f, "{:02}", self.hour)
        } else {
            write!(f, "{:02}.{}", self.hour, self.seq)
        }
    }
}

fn is_date(s: &str) -> bool {
    s.len() == 8
        && s.bytes().all(|b| b.is_ascii_digit())
        && chrono::NaiveDate::parse_from_str(s, "%Y%m%d").is_ok()
}

/// Where one file lives, relative to the node's directory on the file server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPath {
    pub chat: ChatType,
    pub date: String,
    pub hour_dir: HourDir,
    pub resource: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("the download path has the wrong number of segments")]
    Shape,
    #[error("the download path segment `{0}` is invalid")]
    Segment(&'static str),
}

impl StoredPath {
    /// The hour directory, relative: `files/<chat>/<date>/<HH[.n]>`.
    pub fn dir(&self) -> String {
        format!("files/{}/{}/{}", self.chat, self.date, self.hour_dir)
    }

    /// The file, relative: `files/<chat>/<date>/<HH[.n]>/<resource>`.
    pub fn rel(&self) -> String {
        format!("{}/{}", self.dir(), self.resource)
    }

    /// The URL path segments after the node id: `<chat>/<date>/<HH[.n]>/<resource>`.
    pub fn url_segments(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.chat, self.date, self.hour_dir, self.resource
        )
    }

    /// Validates already percent-decoded URL segments `<chat>/<date>/<HH[.n]>/<resource>`.
    /// Only exact, strictly shaped values pass: no `..`, separators, NUL or aliases.
    pub fn parse_segments(
        chat: &str,
        date: &str,
        hour: &str,
        resource: &str,
    ) -> Result<StoredPath, PathError> {
        let chat = chat
            .parse::<ChatType>()
            .map_err(|_| PathError::Segment("chat_type"))?;
        if !is_date(date) {
            return Err(PathError::Segment("date"));
        }
        let hour_dir = HourDir::parse(hour).ok_or(PathError::Segment("hour"))?;
        if !is_resource(resource) {
            return Err(PathError::Segment("resource"));
        }
        Ok(StoredPath {
            chat,
            date: date.to_string(),
            hour_dir,
            resource: resource.to_string(),
        })
    }
}

/// The time source for choosing hour directories; tests pin it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock stuck at one instant (settable), for tests and the `MFT_PIN_CLOCK` variable.
pub struct FixedClock(Mutex<DateTime<Utc>>);

impl FixedClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        FixedClock(Mutex::new(at))
    }
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The (chat type, date, hour) an hour directory series belongs to.
type HourKey = (ChatType, String, u32);

/// Count state of one hour's directory series.
#[derive(Default)]
struct HourState {
    recovered: bool,
    seq: u32,
    count: u32,
}

/// Chooses the hour directory of each new file so that none holds more than
/// [`FILES_PER_HOUR_DIR`], under concurrency and across restarts.
///
/// Each slot is reserved in memory before the upload starts; a failed upload leaves its slot
/// used (directories may end up with fewer than 1000 files, never more). The first allocation
/// of an hour after start lists the file server to resume the count.
pub struct RolloverAllocator {
    store: Arc<dyn FileStore>,
    clock: Arc<dyn Clock>,
    hours: Mutex<HashMap<HourKey, Arc<tokio::sync::Mutex<HourState>>>>,
}

impl RolloverAllocator {
    pub fn new(store: Arc<dyn FileStore>, clock: Arc<dyn Clock>) -> Self {
        RolloverAllocator {
            store,
            clock,
            hours: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves a place for a new file of `chat` type now.
    pub async fn allocate(&self, chat: ChatType) -> Result<StoredPath, StoreError> {
        let now = self.clock.now();
        let date = format!("{:04}{:02}{:02}", now.year(), now.month(), now.day());
        let hour = now.hour();
        let state = self.hour_state((chat, date.clone(), hour));
        let mut st = state.lock().await;
        if !st.recovered {
            let (seq, count) = self.recover(chat, &date, hour).await?;
            st.seq = seq;
            st.count = count;
            st.recovered = true;
        }
        if st.count >= FILES_PER_HOUR_DIR {
            st.seq += 1;
            st.count = 0;
        }
        st.count += 1;
        Ok(StoredPath {
            chat,
            date,
            hour_dir: HourDir { hour, seq: st.seq },
            resource: new_resource(),
        })
    }

    fn hour_state(&self, key: HourKey) -> Arc<tokio::sync::Mutex<HourState>> {
        let mut hours = self.hours.lock().unwrap_or_else(|e| e.into_inner());
        if hours.len() > 64 {
            // Forget other hours: the current one is the only one still allocated from.
            hours.retain(|k, _| k.1 == key.1 && k.2 == key.2);
        }
        hours.entry(key).or_default().clone()
    }

    /// Finds the highest-numbered directory of the hour and how many files it holds.
    async fn recover(
        &self,
        chat: ChatType,
        date: &str,
        hour: u32,
    ) -> Result<(u32, u32), StoreError> {
        let day_dir = format!("files/{chat}/{date}");
        let entries = self.store.list_dir(&day_dir).await?;
        let top = entries
            .iter()
            .filter(|e| e.is_dir)
            .filter_map(|e| HourDir::parse(&e.name))
            .filter(|h| h.hour == hour)
            .map(|h| h.seq)
            .max();
        let Some(seq) = top else {
            return Ok((0, 0));
        };
        let dir = format!("{day_dir}/{}", HourDir { hour, seq });
        let count = self
            .store
            .list_dir(&dir)
            .await?
            .iter()
            .filter(|e| !e.is_dir && !e.name.starts_with('.'))
            .count();
        // Temporary files of uploads cut off by a restart do not count; a directory can only
        // be over the limit if something other than this node wrote to it.
        Ok((seq, u32::try_from(count).unwrap_or(u32::MAX)))
    }
}

/// The extension of a real filename for `AFT_LOG.file_type` (lowercase, at most 10 chars).
pub fn file_type_of(real_filename: &str) -> String {
    match real_filename.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && !ext.is_empty()
                && ext.chars().count() <= 10
                && ext.chars().all(|c| c.is_alphanumeric()) =>
        {
            ext.to_lowercase()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_dir_names() {
        assert_eq!(HourDir { hour: 7, seq: 0 }.to_string(), "07");
        assert_eq!(HourDir { hour: 23, seq: 2 }.to_string(), "23.2");
        assert_eq!(HourDir::parse("07.1"), Some(HourDir { hour: 7, seq: 1 }));
        for bad in ["7", "24", "07.", "07.0", "07.01", "0a", "../", "07.1.2", ""] {
            assert_eq!(HourDir::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resources_are_url_safe_and_distinct() {
        let a = new_resource();
        let b = new_resource();
        assert_ne!(a, b);
        assert!(is_resource(&a), "{a}");
    }

    #[test]
    fn download_segments_strict() {
        let r = new_resource();
        let p = StoredPath::parse_segments("im", "20261203", "17.1", &r).unwrap();
        assert_eq!(p.rel(), format!("files/im/20261203/17.1/{r}"));
        assert!(StoredPath::parse_segments("im", "20261303", "17", &r).is_err());
        assert!(StoredPath::parse_segments("im", "20261203", "..", &r).is_err());
        assert!(StoredPath::parse_segments("x", "20261203", "17", &r).is_err());
        assert!(StoredPath::parse_segments("im", "20261203", "17", "../../etc").is_err());
        assert!(StoredPath::parse_segments("im", "20261203", "17", "a/b").is_err());
    }

    #[test]
    fn file_types() {
        assert_eq!(file_type_of("report.PDF"), "pdf");
        assert_eq!(file_type_of("archive.tar.gz"), "gz");
        assert_eq!(file_type_of("noext"), "");
        assert_eq!(file_type_of(".bashrc"), "");
        assert_eq!(file_type_of("x.verylongextension"), "");
    }
}
