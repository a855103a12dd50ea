//! The subject common name of an X.509 certificate, read from its DER: the name a KME knows a
//! caller (an SAE) or its peer KME by. Only the path to the subject is walked (RFC 5280 §4.1:
//! Certificate → TBSCertificate → subject Name → the first commonName attribute); the
//! certificate's signature and validity are the TLS verifier's business, done before this runs.

/// Why no common name could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The DER ends early, has a bad length or an unexpected tag.
    #[error("the certificate is not valid DER at byte {0}")]
    Malformed(usize),
    /// The subject has no commonName.
    #[error("the certificate's subject has no common name")]
    NoCommonName,
    /// The common name is not text.
    #[error("the certificate's common name is not UTF-8 text")]
    NotText,
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// String types a name may use: UTF8String, PrintableString, TeletexString, IA5String,
/// BMPString is not accepted (UTF-16).
const TEXT_TAGS: &[u8] = &[0x0c, 0x13, 0x14, 0x16];

/// A DER reader over a slice, remembering where it is for errors.
struct Der<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8], at: usize) -> Self {
        Der { bytes, at }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next element: its tag, its contents (as a reader) and the reader past it.
    fn next(&mut self) -> Result<(u8, Der<'a>), SubjectError> {
        let bad = SubjectError::Malformed(self.at);
        let (&tag, rest) = self.bytes.split_first().ok_or(bad.clone())?;
        let (&first, mut rest) = rest.split_first().ok_or(bad.clone())?;
        let mut header = 2;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return Err(bad);
            }
            let len = rest[..count]
                .iter()
                .fold(0usize, |len, &b| (len << 8) | usize::from(b));
            rest = &rest[count..];
            header += count;
            len
        };
        if rest.len() < len {
            return Err(bad);
        }
        let contents = Der::new(&rest[..len], self.at + header);
        self.bytes = &rest[len..];
        self.at += header + len;
        Ok((tag, contents))
    }

    /// The next element, which must have tag `tag`.
    fn expect(&mut self, tag: u8) -> Result<Der<'a>, SubjectError> {
        let at = self.at;
        match self.next()? {
            (t, contents) if t == tag => Ok(contents),
            _ => Err(SubjectError::Malformed(at)),
        }
    }
}

/// The first commonName in the subject of certificate `der`.
pub fn common_name(der: &[u8]) -> Result<String, SubjectError> {
    let mut certificate = Der::new(der, 0).expect(SEQUENCE)?;
    let mut tbs = certificate.expect(SEQUENCE)?;
    if tbs.bytes.first() == Some(&VERSION) {
        tbs.next()?;
    }
    // serialNumber, signature, issuer, validity, then the subject.
    for _ in 0..4 {
        tbs.next()?;
    }
    let mut subject = tbs.expect(SEQUENCE)?;
    while !subject.is_empty() {
        let mut names = subject.expect(SET)?;
        while !names.is_empty() {
            let mut attribute = names.expect(SEQUENCE)?;
            let oid = attribute.expect(OID)?;
            let at = attribute.at;
            let (tag, value) = attribute.next()?;
            if oid.bytes == COMMON_NAME {
                if !TEXT_TAGS.contains(&tag) {
                    return Err(SubjectError::Malformed(at));
                }
                return String::from_utf8(value.bytes.to_vec()).map_err(|_| SubjectError::NotText);
            }
        }
    }
    Err(SubjectError::NoCommonName)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn certificate(cn: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "qkd-node");
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_common_name_rcgen_wrote() {
        assert_eq!(common_name(&certificate(Some("sae-a"))).unwrap(), "sae-a");
        assert_eq!(
            common_name(&certificate(Some("KME ünïcode"))).unwrap(),
            "KME ünïcode"
        );
    }

    #[test]
    fn a_subject_without_a_common_name_is_named() {
        assert_eq!(
            common_name(&certificate(None)),
            Err(SubjectError::NoCommonName)
        );
    }

    #[test]
    fn every_truncation_is_malformed_not_a_panic() {
        let der = certificate(Some("bob"));
        for len in 0..der.len() {
            // The outer length promises more than a cut certificate holds.
            let e = common_name(&der[..len]).unwrap_err();
            assert!(matches!(e, SubjectError::Malformed(_)), "{len}: {e:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = common_name(&bytes);
        }

        #[test]
        fn flipped_bytes_never_panic(at in 0usize..400, value in any::<u8>()) {
            let mut der = certificate(Some("alice"));
            let at = at % der.len();
            der[at] = value;
            let _ = common_name(&der);
        }
    }
}
