//! Just enough DNS (RFC 1035) for dns-01: a TXT query, and the TXT strings of
//! the answer. Responses are untrusted input (any resolver, spoofable over
//! UDP): every length is bounds-checked, compression pointers may only point
//! backwards, and an answer whose id or question differs is refused.

/// Largest response read (EDNS-less UDP is 512 bytes; TCP fallback is not done).
pub const MAX_RESPONSE: usize = 4096;

/// A message id from the CSPRNG: an off-path attacker cannot guess it to spoof an answer.
pub fn random_id() -> u16 {
    let mut b = [0u8; 2];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u16::from_be_bytes(b)
}

/// The TXT query for `name` with message id `id`.
pub fn txt_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    if q.len() > 12 + 255 + 1 {
        return Err(format!("{name:?} is longer than a DNS name may be"));
    }
    q.extend_from_slice(&[0, 16, 0, 1]); // TXT, IN
    Ok(q)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or("the answer is truncated")?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a (possibly compressed) name, lowercased, without the trailing dot.
    fn name(&mut self) -> Result<String, String> {
        let mut labels: Vec<String> = Vec::new();
        let mut at = self.at;
        let mut jumped = false;
        for _ in 0..128 {
            let len = *self.bytes.get(at).ok_or("the answer is truncated")? as usize;
            match len {
                0 => {
                    if !jumped {
                        self.at = at + 1;
                    }
                    return Ok(labels.join("."));
                }
                l if l & 0xc0 == 0xc0 => {
                    let low = *self.bytes.get(at + 1).ok_or("the answer is truncated")? as usize;
                    let target = ((l & 0x3f) << 8) | low;
                    if target >= at {
                        return Err("a name points forwards".into());
                    }
                    if !jumped {
                        self.at = at + 2;
                    }
                    jumped = true;
                    at = target;
                }
                l if l <= 63 => {
                    let label = self.bytes.get(at + 1..at + 1 + l).ok_or("the answer is truncated")?;
                    labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                    at += 1 + l;
                }
                _ => return Err("a label has a reserved length type".into()),
            }
        }
        Err("a name has too many labels".into())
    }
}

/// The TXT strings answered for `name` in a response to query `id`, each
/// record's strings joined. Errors say what was wrong with the answer.
pub fn txt_answers(id: u16, name: &str, response: &[u8]) -> Result<Vec<String>, String> {
    if response.len() > MAX_RESPONSE {
        return Err("the answer is too large".into());
    }
    let mut r = Reader { bytes: response, at: 0 };
    if r.u16()? != id {
        return Err("the answer is for another query".into());
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err("the message is not an answer".into());
    }
    if flags & 0x0200 != 0 {
        return Err("the answer was truncated (TCP is not tried)".into());
    }
    match flags & 0x000f {
        0 => {}
        3 => return Ok(Vec::new()),
        rcode => return Err(format!("the resolver answered rcode {rcode}")),
    }
    let (questions, answers) = (r.u16()?, r.u16()?);
    r.take(4)?;
    let wanted = name.trim_end_matches('.').to_ascii_lowercase();
    for _ in 0..questions {
        if r.name()? != wanted {
            return Err("the answer is for another name".into());
        }
        r.take(4)?;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        let owner = r.name()?;
        let (kind, _class) = (r.u16()?, r.u16()?);
        r.take(4)?;
        let len = r.u16()? as usize;
        let data = r.take(len)?;
        if kind != 16 || owner != wanted {
            continue;
        }
        let mut text = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let l = data[at] as usize;
            let s = data.get(at + 1..at + 1 + l).ok_or("a TXT string overruns its record")?;
            text.extend_from_slice(s);
            at += 1 + l;
        }
        out.push(String::from_utf8_lossy(&text).into_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer as a resolver writes it: the question, then TXT records named by a pointer to it.
    fn answer(id: u16, name: &str, records: &[&[&str]]) -> Vec<u8> {
        let q = txt_query(id, name).expect("query");
        let mut a = q.clone();
        a[2] = 0x81;
        a[3] = 0x80;
        a[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
        for strings in records {
            a.extend_from_slice(&[0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60]);
            let data: Vec<u8> = strings.iter().flat_map(|s| [&[s.len() as u8][..], s.as_bytes()].concat()).collect();
            a.extend_from_slice(&(data.len() as u16).to_be_bytes());
            a.extend_from_slice(&data);
        }
        a
    }

    #[test]
    fn txt_answers_are_read_and_joined() {
        let a = answer(7, "_acme-challenge.www.acme.example", &[&["abc", "def"], &["xyz"]]);
        assert_eq!(txt_answers(7, "_acme-challenge.www.acme.example.", &a).expect("txt"), vec!["abcdef", "xyz"]);
        assert!(txt_answers(8, "_acme-challenge.www.acme.example", &a).is_err(), "another id");
        assert!(txt_answers(7, "_acme-challenge.other.example", &a).is_err(), "another name");
        for cut in 0..a.len() {
            let _ = txt_answers(7, "_acme-challenge.www.acme.example", &a[..cut]);
        }
        let mut forward = a.clone();
        let first_answer = txt_query(7, "_acme-challenge.www.acme.example").expect("q").len();
        forward[first_answer + 1] = 0xff;
        assert!(txt_answers(7, "_acme-challenge.www.acme.example", &forward).is_err(), "a forward pointer");
        assert!(txt_query(1, "a..b").is_err());
    }
}
