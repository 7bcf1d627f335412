//! What a certificate says about its own validity period (RFC 5280
//! 4.1.2.5), read from its DER with just enough of a parser to reach it, so
//! that loading an expired certificate, or one about to expire, is logged
//! instead of being found out by the first client that checks.

use crate::smtp::trace::UnixTime;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// certbot renews 30 days ahead, so a certificate this close to its end
/// is one whose renewal is failing.
const SOON: Duration = Duration::from_secs(14 * 86_400);

/// `notBefore` and `notAfter`, in seconds since the epoch.
#[derive(Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// What to warn about a certificate valid for `v`, at `now`.
pub fn warning(v: &Validity, now: SystemTime) -> Option<String> {
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(_) => return None,
    };
    let date = |secs| crate::smtp::trace::rfc5322_date(UnixTime::from_secs(secs));
    // Both ends are inside the period (RFC 5280 4.1.2.5).
    if now > v.not_after {
        Some(format!(
            "the certificate expired on {}; clients that check it will refuse it",
            date(v.not_after)
        ))
    } else if now < v.not_before {
        Some(format!(
            "the certificate is not valid until {}; clients that check it will refuse it",
            date(v.not_before)
        ))
    } else if v.not_after - now < SOON.as_secs() as i64 {
        Some(format!(
            "the certificate expires on {}, in {} days",
            date(v.not_after),
            (v.not_after - now) / 86_400
        ))
    } else {
        None
    }
}

/// The validity period of a DER certificate; `None` if it cannot be read.
///
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version
/// OPTIONAL, serialNumber, signature, issuer, validity SEQUENCE {
/// notBefore, notAfter }, ... }, ... }
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = element(rest)?.2;
    }
    let (_, rest) = expect(rest, INTEGER)?;
    let (_, rest) = expect(rest, SEQUENCE)?;
    let (_, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (tag, value, rest) = element(validity)?;
    let not_before = time(tag, value)?;
    let (tag, value, _) = element(rest)?;
    let not_after = time(tag, value)?;
    Some(Validity {
        not_before,
        not_after,
    })
}

const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;

/// The next element, which must have tag `tag`: its contents and what
/// follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, value, rest) = element(input)?;
    (t == tag).then_some((value, rest))
}

/// One DER element (single-byte tags, definite lengths of up to four
/// octets): its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (bytes, rest) = input.split_at(n);
        input = rest;
        bytes.iter().fold(0usize, |l, &b| (l << 8) | usize::from(b))
    };
    (input.len() >= len).then(|| (tag, &input[..len], &input[len..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950 to 2049) or GeneralizedTime
/// (`YYYYMMDDHHMMSSZ`), the only forms RFC 5280 allows, in seconds since
/// the epoch.
fn time(tag: u8, value: &[u8]) -> Option<i64> {
    let digits = match (tag, value.split_last()) {
        (UTC_TIME | GENERALIZED_TIME, Some((b'Z', digits))) => digits,
        _ => return None,
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |s: &[u8]| s.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = num(&digits[..2]);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (num(&digits[..4]), &digits[4..]),
        _ => return None,
    };
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|i| num(&rest[i..i + 2]));
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm, the inverse of the one in `smtp::trace`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn at(year: i64, month: i64, day: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs((days_from_civil(year, month, day) * 86_400) as u64)
    }

    #[test]
    fn dates_are_days_since_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 12, 1), 20_788);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(
            crate::smtp::trace::rfc5322_date(crate::clock::unix_time(at(2024, 2, 29))),
            "Thu, 29 Feb 2024 00:00:00 +0000"
        );
    }

    #[test]
    fn both_time_forms_are_read_from_a_real_certificate() {
        // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280).
        let v = validity(&cert((2020, 1, 2), (2060, 3, 4))).unwrap();
        assert_eq!(v.not_before, days_from_civil(2020, 1, 2) * 86_400);
        assert_eq!(v.not_after, days_from_civil(2060, 3, 4) * 86_400);
        let v = validity(&cert((1999, 12, 31), (2049, 12, 31))).unwrap();
        assert_eq!(v.not_before, days_from_civil(1999, 12, 31) * 86_400);
        assert_eq!(v.not_after, days_from_civil(2049, 12, 31) * 86_400);
    }

    #[test]
    fn expired_future_and_expiring_certificates_are_warned_about() {
        let v = validity(&cert((2020, 1, 1), (2026, 12, 10))).unwrap();
        let w = warning(&v, at(2026, 12, 1)).unwrap();
        assert!(
            w.contains("expires on Thu, 10 Dec 2026") && w.contains("in 9 days"),
            "{w}"
        );
        assert_eq!(warning(&v, at(2026, 11, 1)), None);
        let w = warning(&v, at(2026, 12, 10)).unwrap();
        assert!(
            w.contains("expires on Thu, 10 Dec 2026") && w.contains("in 0 days"),
            "{w}"
        );
        let w = warning(&v, at(2026, 12, 10) + Duration::from_secs(1)).unwrap();
        assert!(w.contains("expired on Thu, 10 Dec 2026"), "{w}");
        let w = warning(&v, at(2019, 6, 1)).unwrap();
        assert!(w.contains("not valid until Wed, 1 Jan 2020"), "{w}");
        // UTCTime 50 to 69 is before the epoch.
        let old = validity(&cert((1950, 1, 1), (1969, 7, 20))).unwrap();
        assert_eq!(old.not_after, days_from_civil(1969, 7, 20) * 86_400);
        let w = warning(&old, at(2026, 12, 1)).unwrap();
        assert!(w.contains("expired on Sun, 20 Jul 1969"), "{w}");
    }

    #[test]
    fn what_is_not_a_certificate_has_no_validity() {
        let good = cert((2020, 1, 1), (2030, 1, 1));
        for bad in [
            &b""[..],
            &b"\x30"[..],
            &b"\x30\x85\x00\x00\x00\x00\x01"[..],
            &good[..good.len() / 3],
            &b"\x30\x03\x02\x01\x00"[..],
        ] {
            assert_eq!(validity(bad), None, "{bad:?}");
        }
        assert_eq!(time(UTC_TIME, b"261301000000Z"), None, "month 13");
        assert_eq!(time(UTC_TIME, b"2612010000Z"), None, "no seconds");
        assert_eq!(time(GENERALIZED_TIME, b"20261201000000+0100"), None);
        assert_eq!(time(INTEGER, b"261201000000Z"), None);
    }
}
