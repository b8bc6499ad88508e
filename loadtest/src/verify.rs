//! Reading the file server back: where uploads landed, how full each hour directory is, and
//! whether anything was left behind.
//!
//! Uses the node's own store code (`mft::node::open_store`), so SFTP and local-directory nodes are
//! inspected the same way, with paths relative to the node's directory.

use std::collections::{BTreeMap, BTreeSet};

use mft::layout::{ChatType, FILES_PER_HOUR_DIR, HourDir};
use mft::store::FileStore;
use percent_encoding::percent_decode_str;
use serde::Serialize;

/// The storage coordinates a download URI names:
/// `{public_url}/files/<node>/<chat>/<YYYYMMDD>/<HH[.n]>/<resource>/<filename>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriPath {
    pub node: String,
    pub chat: ChatType,
    pub date: String,
    pub hour_dir: String,
    pub resource: String,
    pub filename: String,
}

impl UriPath {
    /// Parses the storage coordinates from the end of `uri`, whatever its base (a node
    /// configured with port 0, or behind a proxy, hands out a base the tool may not know).
    /// The filename is percent-encoded, so it holds no `/`.
    pub fn parse(uri: &str) -> Option<UriPath> {
        let path = uri.split(['?', '#']).next()?;
        let segs: Vec<&str> = path.rsplitn(8, '/').collect();
        let [filename, resource, hour, date, chat, node, files, _base] = segs.as_slice() else {
            return None;
        };
        if *files != "files" || node.is_empty() || resource.is_empty() {
            return None;
        }
        HourDir::parse(hour)?;
        Some(UriPath {
            node: (*node).to_string(),
            chat: chat.parse().ok()?,
            date: (*date).to_string(),
            hour_dir: (*hour).to_string(),
            resource: (*resource).to_string(),
            filename: percent_decode_str(filename)
                .decode_utf8()
                .ok()?
                .into_owned(),
        })
    }

    /// The hour directory relative to the node's directory: `files/<chat>/<date>/<HH[.n]>`.
    pub fn dir(&self) -> String {
        format!("files/{}/{}/{}", self.chat, self.date, self.hour_dir)
    }
}

/// One hour directory and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HourDirCount {
    /// Relative path, `files/<chat>/<date>/<HH[.n]>`.
    pub dir: String,
    pub files: u64,
    /// Hidden temporary files (`.name.part`): uploads in progress or leftovers.
    pub temp_files: u64,
}

/// A listing of the date directories of some chat types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Hour directory -> final file names in it.
    pub dirs: BTreeMap<String, BTreeSet<String>>,
    /// Hour directory -> hidden temporary names in it.
    pub temp: BTreeMap<String, BTreeSet<String>>,
    /// Entries of date directories that are not valid hour directory names.
    pub strays: Vec<String>,
}

impl Listing {
    /// Lists `files/<chat>/<date>/*/*` for every given pair.
    pub async fn of(
        store: &dyn FileStore,
        dates: &BTreeSet<(ChatType, String)>,
    ) -> Result<Listing, mft::store::StoreError> {
        let mut out = Listing::default();
        for (chat, date) in dates {
            let date_dir = format!("files/{chat}/{date}");
            for hour in store.list_dir(&date_dir).await? {
                let dir = format!("{date_dir}/{}", hour.name);
                if !hour.is_dir || HourDir::parse(&hour.name).is_none() {
                    out.strays.push(dir);
                    continue;
                }
                let files = out.dirs.entry(dir.clone()).or_default();
                let temp = out.temp.entry(dir.clone()).or_default();
                for e in store.list_dir(&dir).await? {
                    if e.is_dir {
                        out.strays.push(format!("{dir}/{}", e.name));
                    } else if e.name.starts_with('.') {
                        temp.insert(e.name);
                    } else {
                        files.insert(e.name);
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn counts(&self) -> Vec<HourDirCount> {
        self.dirs
            .iter()
            .map(|(dir, files)| HourDirCount {
                dir: dir.clone(),
                files: files.len() as u64,
                temp_files: self.temp.get(dir).map_or(0, |t| t.len() as u64),
            })
            .collect()
    }

    pub fn total_files(&self) -> u64 {
        self.dirs.values().map(|f| f.len() as u64).sum()
    }

    pub fn total_temp(&self) -> u64 {
        self.temp.values().map(|f| f.len() as u64).sum()
    }

    /// Hour directories holding more than the 1000-file limit.
    pub fn overfull(&self) -> Vec<String> {
        self.dirs
            .iter()
            .filter(|(_, f)| f.len() as u64 > u64::from(FILES_PER_HOUR_DIR))
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Hours whose directories are not numbered `HH`, `HH.1`, … `HH.k` without gaps, and
    /// directories before the last of their hour that are not full (the node only moves to
    /// `HH.n+1` once `HH.n` holds 1000 files). Returned as human-readable problems.
    pub fn numbering_problems(&self) -> Vec<String> {
        let mut by_hour: BTreeMap<(String, u32), BTreeMap<u32, u64>> = BTreeMap::new();
        for (dir, files) in &self.dirs {
            let Some((date_dir, hour)) = dir.rsplit_once('/') else {
                continue;
            };
            let Some(h) = HourDir::parse(hour) else {
                continue;
            };
            by_hour
                .entry((date_dir.to_string(), h.hour))
                .or_default()
                .insert(h.seq, files.len() as u64);
        }
        let mut problems = Vec::new();
        for ((date_dir, hour), seqs) in by_hour {
            let last = seqs.keys().next_back().copied().unwrap_or(0);
            for seq in 0..=last {
                let name = HourDir { hour, seq }.to_string();
                match seqs.get(&seq) {
                    None => {
                        problems.push(format!("{date_dir}/{name} is missing before a later one"))
                    }
                    Some(n) if seq < last && *n < u64::from(FILES_PER_HOUR_DIR) => problems.push(
                        format!("{date_dir}/{name} holds {n} files but a later directory exists"),
                    ),
                    Some(_) => {}
                }
            }
        }
        problems
    }

    pub fn contains(&self, dir: &str, name: &str) -> bool {
        self.dirs.get(dir).is_some_and(|f| f.contains(name))
    }

    /// Every hour directory (as `dir/`), stray entry and `dir/name`, final and temporary.
    pub fn all_entries(&self) -> BTreeSet<String> {
        self.dirs
            .iter()
            .chain(self.temp.iter())
            .flat_map(|(d, names)| names.iter().map(move |n| format!("{d}/{n}")))
            .chain(self.dirs.keys().map(|d| format!("{d}/")))
            .chain(self.strays.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_download_uri() {
        let p = UriPath::parse(
            "http://127.0.0.1:7336/mft/files/node1/groupchat/20261203/14.2/AbCdEfGhIjKlMnOpQrStUvWx/r%C3%A9sum%C3%A9%20v2.pdf",
        )
        .expect("valid URI");
        assert_eq!(p.node, "node1");
        assert_eq!(p.chat, ChatType::Groupchat);
        assert_eq!(p.date, "20261203");
        assert_eq!(p.hour_dir, "14.2");
        assert_eq!(p.resource, "AbCdEfGhIjKlMnOpQrStUvWx");
        assert_eq!(p.filename, "résumé v2.pdf");
        assert_eq!(p.dir(), "files/groupchat/20261203/14.2");
    }

    #[test]
    fn refuses_other_shapes() {
        assert!(UriPath::parse("http://h:1/files/n/im/20261203/14/r").is_none());
        assert!(UriPath::parse("http://h:1/files/n/mail/20261203/14/r/f").is_none());
        assert!(UriPath::parse("http://h:1/files/n/im/20261203/25/r/f").is_none());
        assert!(UriPath::parse("http://h:1/blobs/n/im/20261203/14/r/f").is_none());
        assert!(UriPath::parse("http://h:1/files/n/im/20261203/14.1/r/f").is_some());
    }

    fn listing(dirs: &[(&str, usize)]) -> Listing {
        let mut l = Listing::default();
        for (d, n) in dirs {
            l.dirs
                .insert((*d).to_string(), (0..*n).map(|i| format!("f{i}")).collect());
        }
        l
    }

    #[test]
    fn numbering_accepts_full_directories_then_a_partial_one() {
        let l = listing(&[
            ("files/im/20261203/14", 1000),
            ("files/im/20261203/14.1", 1000),
            ("files/im/20261203/14.2", 5),
            ("files/im/20261203/15", 3),
        ]);
        assert!(l.numbering_problems().is_empty());
        assert!(l.overfull().is_empty());
        assert_eq!(l.total_files(), 2008);
    }

    #[test]
    fn numbering_finds_gaps_partial_and_overfull_directories() {
        let l = listing(&[
            ("files/im/20261203/14", 999),
            ("files/im/20261203/14.2", 5),
            ("files/im/20261203/15", 1001),
        ]);
        let problems = l.numbering_problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(l.overfull(), vec!["files/im/20261203/15".to_string()]);
    }
}
