//! Validated label sets, stored in the form remote write sends them.
//!
//! A [`Labels`] is one byte buffer holding each label exactly as a remote-write `TimeSeries`
//! carries it on the wire: a `labels` field (tag 1) wrapping a `Label` message with its `name`
//! (tag 1) and `value` (tag 2). One allocation per label set instead of two strings per label
//! keeps a scraped series to a fraction of the memory; equality and hashing work on one byte
//! string; and the encoder copies a series' labels onto the wire in runs of bytes.
//!
//! A scrape target's series keep the target's labels (`job`, `instance`) in one shared *base*
//! set rather than a copy each (see [`Labels::with_shared_base`]); the encoder then splices the
//! base's fields into the series' own bytes, as it splices in external labels.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, OnceLock};

use triomphe::ThinArc;

use super::native::NativeHistogram;
use super::{is_valid_label_name, is_valid_metric_name, LabelError, METRIC_NAME_LABEL};

/// `TimeSeries.labels` (field 1, length-delimited).
pub(crate) const KEY_SERIES_LABEL: u8 = (1 << 3) | 2;
/// `Label.name` (field 1, length-delimited).
const KEY_LABEL_NAME: u8 = (1 << 3) | 2;
/// `Label.value` (field 2, length-delimited).
const KEY_LABEL_VALUE: u8 = (2 << 3) | 2;

/// One label, owned: for code that edits a list of labels (relabeling) before building a
/// [`Labels`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    /// The label name.
    pub name: String,
    /// The label value.
    pub value: String,
}

/// One label of a [`Labels`], borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelRef<'a> {
    /// The label name.
    pub name: &'a str,
    /// The label value, never empty.
    pub value: &'a str,
}

impl LabelRef<'_> {
    /// Copies the label into an owned [`Label`].
    pub fn to_label(self) -> Label {
        Label {
            name: self.name.to_string(),
            value: self.value.to_string(),
        }
    }
}

/// A validated label set: sorted by name, names unique and valid, no empty values.
///
/// An empty value means "no such label" in Prometheus, so such pairs are dropped on build.
///
/// Immutable and shared: a clone is a reference count increment. The hash and the bytes sit
/// in one allocation behind one pointer, as a scrape target keeps a label set for each of its
/// series and hands it to every sample.
///
/// A set may keep some of its labels in a shared *base* set (see
/// [`Labels::with_shared_base`]): every series of a scrape target carries the target's `job`
/// and `instance`, which would otherwise be stored again for each one. Equality, hashing,
/// order and iteration see the whole set either way.
#[derive(Clone)]
pub struct Labels {
    /// Slice: the set's own labels in name order, each encoded as a `TimeSeries.labels`
    /// field.
    inner: ThinArc<Head, u8>,
}

/// What a label set's allocation holds before its own labels' bytes.
struct Head {
    /// The hash of the whole set's encoding, computed once, so grouping and maps never
    /// rehash it.
    hash: u64,
    /// Labels of the set stored once for many sets: never empty, never with a base of its
    /// own, and sharing no name with the own labels.
    base: Option<Labels>,
    /// What few sets carry besides: their own labels kept elsewhere, or a native histogram.
    /// One pointer, so that the many sets with neither pay 8 bytes for both.
    extra: Option<Arc<Extra>>,
}

/// The rarer parts of a label set (see [`Head::extra`]).
enum Extra {
    /// The set's own labels are those of this set, stored once for the sets of many targets
    /// that expose the same series (see [`SharedOwn`]); the set's own bytes are then empty.
    /// Always a set that stores its own labels itself.
    Own(Labels),
    /// The native histogram of the one sample this copy of the set was made for (see
    /// [`crate::series::Sample::native`]); ignored by equality, hashing and order.
    Histogram(Arc<NativeHistogram>),
}

/// The own labels (those beyond a [`Labels::base`]) of one label set, for other sets with the
/// same own labels to store theirs in (see [`Labels::with_own_in`]). Every node exporter of a
/// job exposes `node_cpu_seconds_total{cpu="0",mode="idle"}`; its series on each target differ
/// only in their base (`job`, `instance`), and keep one copy of the rest between them.
#[derive(Clone)]
pub struct SharedOwn(Arc<Extra>);

impl SharedOwn {
    /// The shared own labels' encoding (see [`Labels::own_wire_bytes`]).
    pub fn own_wire_bytes(&self) -> &[u8] {
        match &*self.0 {
            Extra::Own(labels) => labels.inline_bytes(),
            // Never made: only `Labels::share_own` makes a `SharedOwn`, always of `Own`.
            Extra::Histogram(_) => &[],
        }
    }

    /// Tells whether no label set stores its own labels here any more.
    pub fn is_unused(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

impl fmt::Debug for SharedOwn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedOwn")
            .field("bytes", &self.own_wire_bytes().len())
            .finish()
    }
}

impl Default for Labels {
    fn default() -> Self {
        static EMPTY: OnceLock<Labels> = OnceLock::new();
        EMPTY.get_or_init(|| Labels::from_buf(Vec::new())).clone()
    }
}

impl Labels {
    /// Builds a series label set from a metric name and labels, validating everything.
    pub fn with_name<K, V>(
        metric: &str,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, LabelError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        if !is_valid_metric_name(metric) {
            return Err(LabelError::InvalidMetricName(metric.to_string()));
        }
        let mut all: Vec<(&str, &str)> = Vec::new();
        let pairs: Vec<(K, V)> = pairs.into_iter().collect();
        all.extend(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
        all.push((METRIC_NAME_LABEL, metric));
        Self::from_pairs(all)
    }

    /// Builds a label set from arbitrary pairs; a series needs `__name__` among them
    /// (see [`Labels::require_name`]).
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self, LabelError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut kept: Vec<(K, V)> = Vec::new();
        for (k, v) in pairs {
            let (name, value) = (k.as_ref(), v.as_ref());
            if name == METRIC_NAME_LABEL {
                if !is_valid_metric_name(value) {
                    return Err(LabelError::InvalidMetricName(value.to_string()));
                }
            } else if !is_valid_label_name(name) {
                return Err(LabelError::InvalidName(name.to_string()));
            }
            if !value.is_empty() {
                kept.push((k, v));
            }
        }
        kept.sort_unstable_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        if let Some(w) = kept.windows(2).find(|w| w[0].0.as_ref() == w[1].0.as_ref()) {
            return Err(LabelError::Duplicate(w[0].0.as_ref().to_string()));
        }
        Ok(Self::from_sorted(
            kept.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
        ))
    }

    /// Builds the buffer from pairs already valid, sorted, unique and without empty values.
    fn from_sorted<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Labels {
        let len: usize = pairs
            .clone()
            .map(|(n, v)| field_len(label_msg_len(n, v)))
            .sum();
        let mut buf = Vec::with_capacity(len);
        for (name, value) in pairs {
            buf.push(KEY_SERIES_LABEL);
            put_varint(&mut buf, label_msg_len(name, value) as u64);
            put_string(&mut buf, KEY_LABEL_NAME, name);
            put_string(&mut buf, KEY_LABEL_VALUE, value);
        }
        Labels::from_buf(buf)
    }

    fn from_buf(buf: Vec<u8>) -> Labels {
        let named = OwnFields { rest: &buf }
            .map(|f| f.name)
            .take_while(|n| cmp_names(n, METRIC_NAME_LABEL.as_bytes()).is_le())
            .any(|n| n == METRIC_NAME_LABEL.as_bytes());
        let head = Head {
            hash: with_named_bit(hash_bytes(seed(), &buf), named),
            base: None,
            extra: None,
        };
        Labels {
            inner: ThinArc::from_header_and_slice(head, &buf),
        }
    }

    /// The same label set, stored as its labels beyond `base` and a reference to `base`, when
    /// it has every label of `base` with the same value: a scrape target's series share its
    /// `job` and `instance` so. Otherwise a clone.
    pub fn with_shared_base(&self, base: &Labels) -> Labels {
        if base.is_empty() || base.base().is_some() || self.base().is_some() {
            return self.clone();
        }
        let all = self.own_wire_bytes();
        let mut own = Vec::with_capacity(all.len().saturating_sub(base.own_wire_bytes().len()));
        let mut shared = base.own_fields().peekable();
        for f in self.own_fields() {
            // Both are sorted by name with unique names, so a base label can only meet its
            // twin in order; one that differs stays unmatched and the split is refused.
            if shared.peek().is_some_and(|b| b.bytes == f.bytes) {
                shared.next();
            } else {
                own.extend_from_slice(f.bytes);
            }
        }
        if shared.peek().is_some() {
            return self.clone();
        }
        let head = Head {
            // The same content as `self`, so the same hash.
            hash: self.content_hash(),
            base: Some(base.clone()),
            extra: None,
        };
        Labels {
            inner: ThinArc::from_header_and_slice(head, &own),
        }
    }

    /// A copy of this set (the same labels, hash and base) that carries `histogram`: the
    /// label set of one native histogram sample. A float sample stays three words this way;
    /// the histogram sample pays for the copy and its link to the histogram.
    pub fn with_histogram(&self, histogram: Arc<NativeHistogram>) -> Labels {
        let head = Head {
            hash: self.content_hash(),
            base: self.base().cloned(),
            extra: Some(Arc::new(Extra::Histogram(histogram))),
        };
        Labels {
            inner: ThinArc::from_header_and_slice(head, self.own_wire_bytes()),
        }
    }

    /// The native histogram this copy of the set carries (see [`Labels::with_histogram`]).
    pub fn histogram(&self) -> Option<&Arc<NativeHistogram>> {
        match self.inner.header.header.extra.as_deref() {
            Some(Extra::Histogram(h)) => Some(h),
            _ => None,
        }
    }

    /// This set's own labels, for other sets to store theirs in (see
    /// [`Labels::with_own_in`]): where the set keeps them itself, a new handle to them; where
    /// it keeps them in another set's already, that set's handle.
    pub fn share_own(&self) -> SharedOwn {
        match &self.inner.header.header.extra {
            Some(extra) if matches!(**extra, Extra::Own(_)) => SharedOwn(extra.clone()),
            _ => SharedOwn(Arc::new(Extra::Own(self.clone()))),
        }
    }

    /// The same set, keeping its own labels in `own` rather than in a copy of its own: 48
    /// bytes of allocation whatever its labels. A clone when `own` holds other labels, or the
    /// set carries a histogram (whose copy is made for one sample only).
    pub fn with_own_in(&self, own: &SharedOwn) -> Labels {
        if own.own_wire_bytes() != self.own_wire_bytes() || self.histogram().is_some() {
            return self.clone();
        }
        let head = Head {
            hash: self.content_hash(),
            base: self.base().cloned(),
            extra: Some(own.0.clone()),
        };
        Labels {
            inner: ThinArc::from_header_and_slice(head, &[]),
        }
    }

    /// Tells whether the set keeps its own labels in another set's (see
    /// [`Labels::with_own_in`]).
    pub fn own_is_shared(&self) -> bool {
        matches!(
            self.inner.header.header.extra.as_deref(),
            Some(Extra::Own(_))
        )
    }

    /// The shared labels this set keeps apart from its own (see
    /// [`Labels::with_shared_base`]).
    pub fn base(&self) -> Option<&Labels> {
        self.inner.header.header.base.as_ref()
    }

    /// Tells whether both are the same shared label set (not merely equal ones).
    pub fn ptr_eq(a: &Labels, b: &Labels) -> bool {
        std::ptr::eq(a.inner.heap_ptr(), b.inner.heap_ptr())
    }

    /// Tells whether this is the only handle to its label set (no clone of it exists).
    pub fn is_unique(&self) -> bool {
        ThinArc::strong_count(&self.inner) == 1
    }

    /// The address of the shared allocation: equal for clones of one label set, so a batch
    /// can tell them apart from equal sets without comparing bytes.
    pub fn addr(&self) -> usize {
        self.inner.heap_ptr() as usize
    }

    /// Checks that the set names its metric.
    pub fn require_name(self) -> Result<Self, LabelError> {
        if self.has_metric_name() {
            Ok(self)
        } else {
            Err(LabelError::MissingName)
        }
    }

    /// Tells whether the set has a `__name__` label (without decoding any value).
    pub fn has_metric_name(&self) -> bool {
        // The encoder asks this of every series of every request: one bit of the stored
        // hash, set when the set was built (see `NAMED_BIT`).
        self.content_hash() & NAMED_BIT != 0
    }

    /// Returns the value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        let bytes = name.as_bytes();
        match self.own_fields().find(|f| f.name == bytes) {
            Some(f) => std::str::from_utf8(f.value).ok(),
            None => self.base().and_then(|b| b.get(name)),
        }
    }

    /// Returns the metric name, or "" when there is none.
    pub fn metric_name(&self) -> &str {
        self.get(METRIC_NAME_LABEL).unwrap_or("")
    }

    /// Iterates the labels in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { raw: self.fields() }
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.fields().count()
    }

    /// Tells whether the set is empty.
    pub fn is_empty(&self) -> bool {
        // A base is never empty.
        self.own_wire_bytes().is_empty() && self.base().is_none()
    }

    /// Returns a copy with `name` set to `value` (replaced if present, removed if `value` is
    /// empty). `name` must already be valid.
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(self.len() + 1);
        let mut placed = value.is_empty();
        for l in self.iter() {
            match l.name.cmp(name) {
                Ordering::Less => pairs.push((l.name, l.value)),
                Ordering::Equal => {}
                Ordering::Greater => {
                    if !placed {
                        pairs.push((name, value));
                        placed = true;
                    }
                    pairs.push((l.name, l.value));
                }
            }
        }
        if !placed {
            pairs.push((name, value));
        }
        Self::from_sorted(pairs.iter().copied())
    }

    /// Returns a copy without label `name`.
    pub fn without(&self, name: &str) -> Labels {
        Self::from_sorted(
            self.iter()
                .filter(|l| l.name != name)
                .map(|l| (l.name, l.value)),
        )
    }

    /// The set's own labels (all of them when it has no [`Labels::base`]) as remote write
    /// encodes them: a run of `TimeSeries.labels` fields.
    pub fn own_wire_bytes(&self) -> &[u8] {
        match self.inner.header.header.extra.as_deref() {
            Some(Extra::Own(elsewhere)) => elsewhere.inline_bytes(),
            _ => self.inline_bytes(),
        }
    }

    /// The bytes stored in this set's own allocation.
    fn inline_bytes(&self) -> &[u8] {
        &self.inner.slice
    }

    /// The encoded fields of the set's own labels (without its base), in name order.
    pub fn own_fields(&self) -> OwnFields<'_> {
        OwnFields {
            rest: self.own_wire_bytes(),
        }
    }

    /// A hash of the content, fixed for the life of the process and seeded at random, so
    /// exposed series cannot be crafted to collide.
    pub fn content_hash(&self) -> u64 {
        self.inner.header.header.hash
    }

    /// All the labels' fields with their names, in name order, for merging at the byte level.
    pub fn fields(&self) -> Fields<'_> {
        let mut own = self.own_fields();
        let mut base = self.base().map(Labels::own_fields).unwrap_or_default();
        Fields {
            own_next: own.next(),
            base_next: base.next(),
            own,
            base,
        }
    }
}

/// One label field of a [`Labels`] buffer.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    /// The label name's bytes.
    pub name: &'a [u8],
    /// The label value's bytes.
    pub value: &'a [u8],
    /// The whole encoded `TimeSeries.labels` field.
    pub bytes: &'a [u8],
}

/// Iterator over the encoded fields of one buffer of a [`Labels`] (see
/// [`Labels::own_fields`]).
#[derive(Clone, Debug, Default)]
pub struct OwnFields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OwnFields<'a> {
    type Item = Field<'a>;

    #[inline]
    fn next(&mut self) -> Option<Field<'a>> {
        // The encoder walks every series' fields on every request. Nearly every label's
        // name and value are under 128 bytes, so each length is one byte: read those
        // directly, and anything else through the general varint path below.
        let all = self.rest;
        if let [KEY_SERIES_LABEL, msg, KEY_LABEL_NAME, name, ..] = *all {
            let (msg, name) = (usize::from(msg), usize::from(name));
            let end = 2 + msg;
            if msg < 0x80 && name < 0x80 && end <= all.len() {
                if let (Some(&KEY_LABEL_VALUE), Some(&value)) =
                    (all.get(4 + name), all.get(5 + name))
                {
                    if value < 0x80 && 6 + name + usize::from(value) == end {
                        self.rest = &all[end..];
                        return Some(Field {
                            name: &all[4..4 + name],
                            value: &all[6 + name..end],
                            bytes: &all[..end],
                        });
                    }
                }
            }
        }
        self.next_general()
    }
}

impl<'a> OwnFields<'a> {
    /// [`Iterator::next`] for any field: lengths of any size.
    fn next_general(&mut self) -> Option<Field<'a>> {
        // The buffer is only ever written by `from_sorted`, so every read below succeeds;
        // a malformed buffer would end the iteration rather than panic.
        let all = self.rest;
        let (msg, rest) = read_field(all, KEY_SERIES_LABEL)?;
        let (name, after) = read_field(msg, KEY_LABEL_NAME)?;
        let (value, _) = read_field(after, KEY_LABEL_VALUE)?;
        let bytes = all.get(..all.len() - rest.len())?;
        self.rest = rest;
        Some(Field { name, value, bytes })
    }
}

/// Iterator over all the encoded fields of a [`Labels`], its own and its base's merged by
/// name.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    own: OwnFields<'a>,
    base: OwnFields<'a>,
    own_next: Option<Field<'a>>,
    base_next: Option<Field<'a>>,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    #[inline]
    fn next(&mut self) -> Option<Field<'a>> {
        let own_first = match (&self.own_next, &self.base_next) {
            (Some(o), Some(b)) => cmp_names(o.name, b.name).is_lt(),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if own_first {
            std::mem::replace(&mut self.own_next, self.own.next())
        } else {
            std::mem::replace(&mut self.base_next, self.base.next())
        }
    }
}

/// Orders two label names; most differ in their first byte, which settles it without a
/// `memcmp` call.
#[inline]
pub(crate) fn cmp_names(a: &[u8], b: &[u8]) -> Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Iterator over the labels of a [`Labels`], in name order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    raw: Fields<'a>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = LabelRef<'a>;

    fn next(&mut self) -> Option<LabelRef<'a>> {
        let f = self.raw.next()?;
        // Written from `&str`s and split at their boundaries, so both are UTF-8.
        Some(LabelRef {
            name: std::str::from_utf8(f.name).ok()?,
            value: std::str::from_utf8(f.value).ok()?,
        })
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = LabelRef<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Labels) -> bool {
        // Interned sets usually meet themselves: the address settles it without a memcmp.
        if Labels::ptr_eq(self, other) {
            return true;
        }
        if self.content_hash() != other.content_hash() {
            return false;
        }
        match (self.base(), other.base()) {
            (None, None) => self.own_wire_bytes() == other.own_wire_bytes(),
            (Some(a), Some(b)) if Labels::ptr_eq(a, b) => {
                self.own_wire_bytes() == other.own_wire_bytes()
            }
            // Stored apart differently (a set read back from disk against a live one):
            // field by field, whose bytes are the same for the same label.
            _ => self
                .fields()
                .map(|f| f.bytes)
                .eq(other.fields().map(|f| f.bytes)),
        }
    }
}

impl Eq for Labels {}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.content_hash());
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Labels) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    /// Label by label, name then value: the order a sorted list of pairs has.
    fn cmp(&self, other: &Labels) -> Ordering {
        self.fields()
            .map(|f| (f.name, f.value))
            .cmp(other.fields().map(|f| (f.name, f.value)))
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|l| (l.name, l.value)))
            .finish()
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric_name())?;
        f.write_str("{")?;
        let mut first = true;
        for l in self.iter().filter(|l| l.name != METRIC_NAME_LABEL) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}={:?}", l.name, l.value)?;
        }
        f.write_str("}")
    }
}

/// Size of a `Label` message with these (non-empty) strings.
fn label_msg_len(name: &str, value: &str) -> usize {
    field_len(name.len()) + field_len(value.len())
}

/// Size of a length-delimited field (one-byte key) with a `len`-byte payload.
pub(crate) fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Bytes a varint of `v` takes.
pub(crate) fn varint_len(v: u64) -> usize {
    // 7 bits per byte; `| 1` makes 0 take one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a protobuf varint.
#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_string(buf: &mut Vec<u8>, key: u8, s: &str) {
    buf.push(key);
    put_varint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

/// Reads a varint; `None` if it runs off the end or past 10 bytes.
#[inline]
fn read_varint(b: &[u8]) -> Option<(u64, &[u8])> {
    // Label names and values are nearly always under 128 bytes: a one-byte length.
    if let Some((&first, rest)) = b.split_first() {
        if first < 0x80 {
            return Some((u64::from(first), rest));
        }
    }
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v, b.get(i + 1..)?));
        }
    }
    None
}

/// Reads a length-delimited field with key `key`: its payload and what follows.
#[inline]
fn read_field(b: &[u8], key: u8) -> Option<(&[u8], &[u8])> {
    let (&k, b) = b.split_first()?;
    if k != key {
        return None;
    }
    let (len, b) = read_varint(b)?;
    let len = usize::try_from(len).ok()?;
    if len > b.len() {
        return None;
    }
    Some(b.split_at(len))
}

/// The bit of a label set's stored hash that says whether the whole set (its base
/// included) has `__name__`. A set's content decides it, as it decides the rest of the hash,
/// so equal sets still hash equally. Bit 56: below the top seven bits that hash tables keep
/// as tags, and far above any bucket index they take from the low bits.
const NAMED_BIT: u64 = 1 << 56;

/// `hash` with [`NAMED_BIT`] set to `named`.
fn with_named_bit(hash: u64, named: bool) -> u64 {
    (hash & !NAMED_BIT) | if named { NAMED_BIT } else { 0 }
}

/// The per-process hash seeds, random so that no input can be built to collide on purpose.
fn seeds() -> [u64; 2] {
    static SEEDS: OnceLock<[u64; 2]> = OnceLock::new();
    *SEEDS.get_or_init(|| {
        let state = std::collections::hash_map::RandomState::new();
        [state.hash_one(1u64), state.hash_one(2u64)]
    })
}

/// The seed of [`Labels`]' stored hashes.
fn seed() -> u64 {
    seeds()[0]
}

/// A 128-bit fingerprint of `bytes`: two independently seeded hashes, for keys that stand in
/// for the bytes themselves (see `scrape::SeriesCache`). Both come from one pass over the
/// bytes: the parser fingerprints every sample's series text.
pub fn fingerprint(bytes: &[u8]) -> u128 {
    let [a, b] = hash_lanes(seeds(), bytes);
    u128::from(a) << 64 | u128::from(b)
}

/// A seeded 64-bit hash of `bytes`, for tables keyed by a text that keep the text itself.
pub fn seeded_hash(bytes: &[u8]) -> u64 {
    hash_bytes(seed(), bytes)
}

/// A [`Hasher`] for keys that already are seeded hashes (a [`Labels`]' stored hash, a
/// [`fingerprint`]): it passes them through rather than hashing them a second time.
///
/// Only for such keys: anything else (pointers, small integers) would cluster.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not reached by the intended keys; mix anyway so that misuse is slow, not wrong.
        self.0 = hash_bytes(self.0 ^ seed(), bytes);
    }

    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }

    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Builds [`PassThroughHasher`]s, for `HashMap`s keyed by label sets or fingerprints.
pub type PassThrough = std::hash::BuildHasherDefault<PassThroughHasher>;

const HASH_K0: u64 = 0x243f_6a88_85a3_08d3;
const HASH_K1: u64 = 0x1319_8a2e_0370_7344;
const HASH_K2: u64 = 0xa409_3822_299f_31d0;

/// Multiplies to 128 bits and folds the halves together (the mixing step of foldhash).
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Reads 8 bytes little-endian from the start of `b` (at least 8 long).
#[inline]
fn read8(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// Reads 4 bytes little-endian from the start of `b` (at least 4 long).
#[inline]
fn read4(b: &[u8]) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u64::from(u32::from_le_bytes(w))
}

/// Two words covering a tail of at most 16 bytes, with overlapping fixed-size reads: a
/// variable-length copy into a word would stall on store forwarding, and the length was
/// already mixed in, so the overlap loses nothing.
#[inline]
fn read_tail(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    if n >= 8 {
        (read8(b), read8(&b[n - 8..]))
    } else if n >= 4 {
        (read4(b), read4(&b[n - 4..]))
    } else if n > 0 {
        (
            u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16,
            0,
        )
    } else {
        (0, 0)
    }
}

/// Hashes `bytes` (and their length) from `seed`, a folded 64×64→128-bit multiply per 16
/// bytes: every new label set is hashed once, so a byte-serial hash would cost more than
/// building the set.
#[inline]
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let [h] = hash_lanes([seed], bytes);
    h
}

/// [`hash_bytes`] from each of `seeds`, in one pass over `bytes`.
#[inline]
fn hash_lanes<const N: usize>(seeds: [u64; N], bytes: &[u8]) -> [u64; N] {
    let mut h = seeds.map(|seed| folded_multiply(seed ^ bytes.len() as u64, HASH_K0));
    let mut chunks = bytes.chunks_exact(16);
    for c in &mut chunks {
        let (a, b) = (read8(c) ^ HASH_K1, read8(&c[8..]) ^ HASH_K2);
        for h in &mut h {
            *h = folded_multiply(*h ^ a, b);
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let (a, b) = read_tail(rest);
        for h in &mut h {
            *h = folded_multiply(*h ^ a ^ HASH_K1, b ^ HASH_K2);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto;

    #[test]
    fn a_fingerprint_is_two_independently_seeded_hashes() {
        let [a, b] = seeds();
        let text = "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} and some more bytes";
        for n in 0..=text.len() {
            let bytes = &text.as_bytes()[..n];
            let want = u128::from(hash_bytes(a, bytes)) << 64 | u128::from(hash_bytes(b, bytes));
            assert_eq!(fingerprint(bytes), want, "{n} bytes");
        }
        assert_eq!(seeded_hash(b"up"), hash_bytes(a, b"up"));
    }

    #[test]
    fn a_label_set_is_one_pointer_and_clones_share_it() {
        // A scrape target keeps one per series, and every sample carries one.
        assert_eq!(std::mem::size_of::<Labels>(), 8);
        assert_eq!(std::mem::size_of::<Option<Labels>>(), 8);
        assert_eq!(std::mem::size_of::<crate::series::Sample>(), 24);

        let a = Labels::with_name("up", [("job", "a")]).unwrap();
        let shared = a.clone();
        let apart = Labels::with_name("up", [("job", "a")]).unwrap();
        assert!(Labels::ptr_eq(&a, &shared));
        assert_eq!(a.addr(), shared.addr());
        assert!(!Labels::ptr_eq(&a, &apart));
        assert_ne!(a.addr(), apart.addr());
        assert_eq!(a, apart);
        assert_eq!(a.content_hash(), apart.content_hash());
        assert_eq!(Labels::default().own_wire_bytes(), b"");
        assert!(Labels::default().is_empty());
    }

    #[test]
    fn fields_read_back_on_both_sides_of_one_byte_lengths() {
        // Names and values whose lengths, or whose label's length, need a second varint byte.
        for name_len in [1, 60, 125, 126, 127, 128, 200] {
            for value_len in [1, 60, 121, 122, 123, 127, 128, 300] {
                let name = "n".repeat(name_len);
                let value = "v".repeat(value_len);
                let l = Labels::from_pairs([("__name__", "up"), (name.as_str(), value.as_str())])
                    .unwrap();
                let pairs: Vec<(&str, &str)> = l.iter().map(|l| (l.name, l.value)).collect();
                assert_eq!(pairs, [("__name__", "up"), (name.as_str(), value.as_str())]);
                let bytes: usize = l.own_fields().map(|f| f.bytes.len()).sum();
                assert_eq!(bytes, l.own_wire_bytes().len(), "{name_len} {value_len}");
            }
        }
    }

    #[test]
    fn buffer_is_the_prost_encoding_of_the_labels() {
        let long = "v".repeat(300);
        let l =
            Labels::from_pairs([("__name__", "up"), ("job", long.as_str()), ("a", "1")]).unwrap();
        let ts = proto::TimeSeries {
            labels: l
                .iter()
                .map(|l| proto::Label {
                    name: l.name.into(),
                    value: l.value.into(),
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(l.own_wire_bytes(), ts.encode_to_vec().as_slice());
        let names: Vec<&str> = l.iter().map(|l| l.name).collect();
        assert_eq!(names, ["__name__", "a", "job"]);
        assert_eq!(l.get("job"), Some(long.as_str()));
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn whether_a_set_names_its_metric_is_known_however_it_is_stored() {
        let pairs = |p: &[(&str, &str)]| Labels::from_pairs(p.iter().copied()).unwrap();
        // Names that sort before `__name__` (upper case), and one just after it.
        let named = pairs(&[("A", "1"), ("__name__", "up"), ("_a", "2"), ("job", "j")]);
        let unnamed = pairs(&[("A", "1"), ("_a", "2"), ("job", "j")]);
        assert!(named.has_metric_name());
        assert!(!unnamed.has_metric_name());
        assert!(!Labels::default().has_metric_name());
        // The name in the set's own labels beside a base, then only in its base.
        let base = pairs(&[("__name__", "up"), ("job", "j")]);
        let split = named.with_shared_base(&pairs(&[("A", "1"), ("job", "j")]));
        assert!(split.base().is_some());
        assert!(split.has_metric_name());
        let in_base =
            pairs(&[("__name__", "up"), ("job", "j"), ("x", "1")]).with_shared_base(&base);
        assert!(in_base.base().is_some() && in_base.has_metric_name());
        let unnamed_split = unnamed.with_shared_base(&pairs(&[("job", "j")]));
        assert!(unnamed_split.base().is_some() && !unnamed_split.has_metric_name());
        // The flag is part of the content, so equal sets still hash equally.
        assert_eq!(split.content_hash(), named.content_hash());
        assert_ne!(
            named.content_hash() & NAMED_BIT,
            unnamed.content_hash() & NAMED_BIT
        );
        assert!(named.with("zz", "1").has_metric_name());
        assert!(!named.without("__name__").has_metric_name());
    }

    #[test]
    fn order_is_pairwise_by_name_then_value() {
        let a = Labels::from_pairs([("a", "1"), ("b", "2")]).unwrap();
        let b = Labels::from_pairs([("a", "1"), ("c", "0")]).unwrap();
        let c = Labels::from_pairs([("a", "10")]).unwrap();
        let short = Labels::from_pairs([("a", "1")]).unwrap();
        assert!(short < a && a < b && b < c);
        assert_eq!(a.cmp(&a.clone()), Ordering::Equal);
    }

    #[test]
    fn equal_content_means_equal_hash() {
        let a = Labels::from_pairs([("x", "1"), ("y", "2")]).unwrap();
        let b = Labels::from_pairs([("y", "2"), ("x", "1")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.content_hash(), b.content_hash());
        assert_ne!(
            a.content_hash(),
            Labels::from_pairs([("x", "12")]).unwrap().content_hash()
        );
    }

    #[test]
    fn varint_len_matches_prost() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            assert_eq!(varint_len(v), prost::encoding::encoded_len_varint(v), "{v}");
            let mut a = Vec::new();
            put_varint(&mut a, v);
            let mut b = Vec::new();
            prost::encoding::encode_varint(v, &mut b);
            assert_eq!(a, b);
            assert_eq!(read_varint(&a).map(|(x, _)| x), Some(v));
        }
    }

    #[test]
    fn malformed_buffers_end_iteration_without_panicking() {
        for bytes in [
            &[0x0a, 0xff][..],
            &[0x0a, 0x05, 0x0a],
            &[0x12],
            &[0x0a, 0x80],
        ] {
            let f = OwnFields { rest: bytes };
            assert_eq!(f.count(), 0);
        }
    }

    /// Every view of `split` matches the flat set `flat` it stands for.
    fn assert_same_set(split: &Labels, flat: &Labels) {
        assert_eq!(split, flat);
        assert_eq!(flat, split);
        assert_eq!(split.cmp(flat), Ordering::Equal);
        assert_eq!(split.content_hash(), flat.content_hash());
        let pairs = |l: &Labels| -> Vec<(String, String)> {
            l.iter()
                .map(|l| (l.name.to_string(), l.value.to_string()))
                .collect()
        };
        assert_eq!(pairs(split), pairs(flat));
        let bytes: Vec<u8> = split.fields().flat_map(|f| f.bytes.to_vec()).collect();
        assert_eq!(bytes, flat.own_wire_bytes());
        assert_eq!(split.len(), flat.len());
        assert_eq!(split.is_empty(), flat.is_empty());
        assert_eq!(split.has_metric_name(), flat.has_metric_name());
        assert_eq!(split.to_string(), flat.to_string());
        for l in flat.iter() {
            assert_eq!(split.get(l.name), Some(l.value));
        }
        assert_eq!(split.get("absent"), None);
    }

    #[test]
    fn a_shared_base_keeps_the_set_whole_and_stores_less() {
        let target = Labels::from_pairs([("instance", "10.0.0.7:9100"), ("job", "node")]).unwrap();
        let flat = Labels::with_name(
            "node_cpu_seconds_total",
            [
                ("cpu", "0"),
                ("instance", "10.0.0.7:9100"),
                ("job", "node"),
                ("mode", "idle"),
            ],
        )
        .unwrap();
        let split = flat.with_shared_base(&target);
        assert!(split.base().is_some_and(|b| Labels::ptr_eq(b, &target)));
        assert_eq!(
            split.own_wire_bytes().len() + target.own_wire_bytes().len(),
            flat.own_wire_bytes().len()
        );
        assert_same_set(&split, &flat);
        // Two series of one target compare by their own bytes; a set read back flat from
        // disk still meets the live one in a map.
        let again = flat.with_shared_base(&target);
        assert_eq!(split, again);
        let mut map = std::collections::HashMap::new();
        map.insert(flat.clone(), 1);
        assert_eq!(map.get(&split), Some(&1));
        // Derived sets come out flat and whole.
        let with = split.with("mode", "user");
        assert!(with.base().is_none());
        assert_eq!(with.get("job"), Some("node"));
        assert_eq!(split.without("job").get("job"), None);
        assert_eq!(split.without("job").get("instance"), Some("10.0.0.7:9100"));
        // Sharing a whole set leaves the own part empty but the set not.
        let whole = target.with_shared_base(&target);
        assert_same_set(&whole, &target);
    }

    #[test]
    fn own_labels_kept_in_another_targets_set_keep_the_set_whole() {
        let series = |instance: &str| {
            let target = Labels::from_pairs([("instance", instance), ("job", "node")]).unwrap();
            let flat = Labels::with_name(
                "node_cpu_seconds_total",
                [
                    ("cpu", "0"),
                    ("instance", instance),
                    ("job", "node"),
                    ("mode", "idle"),
                ],
            )
            .unwrap();
            let base = target.with(METRIC_NAME_LABEL, "node_cpu_seconds_total");
            (flat.with_shared_base(&base), flat)
        };
        let (a, _) = series("10.0.0.7:9100");
        let (b_split, b_flat) = series("10.0.0.8:9100");
        let own = a.share_own();
        assert_eq!(own.own_wire_bytes(), a.own_wire_bytes());
        let b = b_split.with_own_in(&own);
        assert!(b.own_is_shared() && !b_split.own_is_shared());
        assert!(Labels::ptr_eq(b.base().unwrap(), b_split.base().unwrap()));
        assert_same_set(&b, &b_flat);
        assert_eq!(b, b_split);
        assert_eq!(b.content_hash(), b_split.content_hash());
        assert_ne!(a, b);
        // A set that shares hands out the same storage rather than a link to a link.
        let (c_split, c_flat) = series("10.0.0.9:9100");
        let c = c_split.with_own_in(&b.share_own());
        assert_same_set(&c, &c_flat);
        assert!(!own.is_unused());
        drop((b, c));
        assert!(own.is_unused());
        // Other own labels, or a histogram's copy, are not stored there.
        let other = Labels::with_name("node_load1", [("job", "node")]).unwrap();
        assert!(!other.with_own_in(&own).own_is_shared());
        let h = Arc::new(NativeHistogram::default());
        let with_h = b_split.with_histogram(h.clone());
        assert!(!with_h.with_own_in(&own).own_is_shared());
        // A shared set's histogram copy keeps the labels and carries the histogram.
        let d = b_split.with_own_in(&own).with_histogram(h.clone());
        assert!(d.histogram().is_some_and(|x| Arc::ptr_eq(x, &h)));
        assert_same_set(&d, &b_flat);
    }

    #[test]
    fn a_base_is_shared_only_when_every_label_matches() {
        let target = Labels::from_pairs([("instance", "a:1"), ("job", "node")]).unwrap();
        for flat in [
            // `job` was relabeled.
            Labels::with_name("up", [("instance", "a:1"), ("job", "other")]).unwrap(),
            // `instance` was dropped.
            Labels::with_name("up", [("job", "node")]).unwrap(),
        ] {
            let kept = flat.with_shared_base(&target);
            assert!(kept.base().is_none(), "{flat}");
            assert!(Labels::ptr_eq(&kept, &flat));
        }
        let flat = Labels::with_name("up", [("instance", "a:1"), ("job", "node")]).unwrap();
        // No base from an empty set, and none nested.
        assert!(flat.with_shared_base(&Labels::default()).base().is_none());
        let split = flat.with_shared_base(&target);
        let inner = Labels::from_pairs([("job", "node")]).unwrap();
        let nested_base = inner.with_shared_base(&Labels::from_pairs([("job", "node")]).unwrap());
        assert!(split.with_shared_base(&target).base().is_some());
        assert!(flat.with_shared_base(&nested_base).base().is_none());
    }

    proptest::proptest! {
        #[test]
        fn any_shared_base_is_the_same_set(
            pairs in proptest::collection::btree_map("[a-d_]{1,3}", "[x-z]{0,2}", 0..8),
            picks in proptest::collection::vec(proptest::bool::ANY, 8),
        ) {
            let flat = Labels::from_pairs(pairs.iter()).unwrap();
            let base = Labels::from_pairs(
                flat.iter()
                    .zip(&picks)
                    .filter(|(_, &pick)| pick)
                    .map(|(l, _)| (l.name, l.value)),
            )
            .unwrap();
            let split = flat.with_shared_base(&base);
            proptest::prop_assert_eq!(split.base().is_some(), !base.is_empty());
            assert_same_set(&split, &flat);
            // Against another split of the same set with another (equal) base, and a set
            // that differs.
            let other = flat.with_shared_base(&Labels::from_pairs(base.iter().map(|l| (l.name, l.value))).unwrap());
            proptest::prop_assert_eq!(&split, &other);
            let different = flat.with("zz", "1");
            proptest::prop_assert_ne!(&split, &different);
            proptest::prop_assert_eq!(split.cmp(&different), flat.cmp(&different));
        }
    }
}
