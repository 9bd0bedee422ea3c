//! The in-memory search index of one users-service instance (mechanism: [`crate::search`]).
//!
//! Documents are numbered (`u32`) in the order the instance learnt of them; numbers are
//! local to the instance and never leave it: every ordering that reaches a client uses the
//! user id, so instances answer identically once they hold the same data.
//!
//! Memory per profile: one document (id, both normalised names in one allocation, follower
//! count), two `u32` entries in the sorted name array, one `u32` per distinct trigram in
//! the posting lists (about 25 for a Latin name) and a hash-map slot for the id.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::RwLock;

use super::{Query, RankKey, Substring, classify, index_trigrams};

/// Fuzzy candidates ranked per query: the ones sharing the most trigrams with it (ties
/// by id). Bounds the work for short, common queries; real typos share many trigrams
/// and stay in.
pub const FUZZY_CANDIDATES: usize = 1000;

/// What the index knows of one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u128,
    pub username_norm: String,
    pub display_norm: String,
    /// Whether the profile can be found (its username is known).
    pub visible: bool,
    pub followers: i64,
}

/// A change to apply, as a write transaction recorded it (see [`super::feed::Changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Names {
        id: u128,
        username_norm: String,
        display_norm: String,
        visible: bool,
    },
    Followers {
        id: u128,
        count: i64,
    },
    /// The whole row, as re-read by the change feed.
    Full(Entry),
}

/// A fast hash for keys that are already well mixed (trigram keys, uuids): SipHash
/// made the index build twice as slow.
#[derive(Default, Clone, Copy)]
pub struct MixHasher(u64);

impl std::hash::Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

type Mix = std::hash::BuildHasherDefault<MixHasher>;

/// The documents, one column per field (the hot ones stay dense in cache).
#[derive(Default)]
struct Inner {
    ids: Vec<u128>,
    followers: Vec<i64>,
    /// `username_norm` then `display_norm`, split at `splits[doc]`.
    names: Vec<Box<str>>,
    splits: Vec<u32>,
    /// In the postings and the name array.
    indexed: Vec<bool>,
    /// Documents of the initial load, sorted by id (4 bytes each; a hash map would take
    /// 64 MiB at 1,000,000); later ones in `added`.
    loaded_by_id: Vec<u32>,
    added_by_id: HashMap<u128, u32, Mix>,
    postings: BTreeMap<u64, Vec<u32>>,
    /// `doc << 1 | which` (0 username, 1 display name), sorted by (name, entry).
    sorted: Vec<u32>,
}

/// The index of one instance; cheap reads under a read lock, short write locks.
#[derive(Default)]
pub struct SearchIndex {
    inner: RwLock<Inner>,
}

/// Sizes, for logs and the benchmark.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub documents: usize,
    pub trigrams: usize,
    pub postings: usize,
}

impl Inner {
    fn username(&self, doc: u32) -> &str {
        &self.names[doc as usize][..self.splits[doc as usize] as usize]
    }

    fn display(&self, doc: u32) -> &str {
        &self.names[doc as usize][self.splits[doc as usize] as usize..]
    }

    fn name_of(&self, entry: u32) -> &str {
        if entry & 1 == 0 {
            self.username(entry >> 1)
        } else {
            self.display(entry >> 1)
        }
    }

    fn entry_cmp(&self, a: u32, b: u32) -> std::cmp::Ordering {
        self.name_of(a).cmp(self.name_of(b)).then(a.cmp(&b))
    }

    fn add_to_index(&mut self, doc: u32) {
        for t in index_trigrams(&[self.username(doc), self.display(doc)]) {
            let list = self.postings.entry(t).or_default();
            match list.last() {
                Some(&last) if last >= doc => {
                    if let Err(pos) = list.binary_search(&doc) {
                        list.insert(pos, doc);
                    }
                }
                _ => list.push(doc),
            }
        }
        for which in 0..2 {
            let entry = doc << 1 | which;
            let pos = self
                .sorted
                .partition_point(|&e| self.entry_cmp(e, entry).is_lt());
            self.sorted.insert(pos, entry);
        }
        self.indexed[doc as usize] = true;
    }

    fn remove_from_index(&mut self, doc: u32) {
        for t in index_trigrams(&[self.username(doc), self.display(doc)]) {
            if let Some(list) = self.postings.get_mut(&t) {
                if let Ok(pos) = list.binary_search(&doc) {
                    list.remove(pos);
                }
                if list.is_empty() {
                    self.postings.remove(&t);
                }
            }
        }
        for which in 0..2 {
            let entry = doc << 1 | which;
            let pos = self
                .sorted
                .partition_point(|&e| self.entry_cmp(e, entry).is_lt());
            if self.sorted.get(pos) == Some(&entry) {
                self.sorted.remove(pos);
            }
        }
        self.indexed[doc as usize] = false;
    }

    fn push_doc(&mut self, id: u128, names: Box<str>, split: u32, followers: i64) -> u32 {
        let doc = self.ids.len() as u32;
        self.ids.push(id);
        self.followers.push(followers);
        self.names.push(names);
        self.splits.push(split);
        self.indexed.push(false);
        doc
    }

    fn find(&self, id: u128) -> Option<u32> {
        if let Some(&doc) = self.added_by_id.get(&id) {
            return Some(doc);
        }
        let i = self
            .loaded_by_id
            .partition_point(|&d| self.ids[d as usize] < id);
        self.loaded_by_id
            .get(i)
            .copied()
            .filter(|&d| self.ids[d as usize] == id)
    }

    fn doc_for(&mut self, id: u128) -> u32 {
        match self.find(id) {
            Some(doc) => doc,
            None => {
                let doc = self.push_doc(id, Box::from(""), 0, 0);
                self.added_by_id.insert(id, doc);
                doc
            }
        }
    }

    fn set_names(&mut self, id: u128, username: &str, display: &str, visible: bool) {
        let doc = self.doc_for(id);
        if self.indexed[doc as usize] == visible
            && self.username(doc) == username
            && self.display(doc) == display
        {
            return;
        }
        if self.indexed[doc as usize] {
            self.remove_from_index(doc);
        }
        self.names[doc as usize] = format!("{username}{display}").into_boxed_str();
        self.splits[doc as usize] = username.len() as u32;
        if visible {
            self.add_to_index(doc);
        }
    }

    fn apply(&mut self, update: &Update) {
        match update {
            Update::Names {
                id,
                username_norm,
                display_norm,
                visible,
            } => self.set_names(*id, username_norm, display_norm, *visible),
            Update::Followers { id, count } => {
                let doc = self.doc_for(*id);
                self.followers[doc as usize] = *count;
            }
            Update::Full(e) => {
                self.set_names(e.id, &e.username_norm, &e.display_norm, e.visible);
                let doc = self.doc_for(e.id);
                self.followers[doc as usize] = e.followers;
            }
        }
    }
}

/// Builds an index from a stream of entries in one pass (postings come out sorted, as
/// documents are numbered in arrival order), then sorts the name array once.
#[derive(Default)]
pub struct Builder {
    inner: Inner,
    postings: HashMap<u64, Vec<u32>, Mix>,
}

impl Builder {
    /// Adds a profile; ids must be distinct (they come from the primary key).
    pub fn push(&mut self, e: Entry) {
        let names = format!("{}{}", e.username_norm, e.display_norm).into_boxed_str();
        let doc = self
            .inner
            .push_doc(e.id, names, e.username_norm.len() as u32, e.followers);
        if e.visible {
            self.inner.indexed[doc as usize] = true;
            for t in index_trigrams(&[&e.username_norm, &e.display_norm]) {
                self.postings.entry(t).or_default().push(doc);
            }
            self.inner.sorted.push(doc << 1);
            self.inner.sorted.push(doc << 1 | 1);
        }
    }

    pub fn finish(self) -> SearchIndex {
        let Builder {
            mut inner,
            postings,
        } = self;
        inner.postings = postings
            .into_iter()
            .map(|(k, mut v)| {
                v.shrink_to_fit();
                (k, v)
            })
            .collect();
        // Sort by the first 8 bytes of the name (no indirection), then each run of equal
        // first bytes by the whole name.
        let head = |name: &str| {
            let mut b = [0u8; 8];
            let n = name.len().min(8);
            b[..n].copy_from_slice(&name.as_bytes()[..n]);
            u64::from_be_bytes(b)
        };
        let mut keyed: Vec<(u64, u32)> = inner
            .sorted
            .iter()
            .map(|&e| (head(inner.name_of(e)), e))
            .collect();
        keyed.sort_unstable();
        let mut sorted: Vec<u32> = keyed.iter().map(|&(_, e)| e).collect();
        drop(keyed);
        let mut start = 0;
        while start < sorted.len() {
            let h = head(inner.name_of(sorted[start]));
            let mut end = start + 1;
            while end < sorted.len() && head(inner.name_of(sorted[end])) == h {
                end += 1;
            }
            if end - start > 1 {
                sorted[start..end].sort_unstable_by(|&a, &b| inner.entry_cmp(a, b));
            }
            start = end;
        }
        inner.sorted = sorted;
        let mut by_id: Vec<u32> = (0..inner.ids.len() as u32).collect();
        by_id.sort_unstable_by_key(|&d| inner.ids[d as usize]);
        inner.loaded_by_id = by_id;
        inner.ids.shrink_to_fit();
        inner.followers.shrink_to_fit();
        inner.names.shrink_to_fit();
        inner.splits.shrink_to_fit();
        inner.indexed.shrink_to_fit();
        SearchIndex {
            inner: RwLock::new(inner),
        }
    }
}

/// The best `k` keys offered, kept in a max-heap whose top is the worst kept.
struct TopK {
    k: usize,
    heap: BinaryHeap<RankKey>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Whether a key of distance 0 with `followers` could still be kept: a test that
    /// needs no access to the document, done before ranking it.
    fn may_take(&self, followers: i64) -> bool {
        self.heap.len() < self.k
            || self
                .heap
                .peek()
                .is_none_or(|w| w.distance > 0 || followers >= w.followers)
    }

    fn offer(&mut self, key: RankKey) {
        // A document reached twice (both names in a prefix range) gives the same key.
        if self.heap.len() < self.k {
            if !self.heap.iter().any(|k| *k == key) {
                self.heap.push(key);
            }
        } else if self.heap.peek().is_some_and(|worst| key < *worst)
            && !self.heap.iter().any(|k| *k == key)
        {
            self.heap.pop();
            self.heap.push(key);
        }
    }
}

impl SearchIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // Every update is a sequence of complete vector operations, so a panic elsewhere
        // while the lock was held leaves nothing a reader could trip over.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn apply(&self, updates: &[Update]) {
        if updates.is_empty() {
            return;
        }
        let mut inner = self.write();
        for u in updates {
            inner.apply(u);
        }
    }

    pub fn stats(&self) -> Stats {
        let inner = self.read();
        Stats {
            documents: inner.ids.len(),
            trigrams: inner.postings.len(),
            postings: inner.postings.values().map(Vec::len).sum(),
        }
    }

    /// What the index holds for `id` (tests and diagnostics).
    pub fn get(&self, id: u128) -> Option<Entry> {
        let inner = self.read();
        let doc = inner.find(id)?;
        Some(Entry {
            id,
            username_norm: inner.username(doc).to_owned(),
            display_norm: inner.display(doc).to_owned(),
            visible: inner.indexed[doc as usize],
            followers: inner.followers[doc as usize],
        })
    }

    /// The first `want` keys after `after`, in rank order, of the users not in `hidden`.
    pub fn page(
        &self,
        q: &Query,
        hidden: &HashSet<u128>,
        after: Option<&RankKey>,
        want: usize,
    ) -> Vec<RankKey> {
        let inner = self.read();
        let mut keys: Vec<RankKey> = Vec::with_capacity(want);
        for tier in after.map_or(0, |a| a.tier)..=3 {
            if keys.len() >= want {
                break;
            }
            let mut top = TopK::new(want - keys.len());
            let mut offer = |doc: u32| {
                let followers = inner.followers[doc as usize];
                if tier < 3 && !top.may_take(followers) {
                    return;
                }
                let id = inner.ids[doc as usize];
                if !hidden.is_empty() && hidden.contains(&id) {
                    return;
                }
                if let Some((t, distance)) = classify(q, inner.username(doc), inner.display(doc))
                    && t == tier
                {
                    let key = RankKey {
                        tier,
                        distance,
                        followers,
                        id,
                    };
                    if after.is_none_or(|a| key > *a) {
                        top.offer(key);
                    }
                }
            };
            match tier {
                0 | 1 => inner.prefix_range(q, tier == 0, &mut offer),
                2 => inner.substring_candidates(q, &mut offer),
                _ => inner.fuzzy_candidates(q, &mut offer),
            }
            keys.extend(top.heap.into_sorted_vec());
        }
        keys
    }
}

/// The first position at or after `from` in the sorted `list` holding a value `>= doc`:
/// exponential then binary search, so walking a long list in order costs little.
fn gallop(list: &[u32], from: usize, doc: u32) -> usize {
    let mut step = 1;
    let mut lo = from;
    while lo + step < list.len() && list[lo + step] < doc {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step + 1).min(list.len());
    lo + list[lo..hi].partition_point(|&d| d < doc)
}

impl Inner {
    /// Offers the documents with a name equal to (`exact`) or starting with the query
    /// (a document with both names in range is offered twice; [`TopK`] keeps it once).
    fn prefix_range(&self, q: &Query, exact: bool, offer: &mut impl FnMut(u32)) {
        let norm = q.norm.as_str();
        let start = self.sorted.partition_point(|&e| self.name_of(e) < norm);
        let len = self.sorted[start..].partition_point(|&e| {
            let name = self.name_of(e);
            if exact {
                name == norm
            } else {
                name.starts_with(norm)
            }
        });
        for &entry in &self.sorted[start..start + len] {
            offer(entry >> 1);
        }
    }

    fn substring_candidates(&self, q: &Query, offer: &mut impl FnMut(u32)) {
        match &q.substring {
            Substring::None => {}
            Substring::AllOf(trigrams) => {
                let mut lists: Vec<&[u32]> = Vec::with_capacity(trigrams.len());
                for t in trigrams {
                    match self.postings.get(t) {
                        Some(l) => lists.push(l),
                        None => return,
                    }
                }
                lists.sort_by_key(|l| l.len());
                let Some((first, rest)) = lists.split_first() else {
                    return;
                };
                // Walk the shortest list; the others are searched from where the previous
                // candidate was found (all lists are sorted).
                let mut from = vec![0usize; rest.len()];
                'candidates: for &doc in *first {
                    for (list, pos) in rest.iter().zip(from.iter_mut()) {
                        *pos = gallop(list, *pos, doc);
                        if list.get(*pos) != Some(&doc) {
                            continue 'candidates;
                        }
                    }
                    offer(doc);
                }
            }
            Substring::TrigramPrefix(a, b) => {
                let mut docs: Vec<u32> = self
                    .postings
                    .range(super::trigram_prefix_range(*a, *b))
                    .flat_map(|(_, l)| l.iter().copied())
                    .collect();
                docs.sort_unstable();
                docs.dedup();
                for doc in docs {
                    offer(doc);
                }
            }
        }
    }

    fn fuzzy_candidates(&self, q: &Query, offer: &mut impl FnMut(u32)) {
        let Some(fuzzy) = &q.fuzzy else {
            return;
        };
        // One counter per document (a query has at most 66 trigrams), and the documents
        // touched, so the counters are read back without scanning them all.
        let mut shared = vec![0u8; self.ids.len()];
        let mut touched: Vec<u32> = Vec::new();
        for t in &fuzzy.trigrams {
            for &doc in self.postings.get(t).map_or(&[][..], |l| &l[..]) {
                let n = &mut shared[doc as usize];
                if *n == 0 {
                    touched.push(doc);
                }
                *n = n.saturating_add(1);
            }
        }
        touched.retain(|&doc| usize::from(shared[doc as usize]) >= fuzzy.min_shared);
        if touched.len() > FUZZY_CANDIDATES {
            // Most shared trigrams first, then by id: the same choice on every instance.
            // Only the documents at the threshold count need their ids compared.
            let mut histogram = [0usize; 256];
            for &doc in &touched {
                histogram[usize::from(shared[doc as usize])] += 1;
            }
            let (mut threshold, mut above) = (255usize, 0usize);
            while above + histogram[threshold] < FUZZY_CANDIDATES {
                above += histogram[threshold];
                threshold -= 1;
            }
            let mut tied: Vec<(u128, u32)> = touched
                .iter()
                .filter(|&&doc| usize::from(shared[doc as usize]) == threshold)
                .map(|&doc| (self.ids[doc as usize], doc))
                .collect();
            let room = FUZZY_CANDIDATES - above;
            if tied.len() > room {
                tied.select_nth_unstable(room - 1);
                tied.truncate(room);
            }
            touched.retain(|&doc| usize::from(shared[doc as usize]) > threshold);
            touched.extend(tied.into_iter().map(|(_, doc)| doc));
        }
        for doc in touched {
            offer(doc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::normalize;

    fn entry(id: u128, u: &str, d: &str, followers: i64) -> Entry {
        Entry {
            id,
            username_norm: normalize(u),
            display_norm: normalize(d),
            visible: true,
            followers,
        }
    }

    fn ids(index: &SearchIndex, q: &str) -> Vec<u128> {
        let q = Query::parse(q).unwrap();
        index
            .page(&q, &HashSet::new(), None, 50)
            .into_iter()
            .map(|k| k.id)
            .collect()
    }

    #[test]
    fn gallop_finds_the_lower_bound() {
        let list: Vec<u32> = (0..1000).map(|i| i * 3).collect();
        for from in [0, 1, 17, 500, 999, 1000] {
            for doc in [0, 1, 3, 50, 51, 2996, 2997, 2998, 5000] {
                let want = from.max(list.partition_point(|&d| d < doc));
                assert_eq!(gallop(&list, from, doc), want, "from {from} doc {doc}");
            }
        }
    }

    #[test]
    fn updates_match_a_fresh_build() {
        let mut b = Builder::default();
        b.push(entry(1, "alice", "Alice Liddell", 3));
        b.push(entry(2, "malice", "Mal Ice", 0));
        b.push(entry(3, "bob", "Bob", 9));
        let index = b.finish();
        assert_eq!(ids(&index, "ali"), [1, 2]);
        // Rename, new profile, invisible profile, follower change.
        index.apply(&[
            Update::Names {
                id: 3,
                username_norm: "alibob".into(),
                display_norm: "ali bob".into(),
                visible: true,
            },
            Update::Full(entry(4, "alina", "Alina", 1)),
            Update::Names {
                id: 5,
                username_norm: "alix".into(),
                display_norm: "alix".into(),
                visible: false,
            },
            Update::Followers { id: 2, count: 7 },
        ]);
        assert_eq!(ids(&index, "ali"), [3, 1, 4, 2]);
        assert!(ids(&index, "bob").contains(&3));
        assert_eq!(index.get(2).unwrap().followers, 7);
        index.apply(&[Update::Names {
            id: 3,
            username_norm: "bob".into(),
            display_norm: "bob".into(),
            visible: true,
        }]);
        assert_eq!(ids(&index, "ali"), [1, 4, 2]);
        assert_eq!(ids(&index, "bob"), [3]);
        // Blocked users are skipped; cursors continue after the last key.
        let q = Query::parse("ali").unwrap();
        let hidden: HashSet<u128> = [1].into();
        let page = index.page(&q, &hidden, None, 1);
        assert_eq!(page[0].id, 4);
        let rest = index.page(&q, &hidden, Some(&page[0]), 10);
        assert_eq!(rest.iter().map(|k| k.id).collect::<Vec<_>>(), [2]);
    }
}
