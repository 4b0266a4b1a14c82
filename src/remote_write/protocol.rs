//! Which remote-write message an endpoint is sent, and what a 2.0 receiver's answer says about
//! how much of a request it wrote (pure).
//!
//! Remote write 2.0 receivers report, in `X-Prometheus-Remote-Write-Samples-Written` (and
//! `-Histograms-Written`, `-Exemplars-Written`), how many of each they wrote. [`judge`] turns
//! a status and those headers into a [`Verdict`]:
//! - **415**, or **2xx without any `-Written` header** (what a 1.0 receiver that ignores the
//!   `Content-Type` answers after decoding a 2.0 body as an empty 1.0 request): the receiver
//!   does not take 2.0; the same samples go again as 1.0 ([`Verdict::Fallback`]).
//! - **2xx, everything written**: delivered.
//! - **Fewer written than sent** (2xx or 400): a partial write. What was written stays
//!   written: the request is never sent again whole, nor split (either would send some
//!   samples twice); the rest is counted as refused.
//! - **A header that is not a number, or more than was sent**: the receiver's count cannot be
//!   trusted, so it is treated as unknown. On a 2xx the status says everything was written
//!   (a 2.0 receiver must not answer 2xx otherwise), so nothing is sent again; on a 400 some
//!   samples may have been written, so nothing is split or sent again either: the samples
//!   are counted as refused. Either way no sample the receiver kept is sent twice.
//! - Anything else (5xx, 429, other 4xx, no answer) is judged as for 1.0 by
//!   [`super::retry`], and a 400 with nothing written is narrowed down by [`super::split`].

use http::header::HeaderMap;

use super::retry::Outcome;

/// `protobuf_message` value of remote write 1.0 (the default).
pub const MESSAGE_V1: &str = "prometheus.WriteRequest";
/// `protobuf_message` value of remote write 2.0.
pub const MESSAGE_V2: &str = "io.prometheus.write.v2.Request";
/// `Content-Type` of a 2.0 request.
pub const CONTENT_TYPE_V2: &str = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
/// `X-Prometheus-Remote-Write-Version` of a 2.0 request.
pub const REMOTE_WRITE_VERSION_V2: &str = "2.0.0";
/// Response header: samples the receiver wrote.
pub const SAMPLES_WRITTEN: &str = "x-prometheus-remote-write-samples-written";
/// Response header: native histogram samples the receiver wrote.
pub const HISTOGRAMS_WRITTEN: &str = "x-prometheus-remote-write-histograms-written";
/// Response header: exemplars the receiver wrote.
pub const EXEMPLARS_WRITTEN: &str = "x-prometheus-remote-write-exemplars-written";

/// The protobuf message an endpoint is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// Remote write 1.0, `prometheus.WriteRequest`.
    #[default]
    V1,
    /// Remote write 2.0, `io.prometheus.write.v2.Request`.
    V2,
}

impl Protocol {
    /// Parses a `protobuf_message` value.
    pub fn from_message(message: &str) -> Option<Self> {
        match message {
            MESSAGE_V1 => Some(Protocol::V1),
            MESSAGE_V2 => Some(Protocol::V2),
            _ => None,
        }
    }

    /// The fully qualified message name (the `message` label of the protocol self-metric).
    pub fn message(self) -> &'static str {
        match self {
            Protocol::V1 => MESSAGE_V1,
            Protocol::V2 => MESSAGE_V2,
        }
    }
}

/// One `-Written` header as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    /// A number.
    Number(u64),
    /// Something else; kept (cut short, made printable) for the log line.
    Invalid(String),
}

/// The `-Written` headers of an answer; `None` where a header was absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// `X-Prometheus-Remote-Write-Samples-Written`.
    pub samples: Option<Count>,
    /// `X-Prometheus-Remote-Write-Histograms-Written`.
    pub histograms: Option<Count>,
    /// `X-Prometheus-Remote-Write-Exemplars-Written`.
    pub exemplars: Option<Count>,
}

impl Written {
    /// Reads the three headers from a response.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let read = |name: &str| {
            headers.get(name).map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                let text = text.trim();
                match text.parse::<u64>() {
                    Ok(n) => Count::Number(n),
                    Err(_) => Count::Invalid(
                        text.chars()
                            .take(64)
                            .map(|c| if c.is_control() { ' ' } else { c })
                            .collect(),
                    ),
                }
            })
        };
        Written {
            samples: read(SAMPLES_WRITTEN),
            histograms: read(HISTOGRAMS_WRITTEN),
            exemplars: read(EXEMPLARS_WRITTEN),
        }
    }

    /// Tells whether any of the three headers was present.
    pub fn any(&self) -> bool {
        self.samples.is_some() || self.histograms.is_some() || self.exemplars.is_some()
    }
}

/// What a request carried, to compare with what the receiver says it wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Float samples.
    pub samples: u64,
    /// Native histogram samples.
    pub histograms: u64,
    /// Exemplars.
    pub exemplars: u64,
}

/// Why a `-Written` header could not be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCount {
    /// The header's name.
    pub header: &'static str,
    /// What it said.
    pub value: String,
    /// The number sent of what it counts.
    pub sent: u64,
}

impl BadCount {
    /// Value of the `reason` label of the invalid-answers counter.
    pub fn reason(&self) -> &'static str {
        if self.value.parse::<u64>().is_ok() {
            "written_exceeds_sent"
        } else {
            "written_not_a_number"
        }
    }
}

/// What a 2.0 answer means for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver does not take 2.0: send the same samples as 1.0, from now on.
    Fallback,
    /// Everything was written (2xx, counts agree or cannot be trusted; see `bad`).
    Written {
        /// A header that could not be trusted, if any.
        bad: Option<BadCount>,
    },
    /// Some samples were written and some not: never send the request again, whole or split.
    Partial {
        /// Samples (and histograms) not written.
        unwritten: u64,
        /// A header that could not be trusted, if any: then every sample counts as unwritten
        /// (the receiver may have kept some, so none is sent again).
        bad: Option<BadCount>,
    },
    /// Judge as for 1.0 (retry, split, or refuse): nothing was written.
    AsV1,
}

/// Judges a 2.0 request's answer against what it carried.
pub fn judge(outcome: Outcome, written: &Written, sent: Sent) -> Verdict {
    let status = match outcome {
        Outcome::Status(s) => s,
        Outcome::Transport | Outcome::Credentials => return Verdict::AsV1,
    };
    let success = (200..300).contains(&status);
    if status == 415 || (success && !written.any()) {
        return Verdict::Fallback;
    }
    if !success && status != 400 {
        // 5xx and 429 are retried whole (a receiver asking for that must be idempotent);
        // other refusals are about the request, not its samples.
        return Verdict::AsV1;
    }
    // A missing header means none of that kind was written, once any header is present.
    let checks = [
        (SAMPLES_WRITTEN, &written.samples, sent.samples),
        (HISTOGRAMS_WRITTEN, &written.histograms, sent.histograms),
        (EXEMPLARS_WRITTEN, &written.exemplars, sent.exemplars),
    ];
    let mut bad = None;
    let mut unwritten = 0u64;
    let mut any_written = false;
    for (i, (header, count, sent_n)) in checks.into_iter().enumerate() {
        match count {
            Some(Count::Number(n)) if *n <= sent_n => {
                any_written |= *n > 0;
                // Exemplars ride on samples: one not written loses no sample.
                if i < 2 {
                    unwritten += sent_n - n;
                }
            }
            Some(Count::Number(n)) => {
                bad.get_or_insert(BadCount {
                    header,
                    value: n.to_string(),
                    sent: sent_n,
                });
            }
            Some(Count::Invalid(text)) => {
                bad.get_or_insert(BadCount {
                    header,
                    value: text.clone(),
                    sent: sent_n,
                });
            }
            None if i < 2 => unwritten += sent_n,
            None => {}
        }
    }
    match (success, bad) {
        // The status says everything was written; a bogus count does not change that.
        (true, bad @ Some(_)) => Verdict::Written { bad },
        (true, None) if unwritten == 0 => Verdict::Written { bad: None },
        (true, None) => Verdict::Partial {
            unwritten,
            bad: None,
        },
        // A 400 whose count cannot be read may have written some samples: none is sent again.
        (false, bad @ Some(_)) => Verdict::Partial {
            unwritten: sent.samples + sent.histograms,
            bad,
        },
        (false, None) if any_written => Verdict::Partial {
            unwritten,
            bad: None,
        },
        // Nothing written: split or refuse as for 1.0.
        (false, None) => Verdict::AsV1,
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    fn written(samples: Option<&str>, histograms: Option<&str>) -> Written {
        let mut h = HeaderMap::new();
        if let Some(v) = samples {
            h.insert(SAMPLES_WRITTEN, HeaderValue::from_str(v).unwrap());
        }
        if let Some(v) = histograms {
            h.insert(HISTOGRAMS_WRITTEN, HeaderValue::from_str(v).unwrap());
        }
        Written::from_headers(&h)
    }

    const TEN: Sent = Sent {
        samples: 10,
        histograms: 0,
        exemplars: 0,
    };

    #[test]
    fn protobuf_message_values_parse() {
        assert_eq!(
            Protocol::from_message("prometheus.WriteRequest"),
            Some(Protocol::V1)
        );
        assert_eq!(
            Protocol::from_message("io.prometheus.write.v2.Request"),
            Some(Protocol::V2)
        );
        assert_eq!(Protocol::from_message("v2"), None);
        assert_eq!(Protocol::V2.message(), MESSAGE_V2);
    }

    #[test]
    fn unsupported_media_type_or_silent_success_falls_back() {
        let none = Written::default();
        assert_eq!(judge(Outcome::Status(415), &none, TEN), Verdict::Fallback);
        assert_eq!(judge(Outcome::Status(204), &none, TEN), Verdict::Fallback);
        assert_eq!(judge(Outcome::Status(200), &none, TEN), Verdict::Fallback);
        // A 415 carrying counts is still a refusal of the message.
        let w = written(Some("0"), None);
        assert_eq!(judge(Outcome::Status(415), &w, TEN), Verdict::Fallback);
    }

    #[test]
    fn full_writes_are_done() {
        let w = written(Some("10"), Some("0"));
        assert_eq!(
            judge(Outcome::Status(204), &w, TEN),
            Verdict::Written { bad: None }
        );
    }

    #[test]
    fn fewer_written_is_a_partial_write_on_success_and_on_400() {
        let w = written(Some("7"), None);
        let partial = Verdict::Partial {
            unwritten: 3,
            bad: None,
        };
        assert_eq!(judge(Outcome::Status(204), &w, TEN), partial);
        assert_eq!(judge(Outcome::Status(400), &w, TEN), partial);
        // Only a histogram header: no sample was written (2xx says otherwise: partial).
        let w = written(None, Some("0"));
        assert_eq!(
            judge(Outcome::Status(204), &w, TEN),
            Verdict::Partial {
                unwritten: 10,
                bad: None
            }
        );
    }

    #[test]
    fn histograms_written_is_compared_with_histograms_sent() {
        let sent = Sent {
            samples: 10,
            histograms: 4,
            exemplars: 0,
        };
        // Every float written, one histogram short: a partial write of one.
        let w = written(Some("10"), Some("3"));
        assert_eq!(
            judge(Outcome::Status(204), &w, sent),
            Verdict::Partial {
                unwritten: 1,
                bad: None
            }
        );
        // No histogram header while histograms were sent: none of them was written.
        let w = written(Some("10"), None);
        assert_eq!(
            judge(Outcome::Status(204), &w, sent),
            Verdict::Partial {
                unwritten: 4,
                bad: None
            }
        );
        let w = written(Some("10"), Some("4"));
        assert_eq!(
            judge(Outcome::Status(204), &w, sent),
            Verdict::Written { bad: None }
        );
        // More histograms than sent: the count is not trusted.
        let w = written(Some("10"), Some("5"));
        let Verdict::Written { bad: Some(bad) } = judge(Outcome::Status(204), &w, sent) else {
            panic!("written, with an untrusted count")
        };
        assert_eq!((bad.header, bad.sent), (HISTOGRAMS_WRITTEN, 4));
    }

    #[test]
    fn a_400_with_nothing_written_is_split_as_for_1_0() {
        assert_eq!(
            judge(Outcome::Status(400), &written(Some("0"), None), TEN),
            Verdict::AsV1
        );
        assert_eq!(
            judge(Outcome::Status(400), &Written::default(), TEN),
            Verdict::AsV1
        );
    }

    #[test]
    fn retryable_and_other_refusals_are_judged_as_for_1_0() {
        let w = written(Some("3"), None);
        for status in [500, 503, 429, 401, 413] {
            assert_eq!(judge(Outcome::Status(status), &w, TEN), Verdict::AsV1);
        }
        assert_eq!(judge(Outcome::Transport, &w, TEN), Verdict::AsV1);
    }

    #[test]
    fn bogus_counts_never_cause_a_resend() {
        for (value, reason) in [
            ("lots", "written_not_a_number"),
            ("-1", "written_not_a_number"),
            ("11", "written_exceeds_sent"),
            ("99999999999999999999999", "written_not_a_number"),
        ] {
            let w = written(Some(value), None);
            let Verdict::Written { bad: Some(bad) } = judge(Outcome::Status(200), &w, TEN) else {
                panic!("{value}: a 2xx writes everything");
            };
            assert_eq!(bad.reason(), reason, "{value}");
            assert_eq!(bad.header, SAMPLES_WRITTEN);
            let Verdict::Partial {
                unwritten,
                bad: Some(_),
            } = judge(Outcome::Status(400), &w, TEN)
            else {
                panic!("{value}: a 400 with an unreadable count is not split");
            };
            assert_eq!(unwritten, 10);
        }
        // Histograms reported where none were sent.
        let w = written(Some("10"), Some("2"));
        assert!(matches!(
            judge(Outcome::Status(204), &w, TEN),
            Verdict::Written { bad: Some(b) } if b.header == HISTOGRAMS_WRITTEN
        ));
    }

    #[test]
    fn header_values_are_kept_printable_and_short() {
        let mut h = HeaderMap::new();
        h.insert(
            SAMPLES_WRITTEN,
            HeaderValue::from_bytes(&[b'x'; 200]).unwrap(),
        );
        let Some(Count::Invalid(text)) = Written::from_headers(&h).samples else {
            panic!()
        };
        assert_eq!(text.len(), 64);
    }
}
