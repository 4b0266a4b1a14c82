//! Model prices and what a probe's tokens cost: pure functions over a validated table.
//!
//! A model name is priced by exactly one entry, chosen without guessing:
//! 1. an entry whose name equals the model (exact);
//! 2. else an entry listing the model as a literal alias;
//! 3. else entries with a glob alias (`*` any run of characters, `?` one character) matching
//!    the model; the most specific wins: the pattern with the most literal (non-wildcard)
//!    characters, then the fewest `*`, then the alphabetically first pattern, so the choice
//!    never depends on the order of the file.
//!
//! There is no substring or prefix matching: `gpt-4.1` does not price `gpt-4.1-mini`. A model
//! no entry matches is unpriced; its tokens are still counted but it has no cost.

use std::collections::BTreeMap;

/// Tokens per price unit: prices are in dollars per million tokens.
pub const TOKENS_PER_PRICE_UNIT: f64 = 1e6;

/// Prices of one model, in dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Price of prompt tokens not served from the provider's cache.
    pub input_per_mtok: f64,
    /// Price of completion tokens.
    pub output_per_mtok: f64,
    /// Price of prompt tokens served from cache; `None` bills them as ordinary input.
    pub cached_input_per_mtok: Option<f64>,
    /// Price of prompt tokens written to the cache (Anthropic's cache writes); `None` bills
    /// them as ordinary input.
    pub cache_write_per_mtok: Option<f64>,
    /// Price of prompt tokens read from the cache; `None` falls back to
    /// `cached_input_per_mtok`, then to the input price. The same tokens as the cached input
    /// of OpenAI-style usage, under Anthropic's name.
    pub cache_read_per_mtok: Option<f64>,
}

/// Token counts of one response, as its `usage` object reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// `prompt_tokens`: every input token, cached ones included.
    pub prompt_tokens: u64,
    /// `completion_tokens`.
    pub completion_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`: the part of `prompt_tokens` read from cache.
    pub cached_tokens: u64,
    /// The part of `prompt_tokens` written to the cache (Anthropic's
    /// `cache_creation_input_tokens`); 0 where the API does not report it.
    pub cache_write_tokens: u64,
}

/// The most tokens of one kind a single request can plausibly report: 2^24 (about 16.8 M),
/// above the largest context window any model offers. A count beyond it is a broken or hostile
/// server; counted as it is, one such answer would swamp every later real increment of a
/// counter (an f64 stops changing by small steps past 2^53) and book absurd costs.
pub const MAX_PLAUSIBLE_TOKENS: u64 = 1 << 24;

impl Usage {
    /// Whether every count is within [`MAX_PLAUSIBLE_TOKENS`]; an implausible usage is neither
    /// counted nor priced.
    pub fn is_plausible(&self) -> bool {
        [
            self.prompt_tokens,
            self.completion_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
        ]
        .iter()
        .all(|&n| n <= MAX_PLAUSIBLE_TOKENS)
    }

    /// Input tokens billed at the full input price (the cache reads and writes removed).
    pub fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.billable_cached_tokens())
            .saturating_sub(self.billable_cache_write_tokens())
    }

    /// Cached tokens, never more than the prompt (a server may report nonsense).
    pub fn billable_cached_tokens(&self) -> u64 {
        self.cached_tokens.min(self.prompt_tokens)
    }

    /// Cache-write tokens, never more than the prompt left after the cache reads, so no token
    /// is billed twice whatever a server reports.
    pub fn billable_cache_write_tokens(&self) -> u64 {
        self.cache_write_tokens.min(
            self.prompt_tokens
                .saturating_sub(self.billable_cached_tokens()),
        )
    }
}

/// Dollars `usage` costs at `price`: each kind of token times its price over a million, summed,
/// with no rounding. Cache reads cost `cache_read_per_mtok`, else `cached_input_per_mtok`,
/// else the input price; cache writes cost `cache_write_per_mtok`, else the input price.
pub fn cost(usage: &Usage, price: &Price) -> f64 {
    let read_price = price
        .cache_read_per_mtok
        .or(price.cached_input_per_mtok)
        .unwrap_or(price.input_per_mtok);
    let write_price = price.cache_write_per_mtok.unwrap_or(price.input_per_mtok);
    usage.uncached_prompt_tokens() as f64 * price.input_per_mtok / TOKENS_PER_PRICE_UNIT
        + usage.billable_cached_tokens() as f64 * read_price / TOKENS_PER_PRICE_UNIT
        + usage.billable_cache_write_tokens() as f64 * write_price / TOKENS_PER_PRICE_UNIT
        + usage.completion_tokens as f64 * price.output_per_mtok / TOKENS_PER_PRICE_UNIT
}

/// How a model name matched a price entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchKind {
    /// The entry's own name.
    Exact,
    /// A literal alias of the entry.
    Alias,
    /// A glob alias of the entry.
    Glob,
}

/// The entry that prices a model.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceMatch<'a> {
    /// The entry's name (the `[pricing."NAME"]` key).
    pub entry: &'a str,
    /// How it matched.
    pub kind: MatchKind,
    /// Its prices.
    pub price: Price,
}

/// Why a price table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// A price is negative, NaN or infinite.
    #[error("{field} must be a finite number >= 0")]
    BadPrice {
        /// The offending field.
        field: &'static str,
    },
    /// An entry name contains glob characters.
    #[error("entry names are literal model names; put patterns such as {0:?} in aliases")]
    GlobName(String),
    /// An alias is empty.
    #[error("aliases must not be empty")]
    EmptyAlias,
    /// Two entries claim the same literal name or pattern.
    #[error("{name:?} is claimed by both {first:?} and {second:?}; keep it in one entry")]
    Ambiguous {
        /// The name or pattern.
        name: String,
        /// One entry.
        first: String,
        /// The other entry.
        second: String,
    },
}

#[derive(Debug, Clone)]
struct Glob {
    pattern: String,
    literal_len: usize,
    stars: usize,
    entry: String,
}

/// A validated price table.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
    /// Literal aliases to entry names.
    aliases: BTreeMap<String, String>,
    /// Glob aliases, most specific first.
    globs: Vec<Glob>,
}

/// Tells whether `text` holds glob wildcards.
pub fn is_glob(text: &str) -> bool {
    text.contains(['*', '?'])
}

/// Matches `text` against a glob where `*` is any run of characters (also none) and `?` is
/// exactly one character; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and which text position it is currently made to cover up to:
    // on a mismatch the star swallows one more character (linear backtracking, no recursion).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn check_price(field: &'static str, v: f64) -> Result<f64, PricingError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(PricingError::BadPrice { field })
    }
}

impl PriceTable {
    /// Builds a table from `(name, price, aliases)` entries, refusing bad prices and names
    /// or patterns claimed by two entries. Errors come with the entry name they concern.
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a str, Price, &'a [String])>,
    ) -> Result<PriceTable, Vec<(String, PricingError)>> {
        let mut table = PriceTable::default();
        let mut errors = Vec::new();
        // Every name and pattern, to the entry that claims it, to catch ambiguity.
        let mut claimed: BTreeMap<String, String> = BTreeMap::new();
        let mut claim = |name: &str, entry: &str, errors: &mut Vec<(String, PricingError)>| {
            if let Some(first) = claimed.get(name) {
                if first != entry {
                    errors.push((
                        entry.to_string(),
                        PricingError::Ambiguous {
                            name: name.to_string(),
                            first: first.clone(),
                            second: entry.to_string(),
                        },
                    ));
                }
                false
            } else {
                claimed.insert(name.to_string(), entry.to_string());
                true
            }
        };
        for (name, price, aliases) in entries {
            let checked = check_price("input_per_mtok", price.input_per_mtok)
                .and_then(|_| check_price("output_per_mtok", price.output_per_mtok))
                .and_then(|_| {
                    [
                        ("cached_input_per_mtok", price.cached_input_per_mtok),
                        ("cache_write_per_mtok", price.cache_write_per_mtok),
                        ("cache_read_per_mtok", price.cache_read_per_mtok),
                    ]
                    .into_iter()
                    .try_for_each(|(field, v)| match v {
                        Some(v) => check_price(field, v).map(|_| ()),
                        None => Ok(()),
                    })
                });
            if let Err(e) = checked {
                errors.push((name.to_string(), e));
            }
            if is_glob(name) {
                errors.push((name.to_string(), PricingError::GlobName(name.to_string())));
            }
            if claim(name, name, &mut errors) {
                table.prices.insert(name.to_string(), price);
            }
            for alias in aliases {
                if alias.is_empty() {
                    errors.push((name.to_string(), PricingError::EmptyAlias));
                } else if !claim(alias, name, &mut errors) {
                    // Already reported, or the same entry listing an alias twice.
                } else if is_glob(alias) {
                    table.globs.push(Glob {
                        pattern: alias.clone(),
                        literal_len: alias.chars().filter(|c| !matches!(c, '*' | '?')).count(),
                        stars: alias.chars().filter(|c| *c == '*').count(),
                        entry: name.to_string(),
                    });
                } else {
                    table.aliases.insert(alias.clone(), name.to_string());
                }
            }
        }
        table.globs.sort_by(|a, b| {
            b.literal_len
                .cmp(&a.literal_len)
                .then(a.stars.cmp(&b.stars))
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// Tells whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Finds the entry pricing `model`, by the rules in the module documentation.
    pub fn lookup(&self, model: &str) -> Option<PriceMatch<'_>> {
        let found = |entry: &str, kind| {
            self.prices
                .get_key_value(entry)
                .map(|(entry, price)| PriceMatch {
                    entry: entry.as_str(),
                    kind,
                    price: *price,
                })
        };
        if let Some(m) = found(model, MatchKind::Exact) {
            return Some(m);
        }
        if let Some(entry) = self.aliases.get(model) {
            return found(entry, MatchKind::Alias);
        }
        self.globs
            .iter()
            .find(|g| glob_match(&g.pattern, model))
            .and_then(|g| found(&g.entry, MatchKind::Glob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(input: f64, output: f64) -> Price {
        Price {
            input_per_mtok: input,
            output_per_mtok: output,
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
            cache_read_per_mtok: None,
        }
    }

    fn table(
        entries: &[(&str, Price, &[&str])],
    ) -> Result<PriceTable, Vec<(String, PricingError)>> {
        let owned: Vec<(&str, Price, Vec<String>)> = entries
            .iter()
            .map(|(n, p, a)| (*n, *p, a.iter().map(|s| s.to_string()).collect()))
            .collect();
        PriceTable::new(owned.iter().map(|(n, p, a)| (*n, *p, a.as_slice())))
    }

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob_match("deepseek-v3.2-*", "deepseek-v3.2-exp"));
        assert!(glob_match("deepseek-v3.2-*", "deepseek-v3.2-"));
        assert!(!glob_match("deepseek-v3.2-*", "deepseek-v3.2"));
        assert!(glob_match("gpt-4?", "gpt-4o"));
        assert!(!glob_match("gpt-4?", "gpt-4"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYbZc"));
        assert!(!glob_match("a*b*c", "aXXbYbZ"));
        assert!(glob_match("*-mini", "gpt-4.1-mini"));
        assert!(glob_match("ü?", "üx"));
        assert!(!glob_match("abc", "abcd"));
    }

    #[test]
    fn exact_beats_alias_beats_glob() {
        let t = table(&[
            ("gpt-4.1", p(2.0, 8.0), &["gpt-4.1-*"]),
            ("gpt-4.1-mini", p(0.4, 1.6), &["mini-latest"]),
            ("other", p(1.0, 1.0), &["gpt-4.1-mini-2025"]),
        ])
        .unwrap();
        let m = t.lookup("gpt-4.1-mini").unwrap();
        assert_eq!((m.entry, m.kind), ("gpt-4.1-mini", MatchKind::Exact));
        let m = t.lookup("mini-latest").unwrap();
        assert_eq!((m.entry, m.kind), ("gpt-4.1-mini", MatchKind::Alias));
        // A literal alias wins over a glob that also matches.
        let m = t.lookup("gpt-4.1-mini-2025").unwrap();
        assert_eq!((m.entry, m.kind), ("other", MatchKind::Alias));
        let m = t.lookup("gpt-4.1-2025-04-14").unwrap();
        assert_eq!((m.entry, m.kind), ("gpt-4.1", MatchKind::Glob));
    }

    #[test]
    fn no_substring_guessing() {
        let t = table(&[("gpt-4.1", p(2.0, 8.0), &[])]).unwrap();
        assert!(t.lookup("gpt-4.1-mini").is_none());
        assert!(t.lookup("gpt-4").is_none());
        assert!(t.lookup("GPT-4.1").is_none());
        assert!(t.lookup("gpt-4.1").is_some());
    }

    #[test]
    fn most_specific_glob_wins_whatever_the_order() {
        let entries: [(&str, Price, &[&str]); 3] = [
            ("any-gpt", p(9.0, 9.0), &["gpt-*"]),
            ("gpt-4o", p(2.5, 10.0), &["gpt-4o-*"]),
            ("gpt-4o-mini", p(0.15, 0.6), &["gpt-4o-mini-*"]),
        ];
        let mut reversed = entries;
        reversed.reverse();
        for t in [table(&entries).unwrap(), table(&reversed).unwrap()] {
            assert_eq!(
                t.lookup("gpt-4o-mini-2024-07-18").unwrap().entry,
                "gpt-4o-mini"
            );
            assert_eq!(t.lookup("gpt-4o-2024-08-06").unwrap().entry, "gpt-4o");
            assert_eq!(t.lookup("gpt-3.5-turbo").unwrap().entry, "any-gpt");
        }
        // Equal literal length: fewer stars, then the alphabetically first pattern.
        let t = table(&[("b", p(1.0, 1.0), &["x*y*"]), ("a", p(2.0, 2.0), &["x*yz"])]).unwrap();
        assert_eq!(t.lookup("xAyz").unwrap().entry, "a");
        let t = table(&[("b", p(1.0, 1.0), &["ab?*"]), ("a", p(2.0, 2.0), &["?bc*"])]).unwrap();
        assert_eq!(t.lookup("abcd").unwrap().entry, "a");
    }

    #[test]
    fn bad_tables_are_refused() {
        let e = table(&[("a", p(-1.0, 1.0), &[])]).unwrap_err();
        assert_eq!(
            e[0].1,
            PricingError::BadPrice {
                field: "input_per_mtok"
            }
        );
        let e = table(&[("a", p(1.0, f64::NAN), &[])]).unwrap_err();
        assert_eq!(
            e[0].1,
            PricingError::BadPrice {
                field: "output_per_mtok"
            }
        );
        let e = table(&[("a", p(1.0, 1.0), &["x"]), ("b", p(1.0, 1.0), &["x"])]).unwrap_err();
        assert!(matches!(e[0].1, PricingError::Ambiguous { .. }), "{e:?}");
        let e = table(&[("a", p(1.0, 1.0), &[]), ("b", p(1.0, 1.0), &["a"])]).unwrap_err();
        assert!(matches!(e[0].1, PricingError::Ambiguous { .. }), "{e:?}");
        let e = table(&[("gpt-*", p(1.0, 1.0), &[])]).unwrap_err();
        assert!(matches!(e[0].1, PricingError::GlobName(_)));
        let e = table(&[("a", p(1.0, 1.0), &[""])]).unwrap_err();
        assert_eq!(e[0].1, PricingError::EmptyAlias);
    }

    #[test]
    fn cost_is_tokens_times_price_without_rounding() {
        let price = Price {
            input_per_mtok: 0.42,
            output_per_mtok: 1.12,
            cached_input_per_mtok: Some(0.07),
            cache_write_per_mtok: None,
            cache_read_per_mtok: None,
        };
        let u = Usage {
            prompt_tokens: 12,
            completion_tokens: 5,
            cached_tokens: 4,
            cache_write_tokens: 0,
        };
        let expected = 8.0 * 0.42 / 1e6 + 4.0 * 0.07 / 1e6 + 5.0 * 1.12 / 1e6;
        assert_eq!(cost(&u, &price), expected);
        // Exactly representable values give an exact result.
        let price = Price {
            input_per_mtok: 0.5,
            output_per_mtok: 2.0,
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
            cache_read_per_mtok: None,
        };
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            cached_tokens: 250_000,
            cache_write_tokens: 0,
        };
        assert_eq!(cost(&u, &price), 1.5);
        // Cached tokens beyond the prompt are not billed twice.
        let u = Usage {
            prompt_tokens: 2,
            completion_tokens: 0,
            cached_tokens: 10,
            cache_write_tokens: 0,
        };
        assert_eq!(u.uncached_prompt_tokens(), 0);
        assert_eq!(cost(&u, &price), 2.0 * 0.5 / 1e6);
    }

    #[test]
    fn cache_writes_and_reads_have_their_own_prices_with_documented_fallbacks() {
        // Anthropic-style usage: 100 fresh input, 1000 written to cache, 4000 read from it.
        let u = Usage {
            prompt_tokens: 5100,
            completion_tokens: 10,
            cached_tokens: 4000,
            cache_write_tokens: 1000,
        };
        assert_eq!(u.uncached_prompt_tokens(), 100);
        let mut price = Price {
            input_per_mtok: 4.0,
            output_per_mtok: 16.0,
            cached_input_per_mtok: Some(2.0),
            cache_write_per_mtok: Some(8.0),
            cache_read_per_mtok: Some(0.5),
        };
        let expected =
            100.0 * 4.0 / 1e6 + 4000.0 * 0.5 / 1e6 + 1000.0 * 8.0 / 1e6 + 10.0 * 16.0 / 1e6;
        assert_eq!(cost(&u, &price), expected);
        // No cache_read price: the OpenAI-style cached price, then the input price.
        price.cache_read_per_mtok = None;
        let expected =
            100.0 * 4.0 / 1e6 + 4000.0 * 2.0 / 1e6 + 1000.0 * 8.0 / 1e6 + 10.0 * 16.0 / 1e6;
        assert_eq!(cost(&u, &price), expected);
        price.cached_input_per_mtok = None;
        price.cache_write_per_mtok = None;
        let expected =
            100.0 * 4.0 / 1e6 + 4000.0 * 4.0 / 1e6 + 1000.0 * 4.0 / 1e6 + 10.0 * 16.0 / 1e6;
        assert_eq!(cost(&u, &price), expected);
        // Reads and writes beyond the prompt are never billed twice, never negative.
        let u = Usage {
            prompt_tokens: 10,
            completion_tokens: 0,
            cached_tokens: 6,
            cache_write_tokens: u64::MAX,
        };
        assert_eq!(u.billable_cache_write_tokens(), 4);
        assert_eq!(u.uncached_prompt_tokens(), 0);
        assert!(cost(&u, &price) >= 0.0);
        let e = table(&[(
            "a",
            Price {
                cache_write_per_mtok: Some(-1.0),
                ..p(1.0, 1.0)
            },
            &[],
        )])
        .unwrap_err();
        assert_eq!(
            e[0].1,
            PricingError::BadPrice {
                field: "cache_write_per_mtok"
            }
        );
    }
}
